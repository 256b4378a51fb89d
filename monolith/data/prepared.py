"""The prepared dataset's layout, named once: its files, its partitions, and reading its small
files from wherever it lives (a local folder or an ``s3://`` prefix)::

    <prepared>/
        dataset/instrument=<SYMBOL>/part-0.parquet   one file per symbol, unscaled rows
        scalers.pkl                                  scikit-learn scalers (fitted on train rows)
        scalers.json                                 the same scalers as plain parameters
        drift_reference.npz                          scaled train rows to compare new data with
        data_processing_metadata.json                written last: what was read, cleaned,
                                                     built and split
        cache/<what>-<digest>.npz                    the row layout and evaluation samples,
                                                     cached by their first reader (derived from
                                                     the rest: safe to delete)

A prepared dataset is complete when its metadata file exists: every writer puts it last.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from monolith.errors import DataError, StorageError
from monolith.filesystems import read_bytes
from monolith.storage import StorageSettings, object_info
from monolith.uri import Location, parse_uri

# The layout's version, recorded in the metadata. 3: forward probe targets (one column per
# ``target_<probe>``, ``target_horizons`` in the metadata) and a purge covering the longest
# horizon. Readers refuse older datasets rather than run without those columns.
FORMAT_VERSION = 3
METADATA_FILE = "data_processing_metadata.json"
SCALERS_JSON = "scalers.json"
SCALERS_PKL = "scalers.pkl"
# Scaled train rows (a fixed, evenly spaced sample) that new data is compared with (drift).
DRIFT_REFERENCE = "drift_reference.npz"
DATASET_DIR = "dataset"
PARTITION_KEY = "instrument"
PART_FILE = "part-0.parquet"
# Rows per Parquet row group of a partition: a Train worker reads only the groups its shard's
# rows lie in (smaller groups skip more rows, larger ones make fewer, bigger range requests).
ROW_GROUP_ROWS = 8192
# What readers derive from every row (the row layout, the evaluation samples), cached by the
# first reader that builds it so later ones read only their own rows. Not part of the
# dataset's identity: the experiment fingerprint leaves this folder out.
CACHE_DIR = "cache"
# Row-level columns every prepared partition holds besides the features.
TIMESTAMP_COLUMN = "timestamp"
SPLIT_COLUMN = "split"
SEGMENT_COLUMN = "segment"
INSTRUMENT_COLUMN = "instrument_id"
REGIME_COLUMN = "hmm_regime"
DIRECTION_COLUMN = "target_direction"
SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "purge": 3}


def target_column(probe: str) -> str:
    """The prepared column holding a label probe's target: ``regime`` -> ``hmm_regime``,
    ``direction`` -> ``target_direction``, ``fwd_vol_h24`` -> ``target_fwd_vol_h24``."""
    return REGIME_COLUMN if probe == "regime" else f"target_{probe}"


def safe_name(symbol: str) -> str:
    """A symbol as a path segment: ``BTC/USDT`` -> ``BTC-USDT``."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", symbol)


def partition_path(symbol: str) -> str:
    """The partition file of ``symbol``, relative to the prepared dataset's root."""
    return f"{DATASET_DIR}/{PARTITION_KEY}={safe_name(symbol)}/{PART_FILE}"


def is_prepared_dataset(
    location: str | Path | Location, settings: StorageSettings | None = None
) -> bool:
    """Whether ``location`` holds a complete prepared dataset (its metadata file exists)."""
    if isinstance(location, str) and location == "synthetic":
        return False
    if not isinstance(location, Location):
        try:
            location = parse_uri(location)
        except Exception:
            return False
    if not location.is_s3:
        path = location.path
        return path.is_dir() and (path / METADATA_FILE).is_file() and (path / DATASET_DIR).is_dir()
    return object_info(str(location.join(METADATA_FILE)), settings) is not None


def read_json_file(
    location: str | Path | Location, name: str, settings: StorageSettings | None = None
) -> Any:
    """A JSON file of the prepared dataset at ``location``."""
    if not isinstance(location, Location):
        location = parse_uri(location)
    target = location.join(name)
    try:
        return json.loads(read_bytes(target, settings))
    except StorageError as exc:
        raise DataError(
            f"{location} is not a prepared dataset ({exc}); create one with `monolith data prepare`"
        ) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{target}: not valid JSON: {exc}") from None


def read_metadata(location: str | Path | Location, settings: StorageSettings | None = None) -> dict:
    return read_json_file(location, METADATA_FILE, settings)
