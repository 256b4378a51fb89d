"""Data preparation spread over a Ray cluster: each group of symbols is a Ray actor.

    files (listed, not read) ──▶ file_symbols: one Ray task per file (symbols, row counts)
        │  symbols grouped by rows, one group per free CPU
        ▼
    SymbolGroup actors (SPREAD over the nodes), each reading only its symbols' files:
        load: read, clean, indicators, splits ──▶ regime_sample ──▶ finish: regimes,
        targets, scalers, its partitions written straight to the output
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


def _file_symbols(file: SourceFile, settings: StorageSettings | None) -> dict[str, int]:
    from monolith.data.ingest import file_symbols

    return file_symbols(file, settings)


def _unwrapped(exc: BaseException) -> BaseException:
    """The platform's own error inside a Ray task error (one line, not a remote traceback)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, MonolithError) else exc


class RayGroupRunner:
    """Runs every group of symbols as a Ray actor of ``cpus_per_group`` CPUs.

    ``slots`` (how many groups) defaults to the CPUs free on the cluster now: every actor
    keeps its rows from ``load`` until ``finish``, so all groups must run at once.
    """

    def __init__(self, slots: int | None = None, cpus_per_group: float = 1.0) -> None:
        self.cpus = cpus_per_group
        free = ray.available_resources().get("CPU", 0.0)
        self.slots = slots or max(1, int(free // cpus_per_group))
        self.actors: list[Any] = []

    def file_symbols(
        self, files: list[SourceFile], settings: StorageSettings | None
    ) -> list[dict[str, int]]:
        scan = ray.remote(num_cpus=self.cpus, max_retries=2)(_file_symbols)
        return self._get([scan.remote(f, settings) for f in files])

    def start(
        self, cfg: DataConfig, plans: list[GroupPlan], settings: StorageSettings | None
    ) -> None:
        group = ray.remote(num_cpus=self.cpus, max_restarts=0)(SymbolGroup)
        self.actors = [
            group.options(scheduling_strategy="SPREAD", name=None).remote(cfg, plan, settings)
            for plan in plans
        ]
        log.info("preparing on the cluster: %d group(s) of symbols", len(plans))

    def call(self, method: str, *args: Any) -> list[Any]:
        return self._get([getattr(actor, method).remote(*args) for actor in self.actors])

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
) -> dict:
    """``prepare_dataset`` with the per-symbol work on the connected Ray cluster."""
    return prepare_dataset(
        cfg, output, overwrite=overwrite, settings=settings, runner=RayGroupRunner(slots)
    )
