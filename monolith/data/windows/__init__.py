"""Windows over a prepared dataset, as one worker needs them: its shard of the training rows
as a streaming ``tf.data`` pipeline, and fixed evaluation samples as arrays.

A window of length L ending at row ``e`` is valid when rows ``e-L+1 .. e`` belong to the same
symbol, the same split and the same gap-free segment, and the direction target at ``e`` exists.

What a worker holds and reads is ``WindowSource``'s (``source``); the cache that spares
later readers the work that touches every row is ``cache``'s; the element structure of the
pipeline and the samples is ``arrays``'.

Its rooms: ``index`` (where windows may end, shards, a symbol's row layout), ``read``
(partitions), ``cache``, ``arrays`` (rows to arrays, the batch structure), ``tfdata`` (the
training stream) and ``source`` (``WindowSource``, which puts them together).
"""

from monolith.data.prepared import DATASET_DIR, METADATA_FILE, SCALERS_JSON, is_prepared_dataset
from monolith.data.windows.index import WHOLE, Shard, valid_window_ends
from monolith.data.windows.read import load_prepared_frame
from monolith.data.windows.source import WindowSource

__all__ = [
    "DATASET_DIR",
    "METADATA_FILE",
    "SCALERS_JSON",
    "WHOLE",
    "Shard",
    "WindowSource",
    "is_prepared_dataset",
    "load_prepared_frame",
    "valid_window_ends",
]
