"""Using an encoder: Encoder.embed reproduces what the final run computed, from the raw files
as published, from a prepared dataset and from a DataFrame; the drift check; bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_bundle import TINY as BUNDLE_TINY  # the same tiny model the bundle tests train

from monolith import Encoder
from monolith.config import SyntheticConfig, config_from_dict
from monolith.data.prepare import prepare_dataset
from monolith.data.synthetic import generate_synthetic
from monolith.errors import BundleError, DataError
from monolith.training import FINGERPRINT_FILE, train_on_prepared, write_final_bundle

MONOLITH = str(Path(sys.executable).with_name("monolith"))

TINY = {
    "data": {"sequence_length": 8, "label_horizon": 2},
    "model": BUNDLE_TINY["model"],
    "train": BUNDLE_TINY["train"],
    "eval": {**BUNDLE_TINY["eval"], "max_windows": 400},
}


def _bars(seed: int = 5) -> pd.DataFrame:
    raw = generate_synthetic(SyntheticConfig(symbols=2, rows_per_symbol=900, seed=seed))
    return raw.drop(columns=["true_regime"])


@pytest.fixture(scope="module")
def final(tmp_path_factory):
    """A final run's bundle, trained on CSV files as a desk would keep them."""
    root = tmp_path_factory.mktemp("encoder")
    bars = root / "bars"
    bars.mkdir()
    raw = _bars()
    for symbol, part in raw.groupby("symbol"):
        part.to_csv(bars / f"{symbol.replace('/', '')}.csv", index=False)
    cfg = config_from_dict({**TINY, "data": {**TINY["data"], "source": str(bars)}})
    prepared = root / "prepared"
    prepare_dataset(cfg.data, prepared)
    result = train_on_prepared(cfg, prepared, train_split="train+val")
    bundle = root / "bundle"
    write_final_bundle(result, cfg, prepared, bundle, cfg.hyperparameters())
    return {"root": root, "bars": bars, "raw": raw, "prepared": prepared, "bundle": bundle}


def _check_fingerprint(out: pd.DataFrame, bundle: Path) -> None:
    windows = json.loads((bundle / FINGERPRINT_FILE).read_text())["windows"]
    assert len(windows) > 50
    latent = [c for c in out.columns if c.startswith("latent_")]
    index = out.set_index(["symbol", "timestamp"])
    for w in windows:
        row = index.loc[(w["symbol"], pd.Timestamp(w["end"]))]
        np.testing.assert_allclose(row[latent].to_numpy(np.float64), w["latent"], atol=2e-5)


def test_embed_reproduces_the_final_runs_test_latents(final) -> None:
    enc = Encoder.load(final["bundle"])
    from_files = enc.embed(final["bars"])
    report = enc.last_report.to_dict()
    _check_fingerprint(from_files, final["bundle"])  # the raw files, as published
    from_prepared = enc.embed(final["prepared"])
    _check_fingerprint(from_prepared, final["bundle"])  # the prepared dataset
    from_frame = enc.embed(final["raw"])  # a DataFrame of bars
    pd.testing.assert_frame_equal(from_frame, from_files)
    assert list(from_files.columns[:2]) == ["timestamp", "symbol"]
    assert from_files.columns[-1] == "hmm_regime"
    assert len([c for c in from_files.columns if c.startswith("latent_")]) == 8
    # one row per window end; what could not end a window is counted, not dropped silently
    for symbol, counts in report["symbols"].items():
        assert counts["windows"] == (from_files["symbol"] == symbol).sum()
        assert counts["windows"] + counts["rows_without_window"] == counts["rows"]
        assert counts["rows_without_window"] >= 7  # the first L - 1 bars at least
    assert report["cleaning"]["warmup_rows_dropped"]
    # regimes come from the bundle's HMM, as in the prepared dataset
    prepared_rows = enc.embed(final["prepared"]).set_index(["symbol", "timestamp"])
    joined = from_files.set_index(["symbol", "timestamp"]).join(
        prepared_rows[["hmm_regime"]], rsuffix="_prepared", how="inner"
    )
    assert (joined["hmm_regime"] == joined["hmm_regime_prepared"]).mean() > 0.99


