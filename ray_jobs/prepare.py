"""Data preparation spread over a Ray cluster: each group of symbols is a Ray actor.

    actors started (one per free CPU) ──▶ files listed (not read) by the driver meanwhile
        │  the actors scan the files (symbols and row counts: Parquet footers, symbol columns)
        │  symbols grouped by rows, one group per actor
        ▼
    SymbolGroup actors (SPREAD over the nodes), each reading only its symbols' files:
        load: read, clean, indicators, splits ──▶ regime_sample ──▶ derive: targets,
        scalers (while the driver fits the HMM) ──▶ finish: regimes, its partitions
        written straight to the output
        │  summaries only (counts, scaler parameters, the HMM fit sample)
        ▼
    driver: instrument map, regime HMM fit, metadata merge, commit (metadata last)

The groups run ``monolith.data.prepare.SymbolGroup``, the same code as the single-process
path, so the result is the same dataset. Used by the tune and final jobs when they prepare an
experiment's data, and by ``monolith data prepare --ray-address``.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

from monolith.config import DataConfig
from monolith.data.prepare import GroupPlan, SymbolGroup, prepare_dataset
from monolith.data.sources import SourceFile
from monolith.errors import MonolithError
from monolith.storage import StorageSettings

log = logging.getLogger(__name__)


def _unwrapped(exc: BaseException) -> BaseException:
    """The platform's own error inside a Ray task error (one line, not a remote traceback)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, MonolithError) else exc


class RayGroupRunner:
    """Runs every group of symbols as a Ray actor of ``cpus_per_group`` CPUs.

    ``slots`` (how many groups) defaults to the CPUs free on the cluster now: every actor
    keeps its rows from ``load`` until ``finish``, so all groups must run at once. The actors
    start (and import what they need) as soon as the runner opens, also scan the files, and
    actors left without a group are released.
    """

    def __init__(self, slots: int | None = None, cpus_per_group: float = 1.0) -> None:
        self.cpus = cpus_per_group
        free = ray.available_resources().get("CPU", 0.0)
        self.slots = slots or max(1, int(free // cpus_per_group))
        self.actors: list[Any] = []
        self.pending: list[Any] = []

    def open(self, cfg: DataConfig, settings: StorageSettings | None) -> None:
        group = ray.remote(num_cpus=self.cpus, max_restarts=0)(SymbolGroup)
        count = 1 if cfg.source == "synthetic" else self.slots
        self.actors = [
            group.options(scheduling_strategy="SPREAD").remote(cfg, None, settings)
            for _ in range(count)
        ]

    def file_symbols(self, files: list[SourceFile]) -> list[dict[str, int]]:
        chunks = [files[i :: len(self.actors)] for i in range(len(self.actors))]
        scanned = self._get(
            [a.scan.remote(c) for a, c in zip(self.actors, chunks, strict=True) if c]
        )
        out: list[dict[str, int]] = [{} for _ in files]
        for i, result in enumerate(scanned):
            out[i :: len(self.actors)] = result
        return out

    def start(self, plans: list[GroupPlan]) -> None:
        for actor in self.actors[len(plans) :]:
            ray.kill(actor)
        self.actors = self.actors[: len(plans)]
        self._get([a.assign.remote(p) for a, p in zip(self.actors, plans, strict=True)])
        log.info("preparing on the cluster: %d group(s) of symbols", len(plans))

    def call(self, method: str, *args: Any) -> list[Any]:
        # An actor runs its calls in the order they were made: this one after any submitted.
        refs = [getattr(actor, method).remote(*args) for actor in self.actors]
        pending, self.pending = self.pending, []
        self._get(pending)
        return self._get(refs)

    def submit(self, method: str, *args: Any) -> None:
        self.pending += [getattr(actor, method).remote(*args) for actor in self.actors]

    @staticmethod
    def _get(refs: list[Any]) -> list[Any]:
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            raise _unwrapped(exc) from None

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def prepare_on_cluster(
    cfg: DataConfig,
    output: str,
    *,
    settings: StorageSettings | None = None,
    overwrite: bool = False,
    slots: int | None = None,
    global_batch: int | None = None,
) -> dict:
    """``prepare_dataset`` with the per-symbol work on the connected Ray cluster."""
    return prepare_dataset(
        cfg,
        output,
        overwrite=overwrite,
        settings=settings,
        runner=RayGroupRunner(slots),
        global_batch=global_batch,
    )
