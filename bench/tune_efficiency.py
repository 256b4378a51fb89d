"""Benchmark: the tune job against the original approach, same trial budget, one run.

Both sides get the same budget and the same problem: N trials of at most E epochs (E defaults
to ``train.epochs`` of ``configs/local.yaml``), the search space ``configs/search_space.yaml``,
the same base config, ONE dataset prepared beforehand that both read, and the same objective
(``eval.objective``: ``val_ref_ntxent``, lower is better).

1. The original approach (the baseline): plain Optuna in one process,
   ``study.optimize(objective, n_trials=N, n_jobs=2)`` with a seeded ``TPESampler`` and no warm
   start (the original had none). Each trial samples the same distributions, trains its config
   to E epochs in that process (``monolith.training.train_on_prepared``: no early stopping, no
   pruning), and every epoch's objective is logged with its time.
2. This job: ``ray_jobs.tune`` in a child process on an embedded local Ray cluster (OptunaSearch
   TPE with the base config as trial 1, ASHA on per-epoch reports, each trial a 2-worker
   ``TensorflowTrainer``). Per-report times come from Tune's trial folders.
3. Windows/s under Ray Train with 1 and with 2 workers of 1 CPU (and 1 worker given both CPUs):
   the trainer's optimizer steps only, no evaluation, best of a few timed rounds after warm-up.

Figures: seconds from launch to the first report whose running best reaches the original
approach's final best (for the original approach: when it first reached that best); each side's
best objective; this job's per-trial overhead (trial wall minus epoch compute, see
``trial_overheads``). Targets on the 2-core reference machine: time-to-target <= 0.5x the
original approach's at an equal or better best objective; per-trial overhead (median) <= 15 s.

Each measurement runs in a child process in a session of its own, one after the other, so
whatever Ray started there is found by session id and ended afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as `python bench/tune_efficiency.py` from anywhere

BASE_CONFIG = ROOT / "configs" / "local.yaml"
SEARCH_SPACE = ROOT / "configs" / "search_space.yaml"
DEFAULT_JSON = ROOT / "runs" / "bench" / "tune_efficiency.json"
EXPERIMENT = "bench"
TARGET_TIME_RATIO = 0.5
TARGET_OVERHEAD_S = 15.0
# Tune stamps each result with whole seconds; a report lies in [timestamp, timestamp + 1).
TIMESTAMP_MIDPOINT = 0.5
_TRIAL_DIR = re.compile(r"^\w+?_([0-9a-f]{8})_(\d+)_")  # run_trial_<id>_<number>_<params>_<date>


# ---- child processes -------------------------------------------------------------------------


def child_tune(spec: dict[str, Any]) -> int:
    """This job, exactly as ``python -m ray_jobs.tune ARGV`` runs it (its own local cluster)."""
    from ray_jobs import tune

    return tune.main(spec["argv"])


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    """``trial.suggest_*`` for one of the search space's Optuna distributions."""
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, od.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def child_original(spec: dict[str, Any]) -> int:
    """The original approach: one process, ``study.optimize(n_jobs=J)``, every trial to E epochs.

    Each Optuna thread builds its own trainer and model. ``keras.utils.set_random_seed`` (called
    by every trainer) is process-global, so concurrent trials are not bit-reproducible: as in the
    original.
    """
    import threading

    import optuna

    from monolith.config import load_config
    from monolith.data.windows import WindowSource
    from monolith.search_space import load_search_space
    from monolith.training import train_on_prepared

    cfg = load_config(spec["config"])
    # Patience E never runs out within E epochs (the first epoch always improves).
    train = dataclasses.replace(cfg.train, early_stopping_patience=cfg.train.epochs)
    cfg = dataclasses.replace(cfg, train=train)
    space = load_search_space(spec["search_space"])
    metric, sign = cfg.eval.objective, 1.0 if cfg.eval.mode == "min" else -1.0
    source = WindowSource(spec["prepared"], sequence_length=cfg.data.sequence_length)
    lock = threading.Lock()
    reports: list[dict[str, Any]] = []
    trials: list[dict[str, Any]] = []

    class Recorder:
        def __init__(self, number: int):
            self.number = number
            self.last = time.perf_counter()

        def on_epoch_end(self, epoch: int, metrics: dict[str, float], trainer: Any) -> None:
            now = time.perf_counter()
            with lock:
                reports.append(
                    {
                        "time": time.time(),
                        "trial": self.number,
                        "epoch": epoch + 1,
                        "value": float(metrics[metric]),
                        # Epoch 1 counts from the trial's start, like the worker's report.
                        "epoch_seconds": now - self.last,
                    }
                )
            self.last = now

    def objective(trial: optuna.Trial) -> float:
        started = time.time()
        params = {name: _suggest(trial, name, d) for name, d in space.distributions.items()}
        recorder = Recorder(trial.number + 1)
        result = train_on_prepared(
            cfg.with_hyperparameters(params),
            spec["prepared"],
            callbacks=[recorder],
            evaluate_test=False,
            source=source,
        )
        values = [v for v in (row[metric] for row in result.rows) if math.isfinite(v)]
        best = min(values, key=lambda v: sign * v) if values else math.nan
        with lock:
            trials.append(
                {"trial": trial.number + 1, "start": started, "end": time.time(), "best": best}
            )
        return best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize" if sign > 0 else "maximize",
        sampler=optuna.samplers.TPESampler(seed=spec["seed"]),
    )
    study.optimize(objective, n_trials=spec["trials"], n_jobs=spec["jobs"])
    Path(spec["output"]).write_text(json.dumps({"reports": reports, "trials": trials}))
    return 0


