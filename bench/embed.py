"""Benchmark: embedding throughput (windows/s) of ``monolith embed``, locally and through Ray
Data on a local two-node cluster, against the bare compiled model forward on resident tensors
(the bound), in one run.

A bundle of the seed's best architecture (``configs/seed_best.yaml``, one short epoch: the
weights do not matter here, the graph does) and a seeded synthetic market of ``--symbols`` x
``--rows`` bars written as Parquet, one file per symbol. Measured:

1. the bound: the bundle's model, ``monolith.evaluate.forward`` (one compiled function, batches
   of ``--batch-size``) over the same windows already scaled and resident in memory;
2. local: ``Encoder.embed`` of the Parquet files in this process (read, clean, TA-Lib
   features, regimes, scaling, windows, forward) — what ``monolith embed`` runs;
3. Ray Data: ``monolith embed --ray-address`` on a local cluster (head 1 CPU + worker 2 CPUs),
   command wall time (its start-up included) and the embedding itself.

Target on the 2-core reference machine: local >= 0.7x the bound.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as `python bench/embed.py` from anywhere

TARGET = 0.7
MONOLITH = str(Path(sys.executable).parent / "monolith")


def build(work: Path, symbols: int, rows: int) -> tuple[Path, Path]:
    """The bundle and the bars (Parquet per symbol)."""
    import yaml

    from monolith.config import SyntheticConfig, config_from_dict
    from monolith.data.prepare import prepare_dataset
    from monolith.data.synthetic import generate_synthetic
    from monolith.training import train_on_prepared, write_final_bundle

    bars = work / "bars"
    bars.mkdir()
    frame = generate_synthetic(SyntheticConfig(symbols=symbols, rows_per_symbol=rows, seed=3))
    for symbol, part in frame.drop(columns=["true_regime"]).groupby("symbol"):
        part.to_parquet(bars / f"{symbol.replace('/', '')}.parquet", index=False)
    raw = yaml.safe_load((ROOT / "configs" / "seed_best.yaml").read_text())
    raw["data"]["source"] = str(bars)
    raw["train"].update(epochs=1, max_steps_per_epoch=5)
    cfg = config_from_dict(raw)
    prepare_dataset(cfg.data, work / "prepared")
    result = train_on_prepared(cfg, work / "prepared", train_split="train+val")
    write_final_bundle(result, cfg, work / "prepared", work / "bundle", cfg.hyperparameters())
    return work / "bundle", bars


def measure_local(bundle: Path, bars: Path, batch: int) -> dict:
    import numpy as np

    from monolith import Encoder
    from monolith.evaluate import forward

    encoder = Encoder.load(bundle)
    encoder.embed(bars, batch_size=batch)  # tracing, file cache, imports
    started = time.perf_counter()
    frame = encoder.embed(bars, batch_size=batch)
    local_s = time.perf_counter() - started
    # The bound: the same windows, scaled and resident, through the same compiled forward.
    rows = encoder._featured(bars, None)[0]
    from monolith.data.splits import symbol_blocks

    columns = encoder.metadata["features"]["technical"]
    L = encoder.sequence_length
    windows, ids = [], []
    for symbol, start, stop in symbol_blocks(rows):
        scaled = encoder._scaled(symbol, rows.iloc[start:stop][columns].to_numpy(np.float64))
        ends = np.arange(L - 1, stop - start)
        windows.append(scaled[ends[:, None] + np.arange(-L + 1, 1)[None, :]])
        ids.append(np.full(len(ends), encoder.instruments[symbol], dtype=np.int32))
    features = {"technical_input": np.concatenate(windows), "instrument_input": np.concatenate(ids)}
    n = len(features["technical_input"])
    forward(encoder.model, {k: v[:batch] for k, v in features.items()}, ("latent",))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for first in range(0, n, batch):
            forward(encoder.model, {k: v[first : first + batch] for k, v in features.items()},
                    ("latent",))  # fmt: skip
        best = min(best, time.perf_counter() - started)
    return {
        "windows": len(frame),
        "local_s": local_s,
        "local_windows_per_s": len(frame) / local_s,
        "bound_windows": n,
        "bound_windows_per_s": n / best,
    }


def measure_ray(bundle: Path, bars: Path, work: Path, batch: int) -> dict:
    from tests.integration.ray_cluster import LocalRayCluster

    cluster = LocalRayCluster(head_cpus=1, worker_cpus=2)
    try:
        cluster.start()
        out = work / "ray.parquet"
        cmd = [MONOLITH, "embed", str(bundle), "--input", str(bars), "--output", str(out),
               "--batch-size", str(batch), "--ray-address", f"127.0.0.1:{cluster.port}"]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=cluster.env())
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"ray embed failed:\n{done.stderr[-4000:]}")
        report = json.loads(Path(f"{out}.drift.json").read_text())
        return {"ray_wall_s": wall, "ray_windows": report["embed"]["windows"]}
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--rows", type=int, default=10_000, help="bars per symbol")
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        bundle, bars = build(work, args.symbols, args.rows)
        print(f"bundle and {args.symbols} x {args.rows} bars ready in "
              f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
        local = measure_local(bundle, bars, args.batch_size)
        ray = measure_ray(bundle, bars, work, args.batch_size)
    ratio = local["local_windows_per_s"] / local["bound_windows_per_s"]
    ray_rate = ray["ray_windows"] / ray["ray_wall_s"]
    print(
        f"\nembedding {local['windows']:,} windows (seed_best architecture, batch {args.batch_size})"
    )
    print(
        f"  bound (compiled forward, resident windows): {local['bound_windows_per_s']:10,.0f} windows/s"
    )
    print(f"  local embed (read, clean, features, scale, forward): "
          f"{local['local_windows_per_s']:10,.0f} windows/s  ({ratio:.2f}x the bound; target >= "
          f"{TARGET:g}x: {'met' if ratio >= TARGET else 'NOT met'})")  # fmt: skip
    print(f"  Ray Data on the local cluster, whole command: {ray_rate:10,.0f} windows/s  "
          f"({ray['ray_wall_s']:.1f} s incl. connecting, actor start-up and model loading; "
          f"{ray_rate / local['bound_windows_per_s']:.2f}x the bound)")  # fmt: skip
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
