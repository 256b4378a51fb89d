"""Files -> canonical frame -> features -> purged splits -> regimes -> scalers -> a prepared dataset.

The work is split by what it needs to see:

- per symbol (``SymbolGroup``): read and clean its rows, TA-Lib indicators, gap segments,
  purged splits, its share of the regime-HMM fit sample, then (once the HMM is fitted)
  regime decoding, SL/TP levels, the probe targets (``direction`` and the forward targets,
  ``monolith.data.features.forward_targets``), its scaler, and writing its partition;
- central, on small summaries only: the instrument map (every symbol, sorted), the regime HMM
  fitted on the pooled sample (``monolith.data.features.regime_fit_quotas``: every train row
  up to ``data.hmm_fit_max_rows``, else a documented deterministic subsample), and the merged
  metadata, scalers and commit.

``prepare_dataset`` runs the groups in this process (one group holding every symbol), or
through a ``GroupRunner`` that spreads groups of symbols over processes (``ray_jobs.prepare``
runs each group as a Ray actor). Both fit the same HMM on the same sample and produce the same
dataset; only ``timings`` in the metadata differ. Rows never pass through the central step.

The output (a local folder or an ``s3://`` prefix, layout in ``monolith.data.prepared``) is
complete only when its metadata file exists, which is written last: a local folder is built
in a temporary sibling and renamed into place; on S3 the partitions go straight to the prefix
and a failure removes what was written.

Its rooms: ``group`` (one group's work), ``runner`` (running groups, planning them),
``dataset`` (``prepare_dataset`` and the central steps), ``metadata`` (merging the groups'
summaries), ``output`` (staging and commit), ``partitions`` (writing Parquet), ``process``
(resource use for the timings).
"""

from monolith.data.prepare.dataset import (
    DRIFT_REFERENCE_ROWS,
    drift_reference_bytes,
    drift_reference_quotas,
    prepare_dataset,
)
from monolith.data.prepare.group import GroupPlan, SymbolGroup, restate_gaps
from monolith.data.prepare.metadata import merge_metadata
from monolith.data.prepare.partitions import write_partitions
from monolith.data.prepare.runner import GroupRunner, InProcessRunner, plan_groups

__all__ = [
    "DRIFT_REFERENCE_ROWS",
    "GroupPlan",
    "GroupRunner",
    "InProcessRunner",
    "SymbolGroup",
    "drift_reference_bytes",
    "drift_reference_quotas",
    "merge_metadata",
    "plan_groups",
    "prepare_dataset",
    "restate_gaps",
    "write_partitions",
]
