"""Benchmark: preparing the 4 real crypto symbols end to end vs merely reading the files.

Each measurement runs in a fresh child process so its peak RSS is its own. Printed:
rows/s end to end (read + clean + TA-Lib + HMM fit + splits + scalers + Parquet write), the
I/O floor (reading the same CSV files and nothing else) measured in the same run, and the
peak RSS growth of the prepare step against the in-memory size of the prepared data.

Targets on the 2-core reference machine: >= 50k rows/s; peak RSS growth <= 3x the prepared
data's in-memory size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "crypto-hourly"
TARGET_ROWS_PER_S = 50_000
TARGET_RSS_RATIO = 3.0


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_io() -> dict:
    import pyarrow.csv as pacsv

    files = sorted(DATA.glob("*.csv"))
    base = _rss_mib()
    t0 = time.perf_counter()
    rows = 0
    for f in files:
        rows += pacsv.read_csv(f).num_rows
    elapsed = time.perf_counter() - t0
    return {"rows": rows, "seconds": elapsed, "rss_base_mib": base, "rss_peak_mib": _rss_mib()}


def child_prepare() -> dict:
    # prepare imports hmmlearn lazily (only the HMM fit needs it); import it before the
    # baseline so its code is not counted as growth caused by the data.
    import hmmlearn.hmm  # noqa: F401

    from monolith.config import DataConfig
    from monolith.data.prepare import prepare_dataset
    from monolith.data.windows import load_prepared_frame

    cfg = DataConfig(source=str(DATA))
    base = _rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        meta = prepare_dataset(cfg, Path(tmp) / "prepared")
        elapsed = time.perf_counter() - t0
        peak = _rss_mib()
        rows_in = sum(s["rows_in"] for s in meta["cleaning"]["symbols"].values())
        frame = load_prepared_frame(Path(tmp) / "prepared")
        size_mib = frame.memory_usage(deep=True).sum() / 2**20
    return {
        "rows_in": rows_in,
        "rows_prepared": meta["rows"]["prepared"],
        "seconds": elapsed,
        "rss_base_mib": base,
        "rss_peak_mib": peak,
        "prepared_mib": size_mib,
    }


def _run_child(kind: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["io", "prepare"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_io() if args.child == "io" else child_prepare()))
        return 0
    if not DATA.is_dir():
        print(f"bench/data_prep: SKIPPED: shared data folder {DATA} not present")
        return 0
    io = _run_child("io")
    prep = _run_child("prepare")
    rows_per_s = prep["rows_in"] / prep["seconds"]
    io_rows_per_s = io["rows"] / io["seconds"]
    growth = prep["rss_peak_mib"] - prep["rss_base_mib"]
    ratio = growth / prep["prepared_mib"]
    print("bench/data_prep: 4 real symbols (../shared/data/crypto-hourly)")
    print(f"  rows in                 {prep['rows_in']:>12,}")
    print(f"  rows prepared           {prep['rows_prepared']:>12,}")
    print(f"  I/O floor (read only)   {io['seconds']:>10.3f} s   {io_rows_per_s:>12,.0f} rows/s")
    print(f"  prepare end to end      {prep['seconds']:>10.3f} s   {rows_per_s:>12,.0f} rows/s")
    print(f"  prepare / I/O floor     {prep['seconds'] / io['seconds']:>10.1f} x time")
    print(f"  prepared data in memory {prep['prepared_mib']:>10.1f} MiB")
    print(
        f"  peak RSS                {prep['rss_peak_mib']:>10.1f} MiB "
        f"(growth {growth:.1f} MiB over {prep['rss_base_mib']:.1f} MiB after imports)"
    )
    print(f"  RSS growth / data size  {ratio:>10.2f} x   (target <= {TARGET_RSS_RATIO})")
    print(
        f"  throughput vs target    {rows_per_s / TARGET_ROWS_PER_S:>10.2f} x   "
        f"(target >= {TARGET_ROWS_PER_S:,} rows/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
