"""The experiment report: every section from synthetic results folders (single- and
multi-objective, and an old one with only trials.csv, summary.json and optuna.db), no external
references, the CLI's one-line errors, and a headless browser that renders every plot."""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import sys
import uuid
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from monolith.cli import main
from monolith.errors import DataError, MonolithError
from monolith.report import (
    SECTIONS,
    build_report,
    load_results,
    probe_targets,
)
from monolith.tuning import pareto_front

CHROMIUM = Path("/usr/bin/chromium")
PROBES = ("regime", "fwd_vol_h24")
# trial -> (epochs run, stop reason); trial 4 failed before reporting a value.
TRIALS = {
    1: (4, "completed (max epochs)"),
    2: (1, "stopped by ASHA"),
    3: (4, "completed (max epochs)"),
    4: (2, "error: worker died"),
    5: (2, "stopped by ASHA"),
    6: (4, "completed (max epochs)"),
}


def _params(n: int) -> dict:
    rng = np.random.default_rng(n)
    return {
        "learning_rate": float(10 ** rng.uniform(-5, -2)),
        "dense_units": int(rng.choice([32, 64, 96])),
        "augmentation_type": str(rng.choice(["jitter", "scaling"])),
        "use_batch_norm": bool(n % 2),
    }


def _epoch_metrics(n: int, epoch: int) -> dict:
    ntxent = 5.0 - 0.1 * n - 0.3 * epoch
    metrics = {"loss": 1.0 / epoch, "val_ref_ntxent": ntxent, "best_val_ref_ntxent": ntxent}
    lifts = []
    for i, probe in enumerate(PROBES):
        # Not in trial order, so that a multi-objective front holds more than one trial.
        score = 0.55 + 0.02 * ((3 * n) % 7) + 0.01 * epoch
        random, raw = 0.5 + 0.01 * i, 0.6 - 0.05 * i
        metrics |= {
            f"val_probe_{probe}": score,
            f"val_probe_{probe}_random": random,
            f"val_probe_{probe}_raw": raw,
            f"val_probe_{probe}_lift_vs_random": score - random,
            f"val_probe_{probe}_lift_vs_raw": score - raw,
            f"val_probe_{probe}_lift": score - max(random, raw),
        }
        lifts.append(score - max(random, raw))
    metrics["val_probe_mean_lift"] = float(np.mean(lifts))
    metrics["best_val_probe_mean_lift"] = metrics["val_probe_mean_lift"]
    return metrics


def _history(n: int) -> list[dict]:
    epochs, reason = TRIALS[n]
    if reason.startswith("error"):
        return []
    return [{"epoch": e, **_epoch_metrics(n, e)} for e in range(1, epochs + 1)]


