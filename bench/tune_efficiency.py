"""Benchmark: the tune job against the original approach, same trial budget, R runs each.

Both sides get the same budget and the same problem: N trials of at most E epochs (E defaults
to ``train.epochs`` of ``configs/local.yaml``), the search space ``configs/search_space.yaml``,
the same base config, ONE dataset prepared beforehand that both read, and the same objective
(``eval.objective``: ``val_ref_ntxent``, lower is better). Each side runs R >= 3 times with
seeds 0..R-1 (TPE and training seeds), one run at a time, nothing else on the machine.

1. The original approach (the baseline): plain Optuna in one process,
   ``study.optimize(objective, n_trials=N, n_jobs=2)`` with a seeded ``TPESampler`` and no warm
   start (the original had none); every trial trains to E epochs in that process
   (``monolith.training.train_on_prepared``: no early stopping, no pruning).
2. This job: ``ray_jobs.tune`` in a child process on an embedded local Ray cluster (OptunaSearch
   TPE with the base config as trial 1, ASHA on per-epoch reports, each trial a Ray Train run
   through ``ray_jobs.train_adapter``), in the base config's layout: ``tune.num_workers``
   workers per trial, ``tune.max_concurrent_trials`` trials at once (configs/local.yaml: two
   1-worker trials at once on 2 cores).
3. The floor: a Tune experiment of N trivial trials through the same adapter in the same
   layout (workers that report once, no model): what Ray itself costs per trial here. Then the
   same with workers that import TensorFlow before they report: what any TensorFlow trial
   pays on top of Ray (shown beside the floor; the targets stay against the floor).
4. Windows/s through the adapter with (workers x CPUs) 1x1, 2x1 and 1x2, launched in that order
   and then backward (a drifting machine speed moves each layout's mean alike): optimizer steps.

Figures (arithmetic in ``bench/figures.py``), medians and ranges over the R runs: best
objective; best objective within the baseline's median wall time; total wall; this job's
per-trial overhead (the wall a trial adds to its lane, i.e. to one of the concurrent trial
slots, minus epochs x its steady epoch) against the floor's, and against the floor with
TensorFlow imported.
Targets on the 2-core reference machine: per-trial overhead median <= 12 s and <= 1.5x the
floor; 2 workers x 1 CPU >= 0.95x 1 worker x 2 CPUs; within the baseline's median wall time,
this job's median best objective equal or better.

Each child runs in a session of its own, so whatever Ray started there is found and ended.
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as `python bench/tune_efficiency.py` from anywhere

from bench import figures  # noqa: E402

BASE_CONFIG = ROOT / "configs" / "local.yaml"
SEARCH_SPACE = ROOT / "configs" / "search_space.yaml"
DEFAULT_JSON = ROOT / "runs" / "bench" / "tune_efficiency.json"
EXPERIMENT = "bench"
TARGET_OVERHEAD_S = 12.0
TARGET_OVERHEAD_VS_FLOOR = 1.5
TARGET_SCALING = 0.95
# Tune stamps each result with whole seconds; a report lies in [timestamp, timestamp + 1).
TIMESTAMP_MIDPOINT = 0.5


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
    from monolith.search_space import load_search_space
    from monolith.training import train_on_prepared

    cfg = load_config(spec["config"])
    # Patience E never runs out within E epochs (the first epoch always improves).
    train = dataclasses.replace(cfg.train, early_stopping_patience=cfg.train.epochs)
    cfg = dataclasses.replace(cfg, train=train)
    space = load_search_space(spec["search_space"])
    metric, sign = cfg.eval.objective, 1.0 if cfg.eval.mode == "min" else -1.0
    from monolith.training import window_source

    source = window_source(cfg, spec["prepared"], evaluate_test=False)
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


def child_floor(spec: dict[str, Any]) -> int:
    """N trivial trials under Tune in the job's layout (its workers per trial and trials at
    once), each a run through the adapter whose workers report once (having imported
    TensorFlow first if ``spec["import_tensorflow"]``)."""
    from ray_jobs._ray import connect
    from ray_jobs.console import quiet

    quiet(False)
    connect(local_cpus=spec["cpus"], log_to_driver=False)
    from ray import tune

    from monolith.config import load_config
    from monolith.tuning import tune_settings
    from ray_jobs.report_relay import start_report_relay
    from ray_jobs.reservation_watch import start_reservation_watch
    from ray_jobs.train_adapter import JobSpec, Resources
    from ray_jobs.trial import run_trial

    cfg = load_config(spec["config"])
    s = tune_settings(cfg)
    static = {
        "spec": JobSpec(
            task="noop",
            base_config=cfg,
            bench={"import_tensorflow": spec["import_tensorflow"]},
        ),
        "resources": Resources(
            num_workers=s.num_workers,
            per_worker=s.resources_per_worker(),
            poll_interval_s=s.train_poll_interval_s,
            watch_preemption=s.watch_preemption,
            reservation_watch=start_reservation_watch(),  # as the tune job's trials have
        ),
        "train_storage": spec["storage"],
        "relay": start_report_relay(),  # as the tune job's trials have
    }
    tuner = tune.Tuner(  # the tune job's trial function
        tune.with_resources(tune.with_parameters(run_trial, static=static), {"CPU": s.driver_cpus}),
        tune_config=tune.TuneConfig(
            num_samples=spec["trials"], max_concurrent_trials=s.max_concurrent_trials
        ),
        run_config=tune.RunConfig(name=spec["name"], storage_path=spec["storage"], verbose=0),
    )
    tuner.fit()
    return 0


def child_throughput(spec: dict[str, Any]) -> int:
    """Windows/s of the base config through the adapter for each (workers, CPUs per worker)."""
    from ray_jobs._ray import connect
    from ray_jobs.console import quiet

    quiet(False)
    widest = max(w * c for w, c in spec["layouts"])
    connect(local_cpus=max(os.cpu_count() or 1, math.ceil(widest)), log_to_driver=False)
    from monolith.config import load_config
    from ray_jobs.train_adapter import JobSpec, Resources, RunPlace, launch

    cfg = load_config(spec["config"])
    Path(spec["storage"]).mkdir(parents=True, exist_ok=True)
    out = []
    for n, (workers, cpus) in enumerate(spec["layouts"], 1):
        output = Path(spec["storage"]) / f"throughput-{n}-{workers}x{cpus}.json"
        job = JobSpec(
            task="throughput",
            base_config=cfg,
            prepared=spec["prepared"],
            logs=str(Path(spec["storage"]) / "logs"),
            bench={k: spec[k] for k in ("warmup", "steps", "rounds")} | {"output": str(output)},
        )
        launch(
            job,
            Resources(workers, {"CPU": float(cpus)}, watch_preemption=False),
            RunPlace(f"throughput-{n}-{workers}x{cpus}", spec["storage"]),
            cfg.hyperparameters(),
        )
        out.append({"workers": workers, "cpus_per_worker": cpus, **json.loads(output.read_text())})
    Path(spec["output"]).write_text(json.dumps(out))
    return 0


CHILDREN = {
    "tune": child_tune,
    "original": child_original,
    "floor": child_floor,
    "throughput": child_throughput,
}


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


def spawn(
    label: str, mode: str, spec: dict[str, Any], work: Path, env: dict[str, str], timeout: float
):
    """Run child ``mode`` to its end; returns launch / end times (time.time()) and its status."""
    spec_path = work / f"{label}.spec.json"
    spec_path.write_text(json.dumps(spec))
    log = work / f"{label}.log"
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


# ---- reading what the children left ---------------------------------------------------------


def tune_trials(tune_dir: Path, launched: float, metric: str | None) -> list[dict[str, Any]]:
    """A Tune experiment's trials from its folders: reports timed in seconds since launch."""
    trials = []
    for result_file in tune_dir.glob("*/result.json"):
        rows = [json.loads(ln) for ln in result_file.read_text().splitlines() if ln.strip()]
        if not rows:
            continue
        # Trial folders: <trainable>_<trial id>_<creation counter>_<params>_<date>.
        match = re.search(
            rf"_{re.escape(str(rows[0]['trial_id']))}_(\d+)_", result_file.parent.name
        )
        if not match:
            continue
        reports = [
            {
                "time": row["timestamp"] + TIMESTAMP_MIDPOINT - launched,
                "trial": int(match.group(1)),
                "epoch": int(row.get("epoch", 1)),
                "value": float(row[metric]) if metric else math.nan,
                "epoch_seconds": float(row.get("epoch_seconds", math.nan)),
                "elapsed_seconds": float(row.get("elapsed_seconds", 0.0)),
                "time_total_s": float(row["time_total_s"]),
            }
            for row in rows
        ]
        first = reports[0]
        trials.append(
            {
                "trial": int(match.group(1)),
                # Trial start: when its trainable began (Tune's time_total_s counts from there).
                "start": first["time"] - first["time_total_s"],
                "reports": reports,
            }
        )
    return sorted(trials, key=lambda t: t["trial"])


