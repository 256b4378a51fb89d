"""Benchmark: preparing the 4 real crypto symbols end to end vs merely reading the files.

Each measurement runs in a fresh child process so its peak RSS is its own. Printed:
rows/s end to end (read + clean + TA-Lib + HMM fit + splits + scalers + Parquet write), the
I/O floor (reading the same CSV files and nothing else) measured in the same run, and the
peak RSS growth of the prepare step against the in-memory size of the prepared data.

Targets on the 2-core reference machine: >= 50k rows/s; peak RSS growth <= 3x the prepared
data's in-memory size.

Then markets that close: two years of 5-minute bars of 40 equities on the NYSE calendar (sessions,
nights, weekends, holidays, early closes; built here, one Parquet file per symbol) prepared
with ``data.calendar: auto`` (each symbol's calendar detected, bars put in trading order) and
with ``data.calendar: 24/7`` (the path of a market that never closes), alternated, each in a
fresh process. Target: calendars >= 0.8x the 24/7 path's rows/s (medians).
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
TARGET_CALENDAR_RATIO = 0.8


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


def write_session_bars(folder: Path, symbols: int, years: int) -> int:
    """5-minute bars of ``symbols`` equities over the NYSE's sessions of the last ``years``
    whole years before 2024."""
    import warnings

    import exchange_calendars
    import numpy as np
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cal = exchange_calendars.get_calendar(
            "XNYS", start=f"{2024 - years}-01-01", end="2023-12-31"
        )
    step = pd.Timedelta(minutes=5)
    starts = [
        pd.date_range(o, c, freq=step, inclusive="left")
        for o, c in zip(cal.schedule["open"], cal.schedule["close"], strict=True)
    ]
    times = starts[0].append(starts[1:])
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(symbols):
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.001, len(times))))
        open_ = np.r_[close[0], close[:-1]]
        wick = np.abs(rng.normal(0, 0.0005, len(times))) * close
        frame = pd.DataFrame(
            {
                "timestamp": times,
                "symbol": f"EQ{i:02d}",
                "open": open_,
                "high": np.maximum(open_, close) + wick,
                "low": np.minimum(open_, close) - wick,
                "close": close,
                "volume": rng.integers(100, 10_000, len(times)).astype(float),
            }
        )
        frame.to_parquet(folder / f"EQ{i:02d}.parquet", index=False)
    return symbols * len(times)


def child_calendar(source: str, calendar: str) -> dict:
    import hmmlearn.hmm  # noqa: F401

    from monolith.config import DataConfig
    from monolith.data.prepare import prepare_dataset

    cfg = DataConfig(source=source, calendar=calendar)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        meta = prepare_dataset(cfg, Path(tmp) / "prepared")
        elapsed = time.perf_counter() - t0
    calendars = {c["calendar"] for c in meta["calendars"].values()}
    gaps = sum(c["gaps"] for c in meta["calendars"].values())
    rows_in = sum(s["rows_in"] for s in meta["cleaning"]["symbols"].values())
    return {
        "rows_in": rows_in,
        "seconds": elapsed,
        "calendars": sorted(calendars),
        "gaps": gaps,
        "windows": meta["windows"],
    }


def calendars(pairs: int, symbols: int, years: int) -> None:
    """The calendar path against the 24/7 path on the same rows, alternated."""
    import statistics

    with tempfile.TemporaryDirectory() as tmp:
        rows = write_session_bars(Path(tmp) / "bars", symbols, years)
        runs: dict[str, list[dict]] = {"auto": [], "24/7": []}
        for _ in range(pairs):
            for calendar in ("auto", "24/7"):
                runs[calendar].append(_run_child("calendar", Path(tmp) / "bars", calendar))
    print(
        f"bench/data_prep calendars: {symbols} equities x 5-minute NYSE bars of {2024 - years}-2023 "
        f"({rows:,} rows), {pairs} alternated pairs, each run a fresh process"
    )
    speed = {}
    for calendar, done in runs.items():
        rates = [r["rows_in"] / r["seconds"] for r in done]
        speed[calendar] = statistics.median(rates)
        last = done[-1]
        print(
            f"  calendar {calendar:<5} rows/s median {speed[calendar]:>10,.0f} "
            f"[{min(rates):,.0f}, {max(rates):,.0f}]  calendars found {last['calendars']}, "
            f"gaps {last['gaps']:,}, windows {last['windows']}"
        )
    ratio = speed["auto"] / speed["24/7"]
    verdict = "met" if ratio >= TARGET_CALENDAR_RATIO else "NOT met"
    print(
        f"  calendars / 24/7 path   {ratio:>10.2f} x   (target >= {TARGET_CALENDAR_RATIO}: "
        f"{verdict})"
    )


def _run_child(kind: str, *extra: object) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, *map(str, extra)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["io", "prepare", "calendar"])
    parser.add_argument("child_args", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, default=3, help="alternated calendar/24-7 pairs")
    # A desk's scale, not a laptop's: the calendar is built once per process (0.2-0.3 s),
    # the rest of its cost is per symbol.
    parser.add_argument("--symbols", type=int, default=40, help="equities in the calendar bench")
    parser.add_argument("--years", type=int, default=2, help="years of 5-minute bars per symbol")
    parser.add_argument("--calendars-only", action="store_true", help="only the calendar bench")
    args = parser.parse_args()
    if args.child == "calendar":
        print(json.dumps(child_calendar(*args.child_args)))
        return 0
    if args.child:
        print(json.dumps(child_io() if args.child == "io" else child_prepare()))
        return 0
    if args.calendars_only:
        calendars(args.pairs, args.symbols, args.years)
        return 0
    if not DATA.is_dir():
        print(f"bench/data_prep: SKIPPED: shared data folder {DATA} not present")
        calendars(args.pairs, args.symbols, args.years)
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
    calendars(args.pairs, args.symbols, args.years)
    return 0


if __name__ == "__main__":
    sys.exit(main())