def make_experiment(root: Path, kind: str, name: str = "exp-test") -> Path:
    """An experiment folder whose results/ looks like the tune job's: ``kind`` is "single",
    "multi" or "old" (trials.csv, summary.json and optuna.db only)."""
    objectives = [("val_ref_ntxent", "min")]
    if kind == "multi":
        objectives.append(("val_probe_mean_lift", "max"))
    experiment = root / name
    results = experiment / "results"
    results.mkdir(parents=True)

    rows, history_rows, values = [], [], {}
    for n, (epochs, reason) in TRIALS.items():
        history = _history(n)
        row = {"trial": n, "trial_id": f"id{n:06d}"}
        row |= {f"config/{k}": v for k, v in _params(n).items()}
        for metric in history[0] if history else []:
            if metric.startswith(("val_", "loss")):
                series = [h[metric] for h in history]
                row[f"last/{metric}"] = series[-1]
                row[f"best/{metric}"] = max(series) if "_probe_" in metric else min(series)
        values[n] = [
            (min if mode == "min" else max)(h[metric] for h in history) if history else math.nan
            for metric, mode in objectives
        ]
        row["objective"] = values[n][0]
        if kind != "old":
            for (metric, _), value in zip(objectives, values[n], strict=True):
                row[f"objective/{metric}"] = value
        row |= {
            "epochs_run": epochs if history else 0,
            "status": "ERROR" if reason.startswith("error") else "TERMINATED",
            "stop_reason": reason,
            "wall_seconds": 10.0 * n,
        }
        rows.append(row)
        history_rows += [{"trial": n, "trial_id": row["trial_id"], **h} for h in history]
    pd.DataFrame(rows).to_csv(results / "trials.csv", index=False)

    finished = {n: v for n, v in values.items() if all(math.isfinite(x) for x in v)}
    best = min(finished, key=lambda n: finished[n][0])
    summary = {
        "metric": "best_val_ref_ntxent",
        "mode": "min",
        "best_trial": best,
        "best_trial_id": f"id{best:06d}",
        "best_objective": finished[best][0],
        "trials": len(TRIALS),
        "stop_reasons": pd.Series([r for _, r in TRIALS.values()]).value_counts().to_dict(),
    }
    if kind != "old":
        summary |= {
            "objectives": [{"metric": m, "mode": d} for m, d in objectives],
            "ended_by": "time budget 600 s",
        }
        pd.DataFrame(history_rows).to_csv(results / "history.csv", index=False)
        (results / "lineage.json").write_text(
            json.dumps(
                {
                    "experiment": name,
                    "config": {"train": {"epochs": 4}},
                    "search_space": {"learning_rate": {"type": "loguniform"}},
                    "git_commit": "0123456789abcdef",
                    "data_fingerprint": "feedface" * 8,
                    "prepared": str(experiment / "prepared"),
                    "versions": {"python": "3.11", "optuna": optuna.__version__},
                    "started_at": "2026-12-01T23:39:35+00:00",
                    "finished_at": "2026-12-01T23:45:01+00:00",
                }
            )
        )
    if kind == "multi":
        front_trials = pareto_front(finished, [mode for _, mode in objectives])
        chosen = front_trials[-1]
        summary |= {"best_trial": chosen, "pareto_rule": "closest to the ideal point"}
        pd.DataFrame(
            [
                {
                    "trial": n,
                    "trial_id": f"id{n:06d}",
                    **{m: v for (m, _), v in zip(objectives, finished[n], strict=True)},
                    "chosen": n == chosen,
                    **{f"config/{k}": v for k, v in _params(n).items()},
                }
                for n in front_trials
            ]
        ).to_csv(results / "pareto.csv", index=False)
    (results / "summary.json").write_text(json.dumps(summary, indent=2))
    _write_study(results / "optuna.db", name, objectives, values)
    return experiment


def _write_study(path: Path, name: str, objectives: list, values: dict) -> None:
    distributions = {
        "learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
        "dense_units": optuna.distributions.IntDistribution(32, 96),
        "augmentation_type": optuna.distributions.CategoricalDistribution(["jitter", "scaling"]),
        "use_batch_norm": optuna.distributions.CategoricalDistribution([False, True]),
    }
    study = optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{path}",
        directions=["minimize" if mode == "min" else "maximize" for _, mode in objectives],
    )
    for n, vals in values.items():
        ok = all(math.isfinite(v) for v in vals)
        study.add_trial(
            optuna.trial.create_trial(
                params=_params(n),
                distributions=distributions,
                values=vals if ok else None,
                state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
                user_attrs={"trial_id": f"id{n:06d}"},
            )
        )


class _Page(HTMLParser):
    """The page's section ids and every URL a tag would load or link to."""

    def __init__(self) -> None:
        super().__init__()
        self.h2_ids: list[str] = []
        self.urls: list[str] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "h2" and "id" in attrs:
            self.h2_ids.append(attrs["id"])
        if tag == "script" and "src" not in attrs:
            self.inline_scripts += 1
        for key in ("src", "href", "data", "srcset", "action"):
            if attrs.get(key):
                self.urls.append(attrs[key])


def _parse(path: Path) -> tuple[_Page, str]:
    text = path.read_text()
    page = _Page()
    page.feed(text)
    return page, text


def _section(text: str, section_id: str) -> str:
    """The HTML of one section (from its <h2> to the next)."""
    start = text.index(f'<h2 id="{section_id}"')
    end = text.find("<h2 ", start + 1)
    return text[start : end if end > 0 else len(text)]


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("kind", ["single", "multi", "old"])
def test_every_section_and_nothing_external(tmp_path, kind):
    experiment = make_experiment(tmp_path, kind)
    out = build_report(experiment)
    assert out == experiment / "results" / "report.html"
    page, text = _parse(out)
    assert page.h2_ids == [sid for sid, _ in SECTIONS]
    # Self-contained: no tag loads or links anything over the network (anchors are fine).
    assert [u for u in page.urls if not u.startswith("#")] == []
    assert "cdn.plot.ly" not in text.split("</script>")[-1]
    assert "<title>Experiment report: exp-test</title>" in text
    assert "plotly.js v" in text  # the library itself, inlined once
    assert text.count("plotly.js v") == 1
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []
    # Every section has content besides its explanation.
    for sid, _ in SECTIONS:
        assert len(_section(text, sid)) > 200, sid