def bench_config(args: argparse.Namespace, prepared: Path, path: Path, seed: int) -> dict[str, Any]:
    """The base config both sides use: configs/local.yaml on the prepared dataset, seed ``seed``."""
    import yaml

    from monolith.config import load_config

    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["data"]["source"] = str(prepared)
    raw["train"].update(epochs=args.epochs, seed=42 + seed)
    raw["tune"].update(
        search_space=str(SEARCH_SPACE), num_samples=args.trials, warm_start="base", seed=seed
    )
    if args.quick:
        raw["train"]["max_steps_per_epoch"] = 8
        raw["eval"]["probe_max_windows"] = 500
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_config(path)  # fail here, not in a child
    return raw


def _environment(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TMPDIR=str(work),  # Ray's sessions and sockets in here, not in the shared /tmp/ray
    )
    return env


def run_original(args, work: Path, env, config: Path, prepared: Path, seed: int, metric: str):
    spec = {
        "config": str(config),
        "search_space": str(SEARCH_SPACE),
        "prepared": str(prepared),
        "trials": args.trials,
        "jobs": args.original_jobs,
        "seed": seed,
        "output": str(work / f"original-{seed}.json"),
    }
    proc = spawn(f"original-{seed}", "original", spec, work, env, args.timeout)
    _check(proc, "the original approach")
    data = json.loads(Path(spec["output"]).read_text())
    for report in data["reports"]:
        report["time"] -= proc["launched"]
    return {"reports": data["reports"], "wall_s": proc["wall_s"]}


