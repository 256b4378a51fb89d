"""The search space file, its validation, and the tune job's checks before Ray starts."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import optuna.distributions as od
import pytest
import yaml

from monolith.config import TUNED_HYPERPARAMETERS, load_config
from monolith.errors import ConfigError
from monolith.search_space import check_against_config, load_search_space, parse_search_space

REPO = Path(__file__).resolve().parents[2]
SPACE = REPO / "configs" / "search_space.yaml"


def raw_space() -> dict:
    return yaml.safe_load(SPACE.read_text())


def test_search_space_reproduces_the_originals_13_parameters_exactly() -> None:
    space = load_search_space(SPACE)
    d = space.distributions
    assert set(TUNED_HYPERPARAMETERS) <= set(d)
    assert d["learning_rate"] == od.FloatDistribution(1e-5, 1e-2, log=True)
    assert d["dropout_rate"] == od.FloatDistribution(0.1, 0.5)
    assert d["l2_reg"] == od.FloatDistribution(1e-6, 1e-2, log=True)
    assert d["dense_units"] == od.IntDistribution(32, 128, step=32)
    assert d["lstm_units"] == od.IntDistribution(32, 128, step=32)
    assert d["transformer_blocks"] == od.IntDistribution(1, 3)
    assert d["transformer_heads"] == od.CategoricalDistribution([2, 4, 8])
    assert d["transformer_ff_dim_factor"] == od.IntDistribution(2, 4)
    assert d["batch_size"] == od.CategoricalDistribution([32, 64, 128])
    assert d["use_batch_norm"] == od.CategoricalDistribution([True, False])
    assert d["latent_dim"] == od.IntDistribution(16, 128, step=16)
    assert d["contrastive_temperature"] == od.FloatDistribution(0.05, 0.5, log=True)
    assert d["augmentation_type"] == od.CategoricalDistribution(
        ["jitter", "scaling", "time_masking"]
    )


def test_the_originals_best_config_lies_in_the_space_and_validates() -> None:
    space = load_search_space(SPACE)
    cfg = load_config(REPO / "configs" / "seed_best.yaml")
    point = space.check_point(cfg.hyperparameters(), "seed best")
    assert point["latent_dim"] == 80 and point["transformer_heads"] == 8
    check_against_config(space, cfg, num_workers=2)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.update(learning_rat={"type": "float", "low": 1, "high": 2}), "learning_rat"),
        (lambda s: s["dropout_rate"].update(low=0.6), "empty range"),
        (lambda s: s["dense_units"].update(step=40), "whole number of steps"),
        (lambda s: s["l2_reg"].update(low=0.0), "log = true needs low > 0"),
        (lambda s: s["transformer_heads"].update(choices=[]), "non-empty list"),
        (lambda s: s["latent_dim"].update(type="integer"), "type"),
        (lambda s: s["latent_dim"].update(stepp=16), "stepp"),
        (lambda s: s["dropout_rate"].update(low="a"), "expected a number"),
    ],
)
def test_bad_search_spaces_name_the_problem(edit, message: str) -> None:
    raw = copy.deepcopy(raw_space())
    edit(raw)
    with pytest.raises(ConfigError, match=message):
        parse_search_space(raw, "space.yaml")


@pytest.mark.parametrize(
    "edit, workers, message",
    [
        # 3 heads cannot divide a 32..128 (step 32) LSTM width the sampler may draw.
        (lambda s: s["transformer_heads"].update(choices=[2, 3]), 2, "transformer_heads = 3"),
        # A global batch of 32 does not split over 3 workers.
        (lambda s: None, 3, "does not split evenly"),
        # The config rejects a dropout rate of 1.0.
        (lambda s: s["dropout_rate"].update(high=1.0), 2, "dropout_rate"),
    ],
)
def test_combinations_the_model_cannot_build_are_rejected(edit, workers, message) -> None:
    raw = copy.deepcopy(raw_space())
    edit(raw)
    space = parse_search_space(raw, "space.yaml")
    cfg = load_config(REPO / "configs" / "local.yaml")
    with pytest.raises(ConfigError, match=message):
        check_against_config(space, cfg, num_workers=workers)


def test_warm_start_outside_the_space_is_named() -> None:
    raw = copy.deepcopy(raw_space())
    raw["latent_dim"].update(low=96)
    space = parse_search_space(raw, "space.yaml")
    cfg = load_config(REPO / "configs" / "seed_best.yaml")
    with pytest.raises(ConfigError, match="latent_dim = 80 lies outside"):
        space.check_point(cfg.hyperparameters(), "warm start")


def _tune(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ray_jobs.tune", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tune_help() -> None:
    done = _tune("--help")
    assert done.returncode == 0
    for flag in ("--config", "--name", "--num-samples", "--storage", "--resume"):
        assert flag in done.stdout


@pytest.mark.parametrize(
    "tune_edit, space_edit, message",
    [
        ({"num_workers": 0}, None, "tune.num_workers = 0"),
        ({"driver_cpus": 0}, None, "tune.driver_cpus"),
        ({"reduction_factor": 1}, None, "tune.reduction_factor"),
        ({"num_samplez": 3}, None, "tune.num_samplez"),
        ({"warm_start": "missing.json"}, None, "tune.warm_start"),
        ({}, {"transformer_heads": {"type": "categorical", "choices": [3]}}, "transformer_heads"),
        ({}, {"dense_units": {"type": "int", "low": 128, "high": 32}}, "empty range"),
    ],
)
def test_bad_tune_settings_fail_before_ray_starts(
    tmp_path: Path, tune_edit: dict, space_edit: dict | None, message: str
) -> None:
    cfg = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    cfg["tune"].update(tune_edit)
    space = raw_space()
    if space_edit:
        space.update(space_edit)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    cfg["tune"]["search_space"] = str(tmp_path / "space.yaml")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    storage = tmp_path / "exp"
    done = _tune("--config", str(tmp_path / "c.yaml"), "--storage", str(storage))
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], done.stderr[-2000:]
    # Nothing was started or written: no Ray session, no experiment folder.
    assert "Started a local Ray instance" not in done.stderr
    assert not storage.exists()


def test_bad_data_source_fails_before_ray_starts(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    cfg["data"]["source"] = str(tmp_path / "no-such-file.csv")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    done = _tune("--config", str(tmp_path / "c.yaml"), "--storage", str(tmp_path / "exp"))
    assert done.returncode == 2
    assert "no-such-file.csv" in done.stderr
    assert "Started a local Ray instance" not in done.stderr


def test_resume_without_an_experiment_and_rerun_without_resume(tmp_path: Path) -> None:
    storage = tmp_path / "exp"
    done = _tune("--config", "configs/local.yaml", "--storage", str(storage), "--resume")
    assert done.returncode == 2 and "no experiment to resume" in done.stderr
    (storage / "monolith-tune" / "tune").mkdir(parents=True)
    done = _tune("--config", "configs/local.yaml", "--storage", str(storage))
    assert done.returncode == 2 and "already exists" in done.stderr