def test_single_objective_sections(tmp_path):
    out = build_report(make_experiment(tmp_path, "single"))
    text = out.read_text()
    summary = _section(text, "summary")
    assert "val_ref_ntxent (min)" in summary and "time budget 600 s" in summary
    assert "id000006" in summary  # best trial 6
    assert "single-objective experiment" in _section(text, "pareto")
    curves = _section(text, "learning-curves")
    assert "stopped by ASHA" in curves and "history.csv" in curves
    assert "not enough" not in _section(text, "importances")
    probes = _section(text, "probes")
    assert "fwd_vol_h24" in probes and "regime" in probes and "mean_lift" in probes
    lineage = _section(text, "lineage")
    assert "0123456789abcdef" in lineage and "feedface" in lineage and "optuna" in lineage


def test_multi_objective_pareto(tmp_path):
    experiment = make_experiment(tmp_path, "multi")
    exp = load_results(experiment)
    assert [o.metric for o in exp.objectives] == ["val_ref_ntxent", "val_probe_mean_lift"]
    assert exp.value_sources["val_probe_mean_lift"] == "trials.csv: objective/val_probe_mean_lift"
    chosen = int(
        pd.read_csv(experiment / "results" / "pareto.csv").query("chosen")["trial"].iloc[0]
    )
    assert exp.best_trial() == chosen
    assert len(pd.read_csv(experiment / "results" / "pareto.csv")) >= 2  # a real trade-off
    text = build_report(experiment).read_text()
    pareto = _section(text, "pareto")
    assert "closest to the ideal point" in pareto and f"chosen: trial {chosen}" in pareto
    assert "Pareto front" in pareto and "pareto.csv" in pareto
    # One history plot and one learning-curve plot per objective.
    assert _section(text, "history").count("plotly-graph-div") == 2
    assert "val_probe_mean_lift" in _section(text, "trials")


def test_old_results_degrade_with_notes(tmp_path):
    text = build_report(make_experiment(tmp_path, "old")).read_text()
    assert "no per-epoch history recorded" in _section(text, "learning-curves")
    assert "not recorded" in _section(text, "lineage")
    assert "not recorded" in _section(text, "summary")  # how it ended
    assert "plotly-graph-div" in _section(text, "history")
    assert "plotly-graph-div" in _section(text, "parallel-coordinates")


def test_history_falls_back_to_the_trials_result_json(tmp_path):
    experiment = make_experiment(tmp_path, "old")
    for n in TRIALS:
        folder = experiment / "tune" / f"run_trial_id{n:06d}_{n}_lr=0.001"
        folder.mkdir(parents=True)
        reports = [
            {**h, "trial_id": f"id{n:06d}", "training_iteration": h["epoch"]} for h in _history(n)
        ]
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in reports) + "{cut")
    exp = load_results(experiment)
    assert exp.history_source == "tune/*/result.json"
    assert sorted(exp.history["trial"].unique()) == [1, 2, 3, 5, 6]
    curves = _section(build_report(experiment).read_text(), "learning-curves")
    assert "tune/*/result.json" in curves and "stopped by ASHA" in curves
    # The raw per-epoch metric, not the running best the search ranks.
    assert "val_ref_ntxent per epoch" in curves and "best_val_ref_ntxent per epoch" not in curves


def test_importances_need_three_finished_trials(tmp_path):
    experiment = make_experiment(tmp_path, "single")
    db = experiment / "results" / "optuna.db"
    db.unlink()
    _write_study(db, "exp-test", [("val_ref_ntxent", "min")], {1: [4.0], 2: [3.0], 4: [math.nan]})
    text = build_report(experiment).read_text()
    assert "not enough finished trials: 2 complete" in _section(text, "importances")
    db.unlink()
    text = build_report(experiment).read_text()
    assert "no optuna.db" in _section(text, "importances")


