"""Training run -> bundle: safe reload, verification, tamper detection, atomic writes, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from monolith.bundle import (
    MANIFEST_FILE,
    MODEL_FILE,
    REQUIRED_FILES,
    load_bundle_model,
    verify_bundle,
    write_bundle,
)
from monolith.config import config_from_dict
from monolith.data.prepare import prepare_dataset
from monolith.errors import BundleError
from monolith.training import bundle_result, train_on_prepared

ROOT = Path(__file__).resolve().parents[2]
MONOLITH = Path(sys.executable).with_name("monolith")

TINY = {
    "data": {
        "source": "synthetic",
        "synthetic": {"symbols": 2, "rows_per_symbol": 700, "seed": 3},
        "sequence_length": 8,
        "label_horizon": 2,
    },
    "model": {
        "dense_units": 16,
        "lstm_units": 16,
        "transformer_blocks": 1,
        "transformer_heads": 2,
        "latent_dim": 8,
        "projection_dim": 8,
    },
    "train": {"batch_size": 32, "epochs": 2, "max_steps_per_epoch": 3, "seed": 1},
    "eval": {"reference_batch_size": 64, "probe_max_windows": 300},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    cfg = config_from_dict(TINY)
    prepared = root / "data"
    prepare_dataset(cfg.data, prepared)
    result = train_on_prepared(cfg, prepared)
    bundle = bundle_result(result, cfg, prepared, root / "bundle")
    return cfg, prepared, result, bundle


def _copy(bundle: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(bundle, dest)
    return dest


def test_bundle_holds_the_original_files_and_a_complete_manifest(run):
    cfg, _, result, bundle = run
    names = {p.name for p in bundle.iterdir()}
    assert (
        set(REQUIRED_FILES) | {MANIFEST_FILE, "test_metrics.json", "drift_reference.npz"} == names
    )
    manifest = verify_bundle(bundle)
    assert set(manifest["files"]) == names - {MANIFEST_FILE}
    assert manifest["versions"]["tensorflow"] and manifest["versions"]["keras"]
    assert manifest["config"]["hyperparameters"] == cfg.hyperparameters()
    assert manifest["metrics"]["val_ref_ntxent"] == result.metrics["val_ref_ntxent"]
    assert "test_probe_regime_lift" in manifest["metrics"]
    history = (bundle / "training_history.csv").read_text().splitlines()
    header = history[0].split(",")
    assert {"loss", "val_loss", "val_ref_ntxent", "val_probe_regime_lift"} <= set(header)
    assert len(history) == 1 + len(result.rows)


def test_model_reloads_safely_with_identical_outputs(run):
    _, _, result, bundle = run
    loaded = load_bundle_model(bundle)
    feats, _ = result.source.arrays("val", max_windows=64)
    inputs = {k: v for k, v in feats.items() if k in {t.name for t in loaded.inputs}}
    want = result.trainer.model(inputs, training=False)
    got = loaded(inputs, training=False)
    for key in ("latent", "projection", "reconstruction"):
        np.testing.assert_allclose(
            np.asarray(got[key]), np.asarray(want[key]), rtol=1e-6, atol=1e-6
        )


@pytest.mark.parametrize("tamper", ["flip_byte", "delete", "extra", "manifest"])
def test_tampering_is_detected(run, tmp_path, tamper):
    bundle = _copy(run[3], tmp_path / "b")
    if tamper == "flip_byte":
        path = bundle / MODEL_FILE
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        needle = f"{MODEL_FILE}: sha256"
    elif tamper == "delete":
        (bundle / "scalers.pkl").unlink()
        needle = "scalers.pkl: missing"
    elif tamper == "extra":
        (bundle / "evil.py").write_text("print('hi')")
        needle = "evil.py: present but not in manifest"
    else:
        (bundle / MANIFEST_FILE).unlink()
        needle = "not a complete bundle"
    with pytest.raises(BundleError, match=needle):
        verify_bundle(bundle)
    with pytest.raises(BundleError):
        load_bundle_model(bundle)


def test_a_crash_mid_write_leaves_no_half_bundle(run, tmp_path):
    _, prepared, result, _ = run

    class Exploding:
        def save(self, path):
            Path(path).write_bytes(b"partial")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_bundle(
            tmp_path / "out",
            model=Exploding(),
            model_config={},
            prepared_dir=prepared,
            history=[],
            metrics={},
        )
    assert list(tmp_path.iterdir()) == []


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [str(MONOLITH), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600
    )


def test_cli_synth_train_inspect_end_to_end(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    raw = json.loads(json.dumps(TINY))
    raw["train"]["epochs"] = 1
    raw["data"]["source"] = str(tmp_path / "synth.parquet")
    cfg_path.write_text(yaml.safe_dump(raw))
    out = _cli(
        "data",
        "synth",
        "--output",
        "synth.parquet",
        "--symbols",
        "2",
        "--rows",
        "700",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    out = _cli("train", "--config", str(cfg_path), "--output", "b", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "held-out test metrics" in out.stdout and "test_probe_regime_lift" in out.stdout
    out = _cli("inspect", "b", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "files verified" in out.stdout and "safe_mode=True" in out.stdout
    assert "probe lifts" in out.stdout
    (tmp_path / "b" / "training_history.csv").write_text("tampered\n")
    out = _cli("inspect", "b", cwd=tmp_path)
    assert out.returncode == 2
    assert "training_history.csv" in out.stderr and "failed verification" in out.stderr
    # an existing bundle is never replaced by accident
    out = _cli("train", "--config", str(cfg_path), "--output", "b", cwd=tmp_path)
    assert out.returncode == 2 and "already exists" in out.stderr


def test_cli_bad_config_is_one_clear_line(tmp_path):
    cfg_path = tmp_path / "bad.yaml"
    cfg_path.write_text(yaml.safe_dump({"model": {"transformer_heads": 3}}))
    out = _cli("train", "--config", str(cfg_path), cwd=tmp_path)
    assert out.returncode == 2
    assert "model.transformer_heads = 3 does not divide" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists(), "nothing is prepared before the config is valid"
