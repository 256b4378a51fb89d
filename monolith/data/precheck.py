"""Before any cluster resource is taken: would this data prepare into a dataset that trains?

The tune and final jobs prepare their data on the cluster. A dataset that cannot form one
global batch per split must be refused before that, with the same one line ``monolith data
prepare`` prints. A prepared dataset is checked from its metadata; raw files are read, cleaned
and put in trading order here, in this process (the same code as the preparation, less the
regime HMM and the writing), when they total at most ``PRECHECK_MAX_BYTES``. Larger sources
are checked by the preparation itself, which refuses them before any trial starts and leaves
nothing behind.
"""

from __future__ import annotations

import logging

from monolith.config import DataConfig
from monolith.data.prepare import GroupPlan, SymbolGroup
from monolith.data.prepared import is_prepared_dataset, read_metadata
from monolith.data.readiness import check_trainable
from monolith.data.sources import resolve_sources
from monolith.storage import StorageSettings
from monolith.uri import parse_uri

log = logging.getLogger(__name__)

PRECHECK_MAX_BYTES = 512 * 1024 * 1024


def check_can_train(
    cfg: DataConfig,
    global_batch: int,
    settings: StorageSettings | None = None,
    prepared: str | None = None,
) -> None:
    """Raise DataError (one line: split, counts, symbols, cause) when the dataset ``cfg``
    prepares into, or the ``prepared`` one, has a split of fewer windows than
    ``global_batch``."""
    source = prepared or cfg.source
    if source == "synthetic":
        return
    if is_prepared_dataset(source, settings):
        check_trainable(read_metadata(parse_uri(source), settings), global_batch)
        return
    files = resolve_sources(source, settings)
    size = sum(f.size for f in files)
    if size > PRECHECK_MAX_BYTES:
        log.info(
            "%s: %.1f GB of files, more than the driver reads to pre-check windows; the "
            "preparation on the cluster checks them",
            source,
            size / 1e9,
        )
        return
    group = SymbolGroup(cfg, GroupPlan(files=tuple(files)), settings)
    summary = group.load()
    counts = group.window_counts(group.direction())
    check_trainable(
        {
            **counts,
            "calendars": summary["calendars"],
            "splits": summary["splits"],
            "sequence_length": cfg.sequence_length,
            "purge_bars": cfg.purge_bars,
        },
        global_batch,
    )