def throughput_loop(config: dict[str, Any]) -> None:
    """Per Ray Train worker: time ``rounds`` x ``steps`` optimizer steps after ``warmup``."""
    import ray.train

    from ray_jobs.worker import _configure_threads

    _configure_threads()  # the tune worker's own TF thread policy (its CPU share)
    import tensorflow as tf

    from monolith.config import config_from_dict
    from monolith.contrastive.trainer import ContrastiveTrainer
    from monolith.data.windows import WindowSource
    from monolith.training import train_dataset_fn

    cfg = config_from_dict(config["base_config"], "throughput config")
    world = ray.train.get_context().get_world_size()
    strategy = (
        tf.distribute.MultiWorkerMirroredStrategy() if world > 1 else tf.distribute.get_strategy()
    )
    source = WindowSource(config["prepared"], sequence_length=cfg.data.sequence_length)
    trainer = ContrastiveTrainer(cfg.model, cfg.train, cfg.eval, source.spec, strategy=strategy)
    iterator = trainer.make_iterator(train_dataset_fn(source, cfg.train.batch_size, cfg.train.seed))
    started = time.perf_counter()
    trainer.train_steps(iterator, config["warmup"])  # tracing + first steps
    warmup_s = time.perf_counter() - started
    rounds = []
    for _ in range(config["rounds"]):
        started = time.perf_counter()
        steps = trainer.train_steps(iterator, config["steps"])  # syncs on every step's loss
        rounds.append(time.perf_counter() - started)
    # Steps are synchronous across workers, so rank 0's clock is the run's. (Train V2 keeps
    # only checkpointed metrics in its Result, so the figures go through a file.)
    if ray.train.get_context().get_world_rank() == 0:
        figures = {
            "world_size": world,
            "windows_per_step": steps[-1]["samples"],  # summed over workers: the global batch
            "steps": config["steps"],
            "best_round_s": min(rounds),
            "median_round_s": statistics.median(rounds),
            "warmup_s": warmup_s,
        }
        Path(config["output"]).write_text(json.dumps(figures))