def run_job(args, work: Path, env, config: Path, seed: int, metric: str, lanes: int):
    storage = work / f"experiments-{seed}"
    argv = ["--config", str(config), "--name", EXPERIMENT, "--storage", str(storage)]
    proc = spawn(f"tune-{seed}", "tune", {"argv": argv}, work, env, args.timeout)
    _check(proc, "the tune job")
    trials = tune_trials(storage / EXPERIMENT / "tune", proc["launched"], metric)
    summary = json.loads((storage / EXPERIMENT / "results" / "summary.json").read_text())
    return {
        "trials": trials,
        "reports": [r for t in trials for r in t["reports"]],
        "wall_s": proc["wall_s"],
        "stop_reasons": summary.get("stop_reasons"),
        "overheads": figures.trial_overheads(trials, lanes),
    }


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
    print(f"dataset prepared once for every run in {time.perf_counter() - started:.1f} s")
    metric, mode = base.eval.objective, base.eval.mode
    job_metric = f"best_{metric}"
    env = _environment(work)
    configs = {}
    for seed in range(args.runs):
        configs[seed] = work / f"config-{seed}.yaml"
        bench_config(args, prepared, configs[seed], seed)

    # The job's layout (and the floor's): workers per trial, trials at once (= lanes).
    settings = tune_settings(load_config(configs[0]))
    lanes = settings.concurrent_trials()
    layout = {"workers": settings.num_workers, "trials_at_once": lanes}
    original, job = [], []
    for seed in range(args.runs):
        print(f"run {seed + 1}/{args.runs}: original approach (study.optimize n_jobs="
              f"{args.original_jobs}, seed {seed}) ...")  # fmt: skip
        original.append(run_original(args, work, env, configs[seed], prepared, seed, metric))
        print(f"  {original[-1]['wall_s']:.1f} s; this job (seed {seed}) ...")
        job.append(run_job(args, work, env, configs[seed], seed, job_metric, lanes))
        print(f"  {job[-1]['wall_s']:.1f} s")

    floors = {}
    for name, with_tf in (("floor", False), ("floor-tf", True)):
        print(
            f"{name}: {args.trials} trivial trials through the adapter, {layout['workers']} "
            f"worker(s) each, {lanes} at a time"
            f"{', the workers importing TensorFlow' if with_tf else ''} ..."
        )
        spec = {
            "config": str(configs[0]),
            "storage": str(work / name),
            "name": name,
            "import_tensorflow": with_tf,
            "trials": args.trials,
            "cpus": max(os.cpu_count() or 1, math.ceil(settings.concurrent_cpus())),
        }
        floor_run = spawn(name, "floor", spec, work, env, args.timeout)
        _check(floor_run, f"the {name}")
        floors[name] = figures.floor_overheads(
            tune_trials(work / name / name, floor_run["launched"], None), lanes
        )

    layouts = figures.mirrored([(1, 1), (2, 1), (1, 2)])
    print(f"windows/s through the adapter, (workers, CPUs each) in this order: {layouts} ...")
    spec = {
        "config": str(configs[0]),
        "prepared": str(prepared),
        "layouts": layouts,
        "warmup": args.warmup,
        "steps": args.steps,
        "rounds": args.rounds,
        "storage": str(work / "throughput"),
        "output": str(work / "throughput.json"),
    }
    throughput_run = spawn("throughput", "throughput", spec, work, env, args.timeout)
    _check(throughput_run, "the windows/s measurement")
    throughput = json.loads(Path(spec["output"]).read_text())

    baseline_wall = figures.spread([o["wall_s"] for o in original])["median"]
    for side, key in ((original, "reports"), (job, "reports")):
        for one in side:
            one["best"] = figures.best_value(one[key], mode)
            one["best_within_baseline_wall"] = figures.best_within(one[key], baseline_wall, mode)
    for one in job:
        # the job reports the running best: take its per-epoch objective for the figures too
        one["best"] = figures.best_value(one["reports"], mode)
    return {
        "budget": {
            "runs": args.runs,
            "trials": args.trials,
            "max_epochs": args.epochs,
            "objective": metric,
            "mode": mode,
            "cpus": os.cpu_count(),
            "quick": args.quick,
            "layout": layout,
        },
        "original": original,
        "job": job,
        "baseline_median_wall_s": baseline_wall,
        "floor_s": floors["floor"],
        "floor_tf_s": floors["floor-tf"],
        "throughput": throughput,
    }


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    """Medians and ranges of every figure, and the verdicts."""
    mode = r["budget"]["mode"]
    out: dict[str, Any] = {}
    for side in ("original", "job"):
        runs = r[side]
        out[side] = {
            "best": figures.spread([x["best"] for x in runs]),
            "best_within_baseline_wall": figures.spread(
                [x["best_within_baseline_wall"] for x in runs]
            ),
            "wall_s": figures.spread([x["wall_s"] for x in runs]),
            "wall_per_trial_s": figures.spread([x["wall_s"] / r["budget"]["trials"] for x in runs]),
        }
    overheads = [o.get("overhead_s") for x in r["job"] for o in x["overheads"]]
    out["job"]["overhead_s"] = figures.spread(overheads)
    out["job"]["ray_start_s"] = figures.spread(
        [o.get("ray_start_s") for x in r["job"] for o in x["overheads"]]
    )
    out["job"]["worker_start_s"] = figures.spread(
        [o.get("worker_start_s") for x in r["job"] for o in x["overheads"]]
    )
    out["floor_s"] = figures.spread(r["floor_s"])
    out["floor_tf_s"] = figures.spread(r["floor_tf_s"])
    layouts = figures.per_layout(r["throughput"])
    out["windows_per_s"] = [
        {"workers": w, "cpus_per_worker": c, **figure} for (w, c), figure in layouts.items()
    ]
    scaling = layouts[(2, 1.0)]["windows_per_s"] / layouts[(1, 2.0)]["windows_per_s"]
    over, floor = out["job"]["overhead_s"]["median"], out["floor_s"]["median"]
    out["scaling_2x1_vs_1x2"] = scaling
    out["verdicts"] = {
        "overhead <= 12 s": over is not None and over <= TARGET_OVERHEAD_S,
        "overhead <= 1.5x floor": over is not None
        and floor
        and over <= TARGET_OVERHEAD_VS_FLOOR * floor,
        "2x1 >= 0.95x 1x2": scaling >= TARGET_SCALING,
        "best within baseline wall": figures.better_or_equal(
            out["job"]["best_within_baseline_wall"]["median"],
            out["original"]["best"]["median"],
            mode,
        ),
    }
    return out


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def _spread(s: dict[str, Any], spec: str = ".1f") -> str:
    return f"{_fmt(s['median'], spec)} [{_fmt(s['min'], spec)}, {_fmt(s['max'], spec)}]"


