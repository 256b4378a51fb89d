"""Benchmark: market data at cluster scale, in one run, against baselines measured in it.

A seeded synthetic market of ``--symbols`` x ``--rows`` bars (default 100 x 100,000 = 10 M
rows: eleven years of hourly bars for a hundred instruments)
stored as hive-partitioned Parquet (``symbol=…/part-0.parquet``) on an S3-protocol server (moto,
HTTP on 127.0.0.1, started here). Printed:

(a) single-process preparation (``monolith data prepare``, a fresh process reading from S3):
    rows/s and the process's peak RSS;
(b) the same preparation spread over a local two-node Ray cluster (head 1 CPU + worker node 2
    CPUs, token auth; ``monolith data prepare --ray-address``): rows/s, and the peak RSS of its
    largest process (each group actor reports its own peak; every cluster process is also
    sampled);
(c) training-data memory per Train worker, W = 1 and W = 2: what each worker's
    ``WindowSource`` holds (its shard of the train split + the fixed evaluation samples),
    read from the prepared dataset on S3 as a trial's worker reads it, with the rows it read
    and how long it took (and the same for the first reader, which builds and caches the
    evaluation samples);
(d) seconds per epoch in evaluation vs in training steps at this size, with the default
    config (``configs/seed_best.yaml``), one process.

Targets on the 2-core reference machine: (b) >= 1.5x (a) in rows/s; (b)'s largest process
<= 0.5x (a)'s peak; (c) W = 2 <= 0.6x W = 1 per worker; (d) evaluation <= training steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as `python bench/data_scale.py` from anywhere

BUCKET = "bench-scale"
MONOLITH = str(Path(sys.executable).parent / "monolith")


def build_market(symbols: int, rows: int, seed: int, uri: str) -> dict:
    """The seeded market as hive-partitioned Parquet at ``uri`` (run in a child process: a
    parent that held the data would hand its peak RSS to every process it starts)."""
    from monolith.config import SyntheticConfig
    from monolith.data.synthetic import generate_synthetic
    from monolith.storage import StorageSettings, upload_directory

    frame = generate_synthetic(SyntheticConfig(symbols=symbols, rows_per_symbol=rows, seed=seed))
    frame = frame.drop(columns=["true_regime"])
    with tempfile.TemporaryDirectory(prefix="bench-market-") as tmp:
        for symbol, part in frame.groupby("symbol", sort=True):
            target = Path(tmp) / f"symbol={symbol.replace('/', '-')}"
            target.mkdir(parents=True)
            part.drop(columns=["symbol"]).to_parquet(target / "part-0.parquet", index=False)
        upload_directory(tmp, uri, StorageSettings(addressing_style="path"))
    return {"rows": len(frame)}


class _Sampler:
    """Peak RSS per process of a Ray cluster (and the driver), sampled every ``interval_s``.

    The process list (a scan of every process's command line) is refreshed only every
    ``refresh_s``: scanning it at every sample cost 8 % of a core, taken from the
    preparation it measures. Each group actor also records its own peak (``ru_maxrss``), so
    a process caught late still has its peak counted.
    """

    def __init__(self, processes, interval_s: float = 0.25, refresh_s: float = 2.0) -> None:
        self.processes = processes
        self.interval_s = interval_s
        self.refresh_s = refresh_s
        self.peaks: dict[int, tuple[float, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        known: dict[int, psutil.Process] = {}
        refreshed = -math.inf
        while not self._stop.is_set():
            if time.monotonic() - refreshed >= self.refresh_s:
                known.update({proc.pid: proc for proc in self.processes()})
                refreshed = time.monotonic()
            for pid, proc in list(known.items()):
                try:
                    rss = proc.memory_info().rss / 2**20
                    if rss > self.peaks.get(pid, (0.0, ""))[0]:
                        # The title a Ray worker shows now: the actor and method it runs.
                        self.peaks[pid] = (rss, " ".join(proc.cmdline()[:2])[:60])
                except psutil.Error:
                    del known[pid]
            self._stop.wait(self.interval_s)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _prepare(args: list[str], env: dict) -> float:
    """Run ``monolith data prepare`` in a fresh process; returns its wall time."""
    started = time.perf_counter()
    done = subprocess.run(
        [MONOLITH, "data", "prepare", *args], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"prepare failed:\n{done.stderr[-4000:]}")
    return wall


def _meta_of(uri: str, env: dict) -> dict:
    from monolith.data.prepared import read_metadata
    from monolith.storage import StorageSettings

    os.environ.update(env)
    return read_metadata(uri, StorageSettings(addressing_style="path"))


def measure_worker_memory(prepared: str, env: dict) -> dict:
    """(c): what each Train worker's source holds, W = 1 and W = 2 (largest shard)."""
    from monolith.config import load_config
    from monolith.data.windows import Shard
    from monolith.storage import StorageSettings
    from monolith.training import window_source

    os.environ.update(env)
    cfg = load_config(ROOT / "configs" / "seed_best.yaml")
    settings = StorageSettings(addressing_style="path")

    def load(index: int, workers: int) -> tuple[int, int, float, int]:
        started = time.perf_counter()
        source = window_source(
            cfg, prepared, settings=settings, shard=Shard(index, workers), evaluate_test=False
        )
        took = time.perf_counter() - started
        return source.nbytes(), source.technical.nbytes, took, source.rows_read

    # The first reader builds the evaluation samples from every row and caches them; every
    # later one (each trial's workers) reads only its shard's row groups.
    first = load(0, 1)
    out: dict = {"first": {"load_seconds": first[2], "rows_read": first[3]}}
    for workers in (1, 2):
        sizes = [load(index, workers) for index in range(workers)]
        out[workers] = {
            "bytes": max(s[0] for s in sizes),
            "fit_rows_bytes": max(s[1] for s in sizes),
            "load_seconds": max(s[2] for s in sizes),
            "rows_read": max(s[3] for s in sizes),
        }
    return out


def measure_epoch(prepared: str, env: dict) -> dict:
    """(d): one process, the default config: training steps vs evaluation per epoch."""
    import keras  # noqa: F401  (TF start-up is not part of an epoch)

    from monolith.config import load_config
    from monolith.contrastive.trainer import ContrastiveTrainer
    from monolith.evaluate import Evaluator, evaluate_epoch
    from monolith.storage import StorageSettings
    from monolith.training import train_dataset_fn, window_source

    os.environ.update(env)
    cfg = load_config(ROOT / "configs" / "seed_best.yaml")
    source = window_source(
        cfg, prepared, settings=StorageSettings(addressing_style="path"), evaluate_test=False
    )
    trainer = ContrastiveTrainer(cfg.model, cfg.train, cfg.eval, source.spec)
    steps = min(
        source.steps_per_epoch(cfg.train.batch_size), cfg.train.max_steps_per_epoch or 10**9
    )
    evaluator = Evaluator(
        cfg.model, cfg.eval, source.spec, source.arrays("val"), source.arrays("train"),
        train_temperature=cfg.train.contrastive_temperature,
        train_augmentation=cfg.train.augmentation_type,
        train_batch_size=cfg.train.batch_size, train_seed=cfg.train.seed,
    )  # fmt: skip
    iterator = trainer.make_iterator(train_dataset_fn(source, cfg.train.batch_size, cfg.train.seed))
    epochs = []
    for _ in range(3):
        t0 = time.perf_counter()
        trainer.train_steps(iterator, steps)
        t1 = time.perf_counter()
        evaluate_epoch(trainer.model, evaluator)
        t2 = time.perf_counter()
        epochs.append({"train_s": t1 - t0, "eval_s": t2 - t1})
    return {
        "steps": steps,
        "batch": cfg.train.batch_size,
        "val_windows": len(source.arrays("val")[1]["regime"]),
        "probe_windows": len(source.arrays("train")[1]["regime"]),
        "epochs": epochs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--rows", type=int, default=100_000, help="bars per symbol")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--output",
        choices=["local", "s3"],
        default="local",
        help="where (a) and (b) write the prepared dataset (default: a local folder, as the "
        "local cluster's experiment storage; s3: the moto server, which then serves every "
        "byte twice from the same two cores)",
    )
    parser.add_argument("--child", choices=["build", "memory", "epoch"], help=argparse.SUPPRESS)
    parser.add_argument("--prepared", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        env = dict(os.environ)
        if args.child == "build":
            result = build_market(args.symbols, args.rows, args.seed, args.prepared)
        elif args.child == "memory":
            result = measure_worker_memory(args.prepared, env)
        else:
            result = measure_epoch(args.prepared, env)
        print("RESULT " + json.dumps(result))
        return 0

    from tests.integration.ray_cluster import LocalRayCluster
    from tests.integration.s3_server import S3Server

    server = S3Server().start()
    server.make_bucket(BUCKET)
    env = {**os.environ, **server.env, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cluster = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            t0 = time.perf_counter()
            build = [sys.executable, __file__, "--symbols", str(args.symbols), "--rows",
                     str(args.rows), "--seed", str(args.seed), "--prepared",
                     f"s3://{BUCKET}/bars", "--child", "build"]  # fmt: skip
            rows = _child(build, env)["rows"]
            from monolith.storage import StorageSettings, upload_directory

            os.environ.update(server.env)
            print(
                f"dataset: {rows:,} rows, {args.symbols} symbols, hive Parquet on "
                f"s3://{BUCKET}/bars ({time.perf_counter() - t0:.1f} s to build and upload)",
                flush=True,
            )
            config = Path(tmp) / "storage.yaml"
            config.write_text("storage: {addressing_style: path}\n")
            source = f"s3://{BUCKET}/bars/"

            # (a) one process
            single_out = (
                f"s3://{BUCKET}/prepared/single" if args.output == "s3" else f"{tmp}/single"
            )
            wall_a = _prepare(
                ["--input", source, "--output", single_out, "--config", str(config)], env
            )
            meta_a = _meta_of(single_out, server.env)
            peak_a = meta_a["timings"]["driver_peak_rss_mb"]["finished"]
            prep_a = meta_a["timings"]["elapsed_seconds"]
            rate_a = meta_a["rows"]["prepared"] / prep_a
            print(
                f"(a) single process: {rate_a:,.0f} rows/s ({prep_a:.1f} s preparing, "
                f"{wall_a:.1f} s with start-up); peak RSS {peak_a:,.0f} MiB",
                flush=True,
            )

            # (b) the local two-node cluster
            cluster = LocalRayCluster(head_cpus=1, worker_cpus=2)
            cluster.start(extra_env=server.env)
            cluster_out = (
                f"s3://{BUCKET}/prepared/cluster" if args.output == "s3" else f"{tmp}/cluster"
            )
            cluster_env = cluster.env(**server.env, TF_CPP_MIN_LOG_LEVEL="2")
            with _Sampler(cluster.processes) as sampler:
                wall_b = _prepare(
                    ["--input", source, "--output", cluster_out, "--config", str(config),
                     "--ray-address", f"127.0.0.1:{cluster.port}"],
                    cluster_env,
                )  # fmt: skip
            meta_b = _meta_of(cluster_out, server.env)
            prep_b = meta_b["timings"]["elapsed_seconds"]
            rate_b = meta_b["rows"]["prepared"] / prep_b
            groups = meta_b["timings"]["group_stages"]
            actor_peak = max(g["peak_rss_mb"] for g in groups)
            driver_peak = meta_b["timings"]["driver_peak_rss_mb"]["finished"]
            sampled = max(sampler.peaks.values(), default=(0.0, ""))
            largest = max(actor_peak, sampled[0], driver_peak)
            same = (
                meta_a["rows"] == meta_b["rows"]
                and meta_a["hmm"] == meta_b["hmm"]
                and meta_a["windows"] == meta_b["windows"]
            )
            print(
                f"(b) cluster ({len(groups)} groups): {rate_b:,.0f} rows/s ({prep_b:.1f} s "
                f"preparing, {wall_b:.1f} s with start-up); largest process {largest:,.0f} MiB "
                f"(group actors' own peaks {[g['peak_rss_mb'] for g in groups]}; sampled "
                f"max {sampled[0]:,.0f} MiB: {sampled[1]!r}; driver <= {driver_peak:,.0f} "
                f"MiB); same rows/HMM/windows as (a): {same}",
                flush=True,
            )
            stages = {k: v for k, v in meta_b["timings"].items() if k != "group_stages"}
            print(f"    cluster stages: {stages}", flush=True)
            cpu_groups = [g.get("cpu_seconds", math.nan) for g in groups]
            cpu_b = sum(cpu_groups) + meta_b["timings"].get("driver_cpu_seconds", math.nan)
            print(
                f"    CPU seconds: (a) {meta_a['timings'].get('driver_cpu_seconds', math.nan):.1f}; "
                f"(b) groups {cpu_groups} + driver "
                f"{meta_b['timings'].get('driver_cpu_seconds', math.nan):.1f} = {cpu_b:.1f}",
                flush=True,
            )
            cluster.stop()
            cluster = None

            # (c) and (d) in fresh processes, reading the prepared dataset from S3 as a trial's
            # workers do
            prepared = f"s3://{BUCKET}/prepared/single"
            if args.output != "s3":
                upload_directory(single_out, prepared, StorageSettings(addressing_style="path"))
            child = [sys.executable, __file__, "--prepared", prepared, "--child"]
            memory = _child(child + ["memory"], env)
            w1, w2, cold = memory["1"], memory["2"], memory["first"]
            print(
                f"(c) training data per worker: W=1 {w1['bytes'] / 2**20:,.0f} MiB "
                f"(fit rows {w1['fit_rows_bytes'] / 2**20:,.0f} MiB; read "
                f"{w1['rows_read']:,} of {meta_a['rows']['prepared']:,} rows in {w1['load_seconds']:.1f} s); W=2 "
                f"{w2['bytes'] / 2**20:,.0f} MiB (fit rows {w2['fit_rows_bytes'] / 2**20:,.0f} "
                f"MiB; read {w2['rows_read']:,} rows in {w2['load_seconds']:.1f} s); the first "
                f"reader, which builds and caches the evaluation samples: {cold['rows_read']:,} "
                f"rows in {cold['load_seconds']:.1f} s",
                flush=True,
            )
            epoch = _child(child + ["epoch"], env)
            steady = epoch["epochs"][1:]
            train_s = sum(e["train_s"] for e in steady) / len(steady)
            eval_s = sum(e["eval_s"] for e in steady) / len(steady)
            print(
                f"(d) per epoch (seed_best: {epoch['steps']} steps x batch {epoch['batch']}; "
                f"eval on {epoch['val_windows']} val + {epoch['probe_windows']} probe "
                f"windows): training steps {train_s:.2f} s, evaluation {eval_s:.2f} s "
                f"(first epoch {epoch['epochs'][0]['train_s']:.2f} s / "
                f"{epoch['epochs'][0]['eval_s']:.2f} s, tracing included)",
                flush=True,
            )

            ratios = {
                "(b)/(a) rows/s": (rate_b / rate_a, ">= 1.5", rate_b / rate_a >= 1.5),
                "(b) largest / (a) peak RSS": (largest / peak_a, "<= 0.5", largest / peak_a <= 0.5),
                "(c) W=2 / W=1 per worker": (w2["bytes"] / w1["bytes"], "<= 0.6",
                                             w2["bytes"] / w1["bytes"] <= 0.6),
                "(d) evaluation / training steps": (eval_s / train_s, "<= 1.0", eval_s <= train_s),
            }  # fmt: skip
            print("\nfigure                              ratio   target   met")
            for name, (value, target, met) in ratios.items():
                print(f"{name:<34} {value:6.2f}   {target:<7}  {'yes' if met else 'NO'}")
    finally:
        if cluster is not None:
            cluster.stop()
        server.stop()
    return 0


def _child(cmd: list[str], env: dict) -> dict:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{cmd[-1]} failed:\n{done.stderr[-4000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


if __name__ == "__main__":
    sys.exit(main())
