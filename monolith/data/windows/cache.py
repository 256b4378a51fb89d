"""The windows cache: what every reader would otherwise build from every row.

The row layout and the evaluation samples touch every row, so the first reader builds them
and caches them under ``<prepared>/cache/`` (keyed by the dataset's metadata and scalers, and
for a sample by L and its cap); later readers (every trial's workers) take them from there.
Where the cache cannot be written (read-only storage) every reader builds them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from typing import Any

import numpy as np

from monolith.data.prepared import CACHE_DIR
from monolith.data.windows.index import LAYOUT, SymbolIndex, runs_of
from monolith.errors import MonolithError, StorageError
from monolith.filesystems import first_line, read_bytes
from monolith.storage import StorageSettings, write_bytes
from monolith.uri import Location

log = logging.getLogger(__name__)

# Bump when what the cache holds changes: older cache files are then ignored.
_CACHE_VERSION = 1

Batch = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # (features, targets)


class WindowCache:
    """The cache of one prepared dataset (its metadata and scalers are the key)."""

    def __init__(
        self,
        location: Location,
        settings: StorageSettings | None,
        metadata: dict[str, Any],
        scalers: dict[str, Any],
    ) -> None:
        self.location = location
        self.settings = settings
        self._key = {"version": _CACHE_VERSION, "metadata": metadata, "scalers": scalers}
        self._instruments: dict[str, int] = metadata["instruments"]

    def _file(self, what: str, **identity: object) -> Location:
        digest = hashlib.sha256(
            json.dumps({**self._key, **identity}, sort_keys=True, default=str).encode()
        ).hexdigest()[:24]
        return self.location.join(CACHE_DIR, f"{what}-{digest}.npz")

    def _get(self, location: Location) -> dict[str, np.ndarray] | None:
        try:
            body = read_bytes(location, self.settings)
        except StorageError:
            return None  # not cached yet (or unreadable): built from the partitions
        try:
            with np.load(io.BytesIO(body), allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            log.warning("ignoring the cache file %s: %s", location, exc)
            return None

    def _put(self, location: Location, arrays: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        try:
            write_bytes(str(location), buffer.getvalue(), self.settings)
        except (MonolithError, OSError) as exc:  # a cache is worth less than the run
            log.warning(
                "not cached at %s (%s): readers build it from the partitions",
                location,
                first_line(exc),
            )

    # -- the row layout -----------------------------------------------------------------------
    def layout(self, symbols: list[str]) -> list[SymbolIndex] | None:
        """Every symbol's row layout, if a reader before this one cached it."""
        location = self._file("layout")
        cached = self._get(location)
        if cached is None:
            return None
        try:
            return [self._unpack_layout(cached, i, s) for i, s in enumerate(symbols)]
        except KeyError as exc:
            log.warning("ignoring the cached row layout %s: no %s", location, exc)
            return None

    def put_layout(self, index: list[SymbolIndex]) -> None:
        """Cache every symbol's row layout, each array as runs (values and lengths)."""
        packed: dict[str, np.ndarray] = {}
        for i, ix in enumerate(index):
            for name in LAYOUT:
                packed[f"{i}.{name}.values"], packed[f"{i}.{name}.lengths"] = runs_of(
                    getattr(ix, name)
                )
        self._put(self._file("layout"), packed)

    def _unpack_layout(self, cached: dict[str, np.ndarray], i: int, symbol: str) -> SymbolIndex:
        arrays = {
            name: np.repeat(cached[f"{i}.{name}.values"], cached[f"{i}.{name}.lengths"])
            for name in LAYOUT
        }
        return SymbolIndex(symbol=symbol, instrument=int(self._instruments[symbol]), **arrays)

    # -- the evaluation samples ---------------------------------------------------------------
    def _sample_file(self, split: str, cap: int | None, sequence_length: int) -> Location:
        return self._file(f"{split}-L{sequence_length}", sequence_length=sequence_length, cap=cap)

    def samples(
        self,
        samples: dict[str, int | None],
        sample_ends: dict[str, dict[str, np.ndarray]],
        sequence_length: int,
    ) -> dict[str, Batch]:
        """The samples a reader before this one cached (of the expected size), by split."""
        out = {}
        for split, cap in samples.items():
            location = self._sample_file(split, cap, sequence_length)
            cached = self._get(location)
            if cached is None:
                continue
            features = {k.split(".", 1)[1]: v for k, v in cached.items() if k.startswith("f.")}
            targets = {k.split(".", 1)[1]: v for k, v in cached.items() if k.startswith("t.")}
            expected = sum(len(e) for e in sample_ends[split].values())
            if "technical_input" in features and len(targets.get("regime", ())) == expected:
                out[split] = (features, targets)
            else:
                log.warning("ignoring the cached sample %s: not this sample", location)
        return out

    def put_samples(
        self, caps: dict[str, int | None], built: dict[str, Batch], sequence_length: int
    ) -> None:
        """Cache the samples of the splits in ``caps`` (each capped as given)."""
        for split, cap in caps.items():
            features, targets = built[split]
            self._put(
                self._sample_file(split, cap, sequence_length),
                {**{f"f.{k}": v for k, v in features.items()},
                 **{f"t.{k}": v for k, v in targets.items()}},
            )  # fmt: skip