def report(r: dict[str, Any], s: dict[str, Any]) -> None:
    b = r["budget"]
    mark = {True: "met", False: "NOT met"}
    print(
        f"\ntune efficiency: {b['runs']} runs per side, {b['trials']} trials x <= {b['max_epochs']} "
        f"epochs, objective {b['objective']} ({b['mode']}), {b['cpus']} CPUs"
        f"{', QUICK' if b['quick'] else ''}; median [min, max] over runs"
    )
    print(f"\n  {'figure':<40}{'this job':>26}{'original':>26}")
    print(
        f"  {'best ' + b['objective']:<40}{_spread(s['job']['best'], '.4f'):>26}{_spread(s['original']['best'], '.4f'):>26}"
    )
    print(
        f"  {'best within ' + _fmt(r['baseline_median_wall_s']) + ' s (baseline median wall)':<40}"
        f"{_spread(s['job']['best_within_baseline_wall'], '.4f'):>26}"
        f"{_spread(s['original']['best_within_baseline_wall'], '.4f'):>26}"
    )
    print(
        f"  {'total wall (s)':<40}{_spread(s['job']['wall_s']):>26}{_spread(s['original']['wall_s']):>26}"
    )
    print(
        f"  {'total wall / trials (s)':<40}{_spread(s['job']['wall_per_trial_s']):>26}"
        f"{_spread(s['original']['wall_per_trial_s']):>26}"
    )
    print("\n  every run (seed: best / best within the baseline's median wall / wall):")
    for side in ("job", "original"):
        runs = "; ".join(
            f"{i}: {_fmt(x['best'], '.4f')} / {_fmt(x['best_within_baseline_wall'], '.4f')} / "
            f"{_fmt(x['wall_s'])} s"
            for i, x in enumerate(r[side])
        )
        print(f"    {side:<9}{runs}")
    print(
        f"\n  per-trial overhead (this job): {_spread(s['job']['overhead_s'])} s over "
        f"{s['job']['overhead_s']['n']} trials of >= 2 epochs; of it Ray start-up (-> worker loop) "
        f"{_spread(s['job']['ray_start_s'])} s, worker start-up + tracing "
        f"{_spread(s['job']['worker_start_s'])} s"
    )
    lay = b["layout"]
    print(
        f"  (each measured in its lane: {lay['trials_at_once']} trial(s) at once, "
        f"{lay['workers']} worker(s) each)"
    )
    print(f"  floor (trivial trials, same adapter and layout): {_spread(s['floor_s'])} s per trial")
    over, floor_tf = s["job"]["overhead_s"]["median"], s["floor_tf_s"]["median"]
    print(
        f"  the same, the workers importing TensorFlow first: {_spread(s['floor_tf_s'])} s per "
        f"trial (the job's overhead / it: {_fmt(over / floor_tf if over and floor_tf else None, '.2f')}x)"
    )
    print(
        "\n  windows/s through the adapter (optimizer steps only; per launch its best round, "
        "launched forward then backward; the mean counts):"
    )
    for t in s["windows_per_s"]:
        launches = " / ".join(f"{x:.1f}" for x in t["launches"])
        print(
            f"    {t['workers']} worker(s) x {t['cpus_per_worker']:g} CPU: "
            f"{t['windows_per_s']:8.1f}  ({launches})"
        )
    print(f"    2 workers x 1 CPU / 1 worker x 2 CPUs = {s['scaling_2x1_vs_1x2']:.2f}x")
    print("\n  targets:")
    for name, ok in s["verdicts"].items():
        print(f"    {name:<32}{mark[bool(ok)]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per side (seeds 0..R-1)")
    parser.add_argument("--trials", type=int, help="trials per run (default: tune.num_samples)")
    parser.add_argument("--epochs", type=int, help="max epochs per trial (default: train.epochs)")
    parser.add_argument("--quick", action="store_true", help="tiny budget: a smoke run")
    parser.add_argument("--original-jobs", type=int, default=2, help="the original's n_jobs")
    parser.add_argument("--steps", type=int, help="timed steps per windows/s round")
    parser.add_argument("--rounds", type=int, help="timed windows/s rounds (best one counts)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (tracing)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where figures go")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, spec = args.child
        return CHILDREN[mode](json.loads(Path(spec).read_text()))
    sys.stdout.reconfigure(line_buffering=True)  # progress lines while children run
    args.steps = args.steps or (5 if args.quick else 40)
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
    s = summarise(r)
    report(r, s)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"runs": r, "summary": s}, indent=1, default=str))
    print(f"\n  figures -> {args.json}")
    return 0 if all(s["verdicts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
