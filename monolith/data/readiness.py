"""Can a prepared dataset train? The train split must hold at least one global batch of
windows (an optimizer step takes a whole one), and val and test at least one window each (the
objective and the probes are computed on them, in any number of windows).

A dataset that cannot is refused with one line naming the split, the counts, the symbols and
the likely cause (gaps that cut the series into runs shorter than a window, or too few bars),
and what to change: it is an error, never a "prepared" that fails later in a trial.
"""

from __future__ import annotations

from typing import Any

from monolith.errors import DataError

SPLITS = ("train", "val", "test")
_MAX_NAMED = 3


def check_trainable(metadata: dict[str, Any], global_batch: int | None) -> None:
    """Raise DataError when the train split of the prepared ``metadata`` has fewer windows
    than one global batch (``train.batch_size``; None: one window), or val or test has none."""
    need = {"train": max(int(global_batch or 1), 1), "val": 1, "test": 1}
    windows = metadata["windows"]
    short = [s for s in SPLITS if windows.get(s, 0) < need[s]]
    if not short:
        return
    split = short[0]
    counts = ", ".join(f"{s} {windows.get(s, 0):,}" for s in SPLITS)
    batch = (
        f"one global batch of {need[split]} (train.batch_size)"
        if split == "train" and global_batch
        else "one window"
    )
    raise DataError(
        f"data: split {split!r} has {windows.get(split, 0):,} windows (windows per split: "
        f"{counts}), fewer than {batch}: {_cause(metadata, split)}"
    )


def _cause(metadata: dict[str, Any], split: str) -> str:
    """Why the windows are few, by the symbols that lack them most, and what to change."""
    length = int(metadata["sequence_length"])
    calendars = metadata.get("calendars", {})
    per_symbol = metadata.get("windows_per_symbol", {})
    longest = metadata.get("longest_run", {})
    rows = {
        s: b["train"]["rows"] + b["val"]["rows"] + b["test"]["rows"]
        for s, b in metadata.get("splits", {}).items()
    }
    symbols = sorted(per_symbol, key=lambda s: per_symbol[s].get(split, 0))[:_MAX_NAMED]
    cut = [s for s in symbols if longest.get(s, length) < 2 * length]
    if cut:
        parts = []
        for s in cut:
            cal = calendars.get(s, {})
            parts.append(
                f"{s}: {cal.get('gaps', 0):,} gaps under calendar {cal.get('calendar', '24/7')} "
                f"({cal.get('chosen_by', 'data.calendar')}) split {rows.get(s, 0):,} rows into "
                f"runs of at most {longest.get(s, 0):,} bars"
            )
        closures = sum(calendars.get(s, {}).get("gaps", 0) for s in cut)
        return (
            f"{closures:,} gaps split the series into runs shorter than a window of {length} "
            f"bars plus its targets (data.sequence_length) ({'; '.join(parts)}): if the market "
            "closes (nights, weekends, holidays), set data.calendar (auto, or its exchange "
            "code such as XNYS) or data.calendars for these symbols; else raise "
            "data.gap_tolerance_bars, lower train.batch_size or data.sequence_length"
        )
    named = ", ".join(
        f"{s}: {rows.get(s, 0):,} rows, {per_symbol[s].get(split, 0):,} {split} windows"
        for s in symbols
    )
    return (
        f"too few bars ({named}; {split} keeps data.{split}_fraction of a symbol's rows, "
        f"less a purge of {metadata.get('purge_bars', length)} bars): supply more bars, "
        f"raise data.{split}_fraction, lower train.batch_size, or lower data.sequence_length "
        "or the target horizons"
        if split != "train"
        else f"too few bars ({named}): supply more bars, lower train.batch_size or "
        "data.sequence_length"
    )


def prepare_summary(metadata: dict[str, Any], limit: int = 20) -> list[str]:
    """One line per symbol (the first ``limit``): its calendar, gaps and closures, windows
    per split and price adjustment, as ``monolith data prepare`` prints them."""
    calendars = metadata.get("calendars", {})
    per_symbol = metadata.get("windows_per_symbol", {})
    cleaning = metadata.get("cleaning", {}).get("symbols", {})
    lines = []
    for symbol in sorted(per_symbol)[:limit]:
        cal = calendars.get(symbol, {})
        match = f", match {cal['match']:.3f}" if cal.get("match") is not None else ""
        windows = " ".join(f"{s} {per_symbol[symbol].get(s, 0):,}" for s in SPLITS)
        adjusted = cleaning.get(symbol, {}).get("price_adjustment")
        jumps = len(cleaning.get(symbol, {}).get("split_sized_jumps", []))
        lines.append(
            f"{symbol}: calendar {cal.get('calendar', '24/7')} ({cal.get('chosen_by', '?')}"
            f"{match}), {cal.get('bar', '?')} bars, {cal.get('gaps', 0):,} gaps, "
            f"{cal.get('closures', 0):,} closures spanned; windows {windows}"
            + (f"; prices adjusted ({adjusted})" if adjusted else "")
            + (f"; {jumps} split-sized jump(s) kept, see the cleaning report" if jumps else "")
        )
    if len(per_symbol) > limit:
        lines.append(
            f"... {len(per_symbol) - limit} more symbols: metadata.json has every symbol's "
            "calendars and windows_per_symbol"
        )
    return lines