def child_throughput(spec: dict[str, Any]) -> int:
    """Windows/s of the base config under Ray Train for each (workers, CPUs per worker)."""
    from monolith.config import load_config

    widest = max(w * c for w, c in spec["layouts"])
    from ray_jobs._ray import connect

    connect(local_cpus=max(os.cpu_count() or 1, math.ceil(widest)), log_to_driver=False)
    import ray.train
    from ray.train.tensorflow import TensorflowTrainer

    base = load_config(spec["config"]).to_dict()
    Path(spec["storage"]).mkdir(parents=True, exist_ok=True)
    out = []
    for workers, cpus in spec["layouts"]:
        output = Path(spec["storage"]) / f"throughput-{workers}x{cpus}.json"
        trainer = TensorflowTrainer(
            throughput_loop,
            train_loop_config={
                "base_config": base,
                "prepared": spec["prepared"],
                "warmup": spec["warmup"],
                "steps": spec["steps"],
                "rounds": spec["rounds"],
                "output": str(output),
            },
            scaling_config=ray.train.ScalingConfig(
                num_workers=workers, resources_per_worker={"CPU": float(cpus)}
            ),
            run_config=ray.train.RunConfig(
                name=f"throughput-{workers}x{cpus}", storage_path=spec["storage"]
            ),
        )
        trainer.fit()
        metrics = json.loads(output.read_text())
        metrics["windows_per_s"] = (
            metrics["windows_per_step"] * metrics["steps"] / metrics["best_round_s"]
        )
        out.append({"workers": workers, "cpus_per_worker": cpus, **metrics})
    Path(spec["output"]).write_text(json.dumps(out))
    return 0


CHILDREN = {"tune": child_tune, "original": child_original, "throughput": child_throughput}


# ---- running children ------------------------------------------------------------------------


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) != sid:
                continue
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            members.append(pid)
    return members


