"""The bars under cleaning: the columns read, as arrays, and the positions still kept.

Cleaning works on plain arrays and a shrinking selection of positions into the frame read;
every kept column is gathered once at the end, so no intermediate frame is copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from monolith.data.ingest.columns import OHLCV_COLUMNS

# At most this many examples (time, file, line) are quoted per cleaning action.
_EXAMPLES = 3


@dataclass
class Bars:
    """Every bar read, and which of them are still kept, in the order they are judged."""

    names: pd.Index  # the symbols, sorted; a bar's code is its symbol's position here
    codes: np.ndarray  # per bar read
    kept_codes: np.ndarray  # per bar kept, in judging order
    columns: dict[str, np.ndarray]  # timestamp (ns), _file, _row per bar read
    ohlcv: tuple[np.ndarray, ...]  # open, high, low, close, volume per bar read (float64)
    files: list[dict[str, Any]]  # the report's file entries, indexed by ``_file``
    bad_tick_range_multiple: float
    # Positions of the bars kept, in judging order; None: every bar, in the order read.
    kept: np.ndarray | None = None
    ordered: bool = False

    @classmethod
    def of(
        cls, frame: pd.DataFrame, files: list[dict[str, Any]], bad_tick_range_multiple: float
    ) -> Bars:
        codes, names = pd.factorize(frame["symbol"], sort=True)
        return cls(
            names=names,
            codes=codes,
            kept_codes=codes,
            columns={
                "timestamp": frame["timestamp"].to_numpy(),
                "_file": frame["_file"].to_numpy(),
                "_row": frame["_row"].to_numpy(),
            },
            ohlcv=tuple(frame[name].to_numpy(dtype=np.float64) for name in OHLCV_COLUMNS),
            files=files,
            bad_tick_range_multiple=bad_tick_range_multiple,
        )

    @property
    def k(self) -> int:
        """How many symbols were read."""
        return len(self.names)

    @property
    def positions(self) -> np.ndarray:
        """The kept bars' positions in the frame read."""
        return np.arange(len(self.codes)) if self.kept is None else self.kept

    def at(self, values: np.ndarray) -> np.ndarray:
        """``values`` (one per bar read) of the kept bars."""
        return values if self.kept is None else values[self.kept]

    def per_symbol(self, mask: np.ndarray) -> np.ndarray:
        """How many of the kept bars ``mask`` selects, per symbol code."""
        return np.bincount(self.kept_codes[mask], minlength=self.k)

    def drop(self, mask: np.ndarray) -> None:
        """Stop keeping the bars ``mask`` selects (over the kept bars)."""
        if mask.any():
            self.kept = self.positions[~mask]
            self.kept_codes = self.codes[self.kept]

    def order(self) -> None:
        """Judge from here on by symbol, time, then file order, so "first" is reproducible."""
        if self.ordered:
            return
        kept = self.positions
        order = np.lexsort(
            (
                self.columns["_row"][kept],
                self.columns["_file"][kept],
                self.columns["timestamp"][kept],
                self.codes[kept],
            )
        )
        self.kept = kept[order]
        self.kept_codes = self.codes[self.kept]
        self.ordered = True

    def examples(self, mask: np.ndarray) -> str:
        """A few of the kept bars ``mask`` selects, by time and by place in their file, so a
        person can look them up."""
        picked = self.positions[mask]
        parts = []
        for i in picked[:_EXAMPLES]:
            entry = self.files[int(self.columns["_file"][i])]
            when = pd.Timestamp(int(self.columns["timestamp"][i]), tz="UTC").isoformat()
            row = int(self.columns["_row"][i])
            first_line = entry.get("first_data_line")  # CSV only: lines above it were skipped
            label = (
                f"line {row + first_line} (data row {row + 1})" if first_line else f"row {row + 1}"
            )
            parts.append(f"{when} ({entry['name']} {label})")
        more = "" if len(picked) <= _EXAMPLES else ", ..."
        return ", ".join(parts) + more
