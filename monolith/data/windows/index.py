"""Where windows may end: valid window ends, a worker's shard of the fit split, and one
symbol's row layout (enough to find its windows without its features).

A window of length L ending at row ``e`` is valid when rows ``e-L+1 .. e`` belong to the same
symbol, the same split and the same gap-free segment, and the direction target at ``e`` exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monolith.data.prepared import SPLIT_CODES
from monolith.errors import DataError

FIT_SPLITS = {"train": ("train",), "train+val": ("train", "val")}
LAYOUT = ("split", "segment", "has_target")  # a symbol's row layout (SymbolIndex)


def valid_window_ends(
    instrument: np.ndarray,
    segment: np.ndarray,
    split_code: np.ndarray,
    has_target: np.ndarray,
    sequence_length: int,
) -> np.ndarray:
    """Row indices at which a full window of ``sequence_length`` rows may end.

    Rows must be sorted by (instrument, timestamp). A block is a run of rows sharing
    instrument, segment and split; a window must lie inside one block.
    """
    n = len(instrument)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    change = np.r_[
        True,
        (instrument[1:] != instrument[:-1])
        | (segment[1:] != segment[:-1])
        | (split_code[1:] != split_code[:-1]),
    ]
    return _ends(change, has_target & (split_code != SPLIT_CODES["purge"]), sequence_length)


def _ends(change: np.ndarray, ok: np.ndarray, length: int) -> np.ndarray:
    """Ends of windows of ``length`` rows inside blocks that start where ``change`` is True."""
    idx = np.arange(len(change))
    block_start = np.maximum.accumulate(np.where(change, idx, 0))
    return idx[(idx - block_start + 1 >= length) & ok]


@dataclass(frozen=True)
class Shard:
    """Worker ``index`` of ``count``: which part of the fit split's rows it holds."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise DataError(f"shard {self.index} of {self.count} does not exist")

    def bounds(self, start: int, stop: int, index: int | None = None) -> tuple[int, int]:
        """Rows ``[a, b)`` of shard ``index`` (default: this one) within ``[start, stop)``."""
        i = self.index if index is None else index
        n = stop - start
        return start + n * i // self.count, start + n * (i + 1) // self.count


WHOLE = Shard()  # one worker holds the whole fit split


@dataclass
class SymbolIndex:
    """One symbol's row layout: enough to find its windows without its features."""

    symbol: str
    instrument: int
    split: np.ndarray  # int8 codes
    segment: np.ndarray
    has_target: np.ndarray

    def runs(self, code: int) -> list[tuple[int, int]]:
        """Contiguous row runs of split ``code`` (one per split in a prepared dataset)."""
        rows = np.flatnonzero(self.split == code)
        if len(rows) == 0:
            return []
        breaks = np.flatnonzero(np.diff(rows) != 1)
        starts = np.r_[rows[0], rows[breaks + 1]]
        stops = np.r_[rows[breaks] + 1, rows[-1] + 1]
        return list(zip(starts.tolist(), stops.tolist(), strict=True))

    def ends(self, start: int, stop: int, length: int) -> np.ndarray:
        """Valid window ends (symbol rows) whose windows lie inside ``[start, stop)``."""
        seg = self.segment[start:stop]
        split = self.split[start:stop]
        if len(seg) == 0:
            return np.empty(0, dtype=np.int64)
        change = np.r_[True, (seg[1:] != seg[:-1]) | (split[1:] != split[:-1])]
        ok = self.has_target[start:stop] & (split != SPLIT_CODES["purge"])
        return _ends(change, ok, length) + start


def runs_of(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as runs: each run's value and length (``np.repeat`` undoes it)."""
    if len(values) == 0:
        return values[:0], np.empty(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(values[1:] != values[:-1]) + 1]
    return values[starts], np.diff(np.r_[starts, len(values)])


def even(n: int, cap: int | None) -> np.ndarray:
    """Indices of at most ``cap`` of ``n`` items, evenly spaced (all when cap is None)."""
    if cap is None or n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))