def end_session(sid: int) -> int:
    """End what is left of a child's session (Ray daemons and workers keep the child's session
    id, whatever process group they move to). Returns how many processes were left."""
    if not Path("/proc").is_dir():
        return 0
    left = _session_members(sid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _session_members(sid):
            with contextlib.suppress(OSError):  # already gone
                os.kill(pid, sig)
        deadline = time.time() + 10
        while _session_members(sid) and time.time() < deadline:
            time.sleep(0.5)
        if not _session_members(sid):
            break
    return len(left)


def spawn(mode: str, spec: dict[str, Any], work: Path, env: dict[str, str], timeout: float):
    """Run child ``mode`` to its end; returns launch / end times (time.time()) and its status."""
    spec_path = work / f"{mode}.spec.json"
    spec_path.write_text(json.dumps(spec))
    log = work / f"{mode}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(spec_path)]
    with open(log, "w") as out:
        launched = time.time()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            ended = time.time()
            leftover = end_session(proc.pid)
            proc.wait()
    return {
        "launched": launched,
        "ended": ended,
        "wall_s": ended - launched,
        "returncode": returncode,
        "leftover_processes": leftover,
        "log": str(log),
    }


def _check(run: dict[str, Any], what: str) -> None:
    if run["returncode"] == 0:
        return
    status = "timed out" if run["returncode"] is None else f"exited {run['returncode']}"
    tail = Path(run["log"]).read_text(errors="replace").splitlines()[-25:]
    raise SystemExit(f"{what} {status}; last lines of {run['log']}:\n" + "\n".join(tail))


# ---- figures ---------------------------------------------------------------------------------


def job_trials(tune_dir: Path, launched: float, metric: str) -> list[dict[str, Any]]:
    """This job's trials from Tune's folders: reports timed in seconds since launch."""
    trials = []
    for result_file in tune_dir.glob("*/result.json"):
        match = _TRIAL_DIR.match(result_file.parent.name)
        rows = [json.loads(ln) for ln in result_file.read_text().splitlines() if ln.strip()]
        if not match or not rows:
            continue
        reports = [
            {
                "time": row["timestamp"] + TIMESTAMP_MIDPOINT - launched,
                "epoch": int(row["epoch"]),
                "value": float(row[metric]),
                "epoch_seconds": float(row["epoch_seconds"]),
                "elapsed_seconds": float(row["elapsed_seconds"]),
                "time_total_s": float(row["time_total_s"]),
            }
            for row in rows
        ]
        first = reports[0]
        trials.append(
            {
                "trial": int(match.group(2)),
                "trial_id": match.group(1),
                # Trial start: when its trainable began (Tune's time_total_s counts from there).
                "start": first["time"] - first["time_total_s"],
                "reports": reports,
            }
        )
    return sorted(trials, key=lambda t: t["trial"])


def first_reaching(reports: list[dict[str, Any]], target: float, sign: float) -> float | None:
    """Time of the first report whose running best is at least as good as ``target``."""
    for report in sorted(reports, key=lambda r: r["time"]):
        if math.isfinite(report["value"]) and sign * report["value"] <= sign * target:
            return report["time"]
    return None


def best_value(reports: list[dict[str, Any]], sign: float) -> float:
    values = [r["value"] for r in reports if math.isfinite(r["value"])]
    return min(values, key=lambda v: sign * v) if values else math.nan


def _steady_epoch(reports: list[dict[str, Any]]) -> float | None:
    """Median seconds of epochs 2..n: optimizer steps + evaluation + report, nothing else."""
    later = [r["epoch_seconds"] for r in reports if r["epoch"] >= 2]
    return statistics.median(later) if later else None


def trial_overheads(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per trial of this job: the wall it adds minus its epoch compute, and where it goes.

    The cluster fits one trial's workers at a time (the next trial's driver and Train controller
    may start early and wait: pipelining), so the trials' compute follows one another. Taken in
    the order they finish, trial i's window runs from the previous trial's last report (for the
    first: its own start) to its own last report; its overhead is that window minus its epochs
    x its steady epoch (``_steady_epoch``), so epoch 1's excess over a steady epoch (tracing)
    counts as overhead; it is only known for trials of >= 2 epochs. Split:

    - ray_start_s: window start -> its Train workers enter the worker loop (the previous trial
      stopped and its workers released, this trial's driver, controller and worker actors
      started, imports, TF_CONFIG: what pipelining did not hide) = the worker's start, found
      from the first report's time minus the worker's ``elapsed_seconds`` at it;
    - worker_start_s: the rest (inside the worker before steady compute: TF import,
      MultiWorkerMirrored setup, data, model and evaluator build, tracing).

    ``overlapped`` marks a trial whose workers started before the previous one's last report
    (two trials computing at once), where this attribution does not hold.
    """
    out = []
    previous_end: float | None = None
    for trial in sorted(trials, key=lambda t: t["reports"][-1]["time"]):
        reports = trial["reports"]
        first, last = reports[0], reports[-1]
        loop_start = first["time"] - first["elapsed_seconds"]
        window_start = trial["start"] if previous_end is None else previous_end
        window_start = max(window_start, trial["start"])
        steady = _steady_epoch(reports)
        row: dict[str, Any] = {
            "trial": trial["trial"],
            "epochs": len(reports),
            "window_start_s": window_start,
            "wall_s": last["time"] - window_start,
            "ray_start_s": loop_start - window_start,
            "steady_epoch_s": steady,
            "overlapped": previous_end is not None and loop_start < previous_end,
        }
        if steady is not None:
            row["overhead_s"] = row["wall_s"] - len(reports) * steady
            row["worker_start_s"] = row["overhead_s"] - row["ray_start_s"]
        out.append(row)
        previous_end = last["time"]
    return sorted(out, key=lambda r: r["trial"])


def original_overheads(trials: list[dict], reports: list[dict]) -> list[dict[str, Any]]:
    """The same figure for the original approach: objective wall minus epochs x steady epoch."""
    out = []
    for trial in trials:
        mine = [r for r in reports if r["trial"] == trial["trial"]]
        steady = _steady_epoch(mine)
        if steady is not None:
            wall = trial["end"] - trial["start"]
            out.append({"trial": trial["trial"], "overhead_s": wall - len(mine) * steady})
    return out


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def _max(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return max(values) if values else None


# ---- the benchmark ---------------------------------------------------------------------------


def bench_config(args: argparse.Namespace, prepared: Path, path: Path) -> dict[str, Any]:
    """The base config both sides use: configs/local.yaml on the prepared dataset."""
    import yaml

    from monolith.config import load_config

    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["data"]["source"] = str(prepared)
    raw["train"]["epochs"] = args.epochs
    raw["tune"].update(search_space=str(SEARCH_SPACE), num_samples=args.trials, warm_start="base")
    if args.quick:
        raw["train"]["max_steps_per_epoch"] = 8
        raw["eval"]["probe_max_windows"] = 500
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_config(path)  # fail here, not in a child
    return raw


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from monolith.config import load_config
    from monolith.data.prepare import prepare_dataset
    from monolith.tuning import tune_settings

    base = load_config(BASE_CONFIG)
    args.epochs = args.epochs or (2 if args.quick else base.train.epochs)
    args.trials = args.trials or (2 if args.quick else tune_settings(base).num_samples)
    prepared = work / "prepared"
    started = time.perf_counter()
    prepare_dataset(base.data, prepared)
    print(f"dataset prepared once for both sides in {time.perf_counter() - started:.1f} s")
    config = work / "config.yaml"
    raw = bench_config(args, prepared, config)
    cfg = load_config(config)
    settings = tune_settings(cfg)
    metric, mode = cfg.eval.objective, cfg.eval.mode
    sign = 1.0 if mode == "min" else -1.0
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TRAIN_V2_ENABLED="1",
        RAY_TMPDIR=str(work),  # Ray's sessions and sockets in here, not in the shared /tmp/ray
    )
    timeout = args.timeout

    print(
        f"original approach: {args.trials} trials x {args.epochs} epochs, "
        f"study.optimize(n_jobs={args.original_jobs}) in one process ..."
    )
    spec = {
        "config": str(config),
        "search_space": str(SEARCH_SPACE),
        "prepared": str(prepared),
        "trials": args.trials,
        "jobs": args.original_jobs,
        "seed": settings.seed,
        "output": str(work / "original.json"),
    }
    original_run = spawn("original", spec, work, env, timeout)
    _check(original_run, "the original approach")
    original = json.loads(Path(spec["output"]).read_text())
    for report in original["reports"]:
        report["time"] -= original_run["launched"]
    for trial in original["trials"]:
        trial["start"] -= original_run["launched"]
        trial["end"] -= original_run["launched"]
    print(f"  done in {original_run['wall_s']:.1f} s")

    print(f"this job: python -m ray_jobs.tune, {args.trials} trials, ASHA max_t {args.epochs} ...")
    storage = work / "experiments"
    argv = ["--config", str(config), "--name", EXPERIMENT, "--storage", str(storage)]
    argv += ["--num-samples", str(args.trials)]
    job_run = spawn("tune", {"config": str(config), "argv": argv}, work, env, timeout)
    _check(job_run, "the tune job")
    trials = job_trials(storage / EXPERIMENT / "tune", job_run["launched"], metric)
    summary = json.loads((storage / EXPERIMENT / "results" / "summary.json").read_text())
    print(f"  done in {job_run['wall_s']:.1f} s")

    layouts = [(1, 1), (2, 1), (1, 2)]
    print(f"windows/s under Ray Train, (workers, CPUs each) {layouts} ...")
    spec = {
        "config": str(config),
        "prepared": str(prepared),
        "layouts": layouts,
        "warmup": args.warmup,
        "steps": args.steps,
        "rounds": args.rounds,
        "storage": str(work / "throughput"),
        "output": str(work / "throughput.json"),
    }
    throughput_run = spawn("throughput", spec, work, env, timeout)
    _check(throughput_run, "the windows/s measurement")
    throughput = json.loads(Path(spec["output"]).read_text())
    print(f"  done in {throughput_run['wall_s']:.1f} s")

    job_reports = [r for t in trials for r in t["reports"]]
    original_best = best_value(original["reports"], sign)
    job_best = best_value(job_reports, sign)
    overheads = trial_overheads(trials)
    original_over = original_overheads(original["trials"], original["reports"])
    return {
        "budget": {
            "trials": args.trials,
            "max_epochs": args.epochs,
            "max_steps_per_epoch": raw["train"].get("max_steps_per_epoch"),
            "search_space": str(SEARCH_SPACE.relative_to(ROOT)),
            "objective": metric,
            "mode": mode,
            "cpus": os.cpu_count(),
            "quick": args.quick,
        },
        "original": {
            "how": f"optuna study.optimize(n_jobs={args.original_jobs}), TPESampler(seed="
            f"{settings.seed}), no warm start, every trial to {args.epochs} epochs",
            "best": original_best,
            "time_to_target_s": first_reaching(original["reports"], original_best, sign),
            "wall_s": original_run["wall_s"],
            "epochs_trained": len(original["reports"]),
            "overhead_median_s": _median(original_over, "overhead_s"),
            "overhead_max_s": _max(original_over, "overhead_s"),
            "reports": original["reports"],
            "trials": original["trials"],
        },
        "job": {
            "how": f"ray_jobs.tune: OptunaSearch TPE (trial 1 = base config) + ASHA, "
            f"{settings.num_workers} workers x {settings.cpus_per_worker:g} CPU per trial, "
            f"{settings.max_concurrent_trials} trial(s) at a time",
            "best": job_best,
            "best_from_summary": summary.get("best_objective"),
            "time_to_target_s": first_reaching(job_reports, original_best, sign),
            "time_to_own_best_s": first_reaching(job_reports, job_best, sign),
            "wall_s": job_run["wall_s"],
            "first_trial_start_s": trials[0]["start"] if trials else None,
            "epochs_trained": len(job_reports),
            "stop_reasons": summary.get("stop_reasons"),
            "overhead_median_s": _median(overheads, "overhead_s"),
            "overhead_max_s": _max(overheads, "overhead_s"),
            "overhead_trials_measured": sum(1 for r in overheads if "overhead_s" in r),
            "ray_start_median_s": _median(overheads, "ray_start_s"),
            "worker_start_median_s": _median(overheads, "worker_start_s"),
            "overlapped_trials": sum(1 for r in overheads if r["overlapped"]),
            "overheads": overheads,
            "trials": trials,
        },
        "throughput": throughput,
        "runs": {"original": original_run, "job": job_run, "throughput": throughput_run},
    }


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def verdicts(r: dict[str, Any]) -> dict[str, bool]:
    job, original = r["job"], r["original"]
    sign = 1.0 if r["budget"]["mode"] == "min" else -1.0
    ttt, base_ttt = job["time_to_target_s"], original["time_to_target_s"]
    over = job["overhead_median_s"]
    return {
        "time_to_target": ttt is not None and ttt <= TARGET_TIME_RATIO * base_ttt,
        "best_objective": math.isfinite(job["best"])
        and sign * job["best"] <= sign * original["best"],
        "per_trial_overhead": over is not None and over <= TARGET_OVERHEAD_S,
    }


def report(r: dict[str, Any], ok: dict[str, bool]) -> None:
    b, job, orig = r["budget"], r["job"], r["original"]
    mark = {True: "met", False: "NOT met"}
    print(
        f"\ntune efficiency: {b['trials']} trials x <= {b['max_epochs']} epochs "
        f"({b['max_steps_per_epoch']} steps each), {b['search_space']}, objective "
        f"{b['objective']} ({b['mode']}), {b['cpus']} CPUs{', QUICK' if b['quick'] else ''}"
    )
    print(f"  original approach: {orig['how']}")
    print(f"  this job         : {job['how']}")
    print(
        "  time to target = seconds from launch to the first report reaching the original "
        f"approach's final best ({_fmt(orig['best'], '.4f')})"
    )
    print(f"\n  {'figure':<32}{'this job':>10}{'original':>10}{'ratio':>9}  {'target':<13}result")

    def row(name, mine, theirs, ratio="", target="", verdict=""):
        print(f"  {name:<32}{mine:>10}{theirs:>10}{ratio:>9}  {target:<13}{verdict}")

    ttt, base_ttt = job["time_to_target_s"], orig["time_to_target_s"]
    ratio = f"{ttt / base_ttt:.2f}x" if ttt is not None and base_ttt else "-"
    row(
        "time to target (s)",
        _fmt(ttt) if ttt is not None else "never",
        _fmt(base_ttt),
        ratio,
        f"<= {TARGET_TIME_RATIO:g}x",
        mark[ok["time_to_target"]],
    )
    delta = job["best"] - orig["best"]
    row(
        f"best {b['objective']}",
        _fmt(job["best"], ".4f"),
        _fmt(orig["best"], ".4f"),
        f"{delta:+.4f}",
        "<= original" if b["mode"] == "min" else ">= original",
        mark[ok["best_objective"]],
    )
    row("time to own best (s)", _fmt(job["time_to_own_best_s"]), _fmt(base_ttt))
    row(
        "total wall (s)",
        _fmt(job["wall_s"]),
        _fmt(orig["wall_s"]),
        f"{job['wall_s'] / orig['wall_s']:.2f}x",
    )
    row("epochs trained", str(job["epochs_trained"]), str(orig["epochs_trained"]))
    over, base_over = job["overhead_median_s"], orig["overhead_median_s"]
    row(
        "per-trial overhead, median (s)",
        _fmt(over),
        _fmt(base_over),
        f"{over / base_over:.1f}x" if over and base_over else "-",
        f"<= {TARGET_OVERHEAD_S:g} s",
        mark[ok["per_trial_overhead"]],
    )
    row("per-trial overhead, max (s)", _fmt(job["overhead_max_s"]), _fmt(orig["overhead_max_s"]))
    print(
        f"\n  overhead = the wall a trial adds (previous trial's last report -> its own) - "
        f"epochs x steady epoch (train + eval + report), over the "
        f"{job['overhead_trials_measured']} of {len(job['overheads'])} trials that ran >= 2 "
        f"epochs; medians of its parts: Ray start-up not hidden by pipelining (-> worker loop) "
        f"{_fmt(job['ray_start_median_s'])} s, worker start-up + tracing "
        f"{_fmt(job['worker_start_median_s'])} s; trials computing at once: "
        f"{job['overlapped_trials']}; Ray cluster start -> first trial "
        f"{_fmt(job['first_trial_start_s'])} s"
    )
    print(f"  stop reasons (this job): {job['stop_reasons']}; warm start: this job only")

    print("\n  windows/s under Ray Train (optimizer steps only, best round):")
    by_layout = {(t["workers"], t["cpus_per_worker"]): t for t in r["throughput"]}
    for (workers, cpus), t in by_layout.items():
        print(
            f"    {workers} worker(s) x {cpus} CPU: {t['windows_per_s']:8.1f} windows/s "
            f"(global batch {t['windows_per_step']:g}, {t['steps']} steps/round, "
            f"warm-up {t['warmup_s']:.1f} s)"
        )
    one, two = by_layout.get((1, 1)), by_layout.get((2, 1))
    if one and two:
        scaling = two["windows_per_s"] / one["windows_per_s"]
        print(f"    2 workers / 1 worker (1 CPU each) = {scaling:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, help="trials per side (default: tune.num_samples)")
    parser.add_argument("--epochs", type=int, help="max epochs per trial (default: train.epochs)")
    parser.add_argument("--quick", action="store_true", help="tiny budget: a smoke run")
    parser.add_argument("--original-jobs", type=int, default=2, help="the original's n_jobs")
    parser.add_argument("--steps", type=int, help="timed steps per windows/s round")
    parser.add_argument("--rounds", type=int, help="timed windows/s rounds (best one counts)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (tracing)")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds per child process")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where figures go")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, spec = args.child
        return CHILDREN[mode](json.loads(Path(spec).read_text()))
    sys.stdout.reconfigure(line_buffering=True)  # progress lines while children run
    args.steps = args.steps or (5 if args.quick else 20)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.warmup = args.warmup or (2 if args.quick else 5)

    # Short: Ray's unix socket paths under it must fit in 107 characters.
    work = Path(tempfile.mkdtemp(prefix="mtb-", dir="/tmp" if Path("/tmp").is_dir() else None))
    keep = args.keep
    try:
        r = run(args, work)
    except BaseException:
        keep = True
        print(f"scratch folder kept for inspection: {work}", file=sys.stderr)
        raise
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    ok = verdicts(r)
    r["verdicts"] = ok
    report(r, ok)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(r, indent=1, default=str))
    print(f"\n  figures -> {args.json}")
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