def test_no_trial_yet(tmp_path):
    """A budget spent before the first trial: the tune job writes the headers only."""
    results = tmp_path / "exp" / "results"
    results.mkdir(parents=True)
    (results / "trials.csv").write_text("trial,trial_id,objective,epochs_run,stop_reason\n")
    (results / "history.csv").write_text("trial,trial_id,epoch\n")
    (results / "summary.json").write_text(json.dumps({"best_trial": None, "trials": 0}))
    page, text = _parse(build_report(tmp_path / "exp"))
    assert page.h2_ids == [sid for sid, _ in SECTIONS]
    assert "none (no trial reported a finite objective)" in _section(text, "summary")


def test_results_folder_itself_and_output_replaced(tmp_path):
    experiment = make_experiment(tmp_path, "single")
    out = tmp_path / "elsewhere" / "r.html"
    out.parent.mkdir()
    out.write_text("old")
    assert build_report(experiment / "results", out) == out
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.html"]


def test_missing_results_are_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such experiment"):
        build_report(tmp_path / "nope")
    (tmp_path / "exp" / "results").mkdir(parents=True)
    with pytest.raises(DataError, match=r"results/trials\.csv: missing"):
        build_report(tmp_path / "exp")
    (tmp_path / "exp" / "results" / "trials.csv").write_text("")
    with pytest.raises(MonolithError, match="not a readable CSV"):
        build_report(tmp_path / "exp")


@pytest.mark.integration
def test_report_of_an_s3_experiment(s3_env, tmp_path, monkeypatch):
    from monolith.storage import upload_directory

    experiment = make_experiment(tmp_path, "single")
    bucket = s3_env.make_bucket(f"monolith-report-{uuid.uuid4().hex[:8]}")
    uri = upload_directory(experiment, f"{bucket}/experiments/exp-test")
    out = build_report(uri, tmp_path / "from-s3.html")
    page, text = _parse(out)
    assert page.h2_ids == [sid for sid, _ in SECTIONS]
    assert "history.csv" in _section(text, "learning-curves")
    monkeypatch.chdir(tmp_path)
    assert build_report(f"{uri}/results") == Path("exp-test-report.html")
    with pytest.raises(DataError, match="no trials.csv"):
        build_report(f"{bucket}/experiments/nothing-here")


def test_probe_targets_are_found_by_their_baselines():
    columns = [
        f"best/val_probe_{t}{s}"
        for t in ("regime", "direction_h4", "fwd_vol")
        for s in ("", "_random", "_raw", "_lift", "_lift_vs_random", "_lift_vs_raw")
    ] + ["best/val_probe_mean_lift", "last/val_probe_orphan", "best/val_probe_orphan"]
    assert probe_targets(columns) == ["direction_h4", "fwd_vol", "regime"]


def test_cli_writes_the_report(tmp_path, capsys):
    experiment = make_experiment(tmp_path, "single")
    out = tmp_path / "report.html"
    assert main(["report", str(experiment), "--output", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out


@pytest.mark.parametrize("setup", ["missing", "no-trials"])
def test_cli_errors_are_one_line(tmp_path, setup):
    target = tmp_path / "exp"
    if setup == "no-trials":
        (target / "results").mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "monolith.cli", "report", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(target) in lines[0]
    assert "Traceback" not in done.stderr


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            # Parallel coordinates draw with WebGL: software rendering, explicitly allowed.
            "--enable-unsafe-swiftshader",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="chromium not installed: apt-get install chromium"
)
@pytest.mark.slow
def test_browser_renders_every_plot_without_errors(tmp_path):
    out = build_report(make_experiment(tmp_path, "multi"))
    url = out.resolve().as_uri()
    dom = _chromium("--dump-dom", url, profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = next(line for line in dom.stdout.splitlines() if "<body" in line)
    attrs = dict(part.split("=", 1) for part in body.split("<body", 1)[1].split(">", 1)[0].split())
    plots = int(attrs["data-plots"].strip('"'))
    assert plots >= 7  # history x2, curves x2, importances, parallel coordinates, Pareto, probes
    assert int(attrs["data-rendered"].strip('"')) == plots
    assert "data-errors" not in attrs, attrs
    assert "Uncaught" not in dom.stderr

    png = tmp_path / "report.png"
    shot = _chromium(
        f"--screenshot={png}", "--window-size=1400,3000", url, profile=tmp_path / "profile-png"
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert _png_size(png) == (1400, 3000)
    # A blank or error page compresses to a few kB; a page of plots and tables does not.
    assert png.stat().st_size > 100_000
    shutil.rmtree(tmp_path / "profile-dom", ignore_errors=True)
