"""Batch inference on a Ray cluster with Ray Data: ``monolith embed --ray-address``.

    sources listed by the driver (metadata only) ──▶ one item per symbol (its files)
        │  ray.data.from_items: a block per symbol, so every window is complete
        ▼
    map_batches(EmbedSymbols, actor pool): each actor loads the encoder once and runs
        Encoder.embed on its symbols' files (the same code as a local embed)
        ▼
    the driver gathers the embeddings, the report and the drift samples in symbol order

The embeddings equal a local ``embed`` row for row (tests/integration/test_cluster_prepare.py).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import pandas as pd
import ray

from monolith.encoder import EmbedReport, Encoder
from monolith.storage import StorageSettings


class EmbedSymbols:
    """A Ray Data actor: the encoder, loaded once, and one symbol's bars per call."""

    def __init__(self, bundle: str, settings: StorageSettings | None, options: dict) -> None:
        self.encoder = Encoder.load(bundle, settings)
        self.settings, self.options = settings, options

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = []
        for item in batch.to_dict("records"):
            frame = self.encoder.embed(
                item["source"],
                settings=self.settings,
                symbols=frozenset([item["symbol"]]),
                **self.options,
            )
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            payload = {
                "frame": buffer.getvalue(),
                "report": self.encoder.last_report,
                "scaled": self.encoder.last_scaled,
            }
            out.append({"symbol": item["symbol"], "payload": pickle.dumps(payload)})
        return pd.DataFrame(out)


def _items(source: str, settings: StorageSettings | None) -> list[dict[str, Any]]:
    """One item per symbol: the source (a prepared dataset, or the files that hold it)."""
    from monolith.data.ingest import file_symbols, quick_file_symbols
    from monolith.data.prepared import is_prepared_dataset, read_metadata
    from monolith.data.sources import resolve_sources

    if is_prepared_dataset(source, settings):
        return [
            {"symbol": s, "source": source}
            for s in sorted(read_metadata(source, settings)["instruments"])
        ]
    files = resolve_sources(source, settings)
    scan = ray.remote(num_cpus=1)(file_symbols)
    quick = [quick_file_symbols(f, settings) for f in files]
    slow = {i: scan.remote(files[i], settings) for i, q in enumerate(quick) if q is None}
    held = {i: ray.get(ref) for i, ref in slow.items()}
    by_symbol: dict[str, list[str]] = {}
    for i, file in enumerate(files):  # symbols found from metadata, or by a remote scan
        for symbol in quick[i] if quick[i] is not None else held[i]:
            by_symbol.setdefault(symbol, []).append(file.uri)
    # Each symbol's files as a list: Encoder.embed reads them with the symbol filter.
    return [{"symbol": s, "source": uris} for s, uris in sorted(by_symbol.items())]


def embed_on_cluster(
    bundle: str,
    source: str,
    *,
    known: set[str],
    settings: StorageSettings | None = None,
    unknown: str = "error",
    batch_size: int = 1024,
    actors: int | None = None,
) -> tuple[pd.DataFrame, dict, dict[str, np.ndarray]]:
    """Embeddings of ``source`` on the connected cluster (``known``: the bundle's symbols);
    also the report and the drift samples, as a local ``Encoder.embed`` leaves them."""
    from monolith.errors import DataError, MonolithError

    items = _items(source, settings)
    strangers = sorted(i["symbol"] for i in items if i["symbol"] not in known)
    if strangers and unknown == "error":
        raise DataError(
            f"symbol(s) {strangers} are not among the {len(known)} the encoder {bundle} was "
            "trained on: it has no instrument embedding or scaler for them; leave them out, or "
            "pass --skip-unknown"
        )
    items = [i for i in items if i["symbol"] in known]
    if not items:
        raise DataError("no bars of a symbol the encoder knows: nothing to embed")
    free = int(ray.available_resources().get("CPU", 1))
    pool = max(1, min(actors or free, len(items)))
    dataset = ray.data.from_items(
        items,
        override_num_blocks=len(items),
    )
    embedded = dataset.map_batches(
        EmbedSymbols,
        fn_constructor_kwargs={
            "bundle": bundle,
            "settings": settings,
            "options": {"unknown": unknown, "batch_size": batch_size},
        },
        batch_size=1,
        batch_format="pandas",
        concurrency=pool,
        num_cpus=1,
    )
    try:
        rows = embedded.take_all()
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        raise (cause if isinstance(cause, MonolithError) else exc) from None
    frames, report, scaled = [], EmbedReport(skipped_symbols=strangers), {}
    for row in sorted(rows, key=lambda r: r["symbol"]):
        payload = pickle.loads(row["payload"])
        frames.append(pd.read_parquet(io.BytesIO(payload["frame"])))
        report.symbols.update(payload["report"].symbols)
        scaled.update(payload["scaled"])
    frame = pd.concat(frames, ignore_index=True).sort_values(
        ["symbol", "timestamp"], kind="stable", ignore_index=True
    )
    return frame, report.to_dict(), scaled