def test_drift_check_trips_on_shifted_data_not_on_the_original(final) -> None:
    enc = Encoder.load(final["bundle"])
    enc.embed(final["raw"])
    same = enc.drift()
    shifted = final["raw"].copy()
    # prices 40% higher and three times as volatile around their own path
    for idx in shifted.groupby("symbol").indices.values():
        close = shifted.loc[idx, "close"].to_numpy()
        wild = close[0] * np.exp(3 * np.log(close / close[0])) * 1.4
        factor = wild / close
        for col in ("open", "high", "low", "close"):
            shifted.loc[idx, col] = shifted.loc[idx, col].to_numpy() * factor
        shifted.loc[idx, "volume"] *= 5
    enc.embed(shifted)
    moved = enc.drift()
    assert same["drift_score"] < 0.25, same["worst_feature"]
    assert moved["drift_score"] > 0.25 and moved["drift_score"] > 3 * same["drift_score"]
    assert moved["outside_train_range"] > same["outside_train_range"]
    assert set(moved["features"]) == set(enc.metadata["features"]["technical"])


def test_unknown_instruments_are_an_error_or_skipped_on_request(final) -> None:
    enc = Encoder.load(final["bundle"])
    stranger = _bars(seed=9)
    stranger["symbol"] = stranger["symbol"].str.replace("SYN", "NEW")
    with pytest.raises(DataError, match=r"NEW0/USD.*not among"):
        enc.embed(pd.concat([final["raw"], stranger]))
    out = enc.embed(pd.concat([final["raw"], stranger]), unknown="skip")
    assert set(out["symbol"]) == {"SYN0/USD", "SYN1/USD"}
    assert enc.last_report.skipped_symbols == ["NEW0/USD", "NEW1/USD"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MONOLITH, "embed", *args], capture_output=True, text=True, cwd=cwd, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip


def _error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return lines[0]


def test_cli_writes_embeddings_and_report_and_refuses_bad_input(final, tmp_path) -> None:
    bundle, out = str(final["bundle"]), tmp_path / "emb.parquet"
    done = _cli(bundle, "--input", str(final["bars"]), "--output", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_parquet(out)
    _check_fingerprint(frame, final["bundle"])
    report = json.loads((tmp_path / "emb.parquet.drift.json").read_text())
    assert report["embed"]["windows"] == len(frame) and report["drift"]["drift_score"] < 0.25
    assert "drift: score" in done.stdout

    cases = tmp_path / "cases"
    cases.mkdir()
    stranger = _bars(seed=9).assign(symbol="NEWCOIN")
    stranger.to_csv(cases / "new.csv", index=False)
    one = final["raw"][final["raw"]["symbol"] == "SYN0/USD"]
    one.head(60).to_csv(cases / "warmup.csv", index=False)  # all of it indicator warm-up
    one.head(82).to_csv(cases / "short.csv", index=False)  # 77 warm-up + 5 bars < one window
    final["raw"].drop(columns=["close"]).to_csv(cases / "noclose.csv", index=False)
    tampered = tmp_path / "tampered"
    shutil.copytree(final["bundle"], tampered)
    (tampered / "scalers.json").write_text((tampered / "scalers.json").read_text() + " ")
    for source, bundle_dir, expected in (
        ("new.csv", bundle, "NEWCOIN"),
        ("warmup.csv", bundle, "fall in the indicator warm-up"),
        ("short.csv", bundle, "no window of 8"),
        ("noclose.csv", bundle, "close"),
        (str(final["bars"]), str(tampered), "failed verification"),
    ):
        target = cases / f"{Path(source).stem}.parquet"
        line = _error_line(
            _cli(bundle_dir, "--input", str(cases / source), "--output", str(target), cwd=cases)
        )
        assert expected in line, line
        assert not target.exists() and not Path(f"{target}.drift.json").exists()

    # --max-drift: the embeddings are still written, and the exit code tells a scheduler
    shifted = final["raw"].copy()
    shifted[["open", "high", "low", "close"]] *= 3.0
    shifted.to_csv(cases / "shifted.csv", index=False)
    target = cases / "shifted.parquet"
    line = _error_line(
        _cli(bundle, "--input", str(cases / "shifted.csv"), "--output", str(target),
             "--max-drift", "0.25", cwd=cases)
    )  # fmt: skip
    assert "exceeds --max-drift 0.25" in line
    assert target.exists() and json.loads(Path(f"{target}.drift.json").read_text())["drift"]


def test_a_bundle_that_fails_verification_does_not_load(final, tmp_path) -> None:
    tampered = tmp_path / "b"
    shutil.copytree(final["bundle"], tampered)
    (tampered / "contrastive_encoder_model.keras").write_bytes(b"not a model")
    with pytest.raises(BundleError, match="contrastive_encoder_model.keras"):
        Encoder.load(tampered)
    with pytest.raises(BundleError, match="no bundle"):
        Encoder.load(tmp_path / "nowhere")
