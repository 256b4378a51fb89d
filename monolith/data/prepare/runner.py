"""Running the groups: the runner protocol, the in-process runner, and how symbols are
planned into groups (``ray_jobs.prepare`` runs each group as a Ray actor instead)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from monolith.config import DataConfig
from monolith.data.ingest import quick_file_symbols
from monolith.data.prepare.group import GroupPlan, SymbolGroup
from monolith.data.sources import SourceFile
from monolith.storage import StorageSettings


class GroupRunner(Protocol):
    """Runs ``SymbolGroup`` work for a list of plans (in this process, or over a cluster)."""

    slots: int  # how many groups it can run at once

    def open(self, cfg: DataConfig, settings: StorageSettings | None) -> None:
        """Get ready (a cluster starts its group processes, which warm up meanwhile)."""

    def file_symbols(self, files: list[SourceFile]) -> list[dict[str, int]]:
        """Per file, the symbols it holds and their row counts."""

    def start(self, plans: list[GroupPlan]) -> None:
        """One group per plan (at most ``slots``)."""

    def call(self, method: str, *args: Any) -> list[Any]:
        """The same ``SymbolGroup`` method on every group; results in plan order."""

    def submit(self, method: str, *args: Any) -> None:
        """Start the same method on every group without waiting; a later ``call`` runs after
        it (and raises its errors)."""

    def close(self) -> None: ...


class InProcessRunner:
    """Every group in this process, one after the other (the single-process path)."""

    slots = 1

    def __init__(self) -> None:
        self.cfg: DataConfig | None = None
        self.settings: StorageSettings | None = None
        self.groups: list[SymbolGroup] = []

    def open(self, cfg: DataConfig, settings: StorageSettings | None) -> None:
        self.cfg, self.settings = cfg, settings

    def file_symbols(self, files: list[SourceFile]) -> list[dict[str, int]]:
        return SymbolGroup(self.cfg, None, self.settings).scan(files)

    def start(self, plans: list[GroupPlan]) -> None:
        self.groups = [SymbolGroup(self.cfg, plan, self.settings) for plan in plans]

    def call(self, method: str, *args: Any) -> list[Any]:
        return [getattr(group, method)(*args) for group in self.groups]

    def submit(self, method: str, *args: Any) -> None:
        self.call(method, *args)

    def close(self) -> None:
        self.groups = []


def plan_groups(
    files: list[SourceFile], per_file: list[dict[str, int]], n_groups: int
) -> list[GroupPlan]:
    """Symbols spread over at most ``n_groups`` groups of near-equal rows (largest first to
    the lightest group); each group reads the files that hold any of its symbols."""
    rows: dict[str, int] = {}
    for counts in per_file:
        for symbol, n in counts.items():
            rows[symbol] = rows.get(symbol, 0) + int(n)
    n_groups = max(1, min(n_groups, len(rows)))
    loads = [0] * n_groups
    members: list[list[str]] = [[] for _ in range(n_groups)]
    for symbol in sorted(rows, key=lambda s: (-rows[s], s)):
        lightest = min(range(n_groups), key=lambda g: (loads[g], g))
        members[lightest].append(symbol)
        loads[lightest] += rows[symbol]
    plans = []
    for group in members:
        wanted = set(group)
        group_files = tuple(f for f, c in zip(files, per_file, strict=True) if wanted & set(c))
        plans.append(GroupPlan(files=group_files, symbols=tuple(sorted(group))))
    return plans


def scan_files(
    files: list[SourceFile], runner: GroupRunner, settings: StorageSettings | None
) -> list[dict[str, int]]:
    """Per file, its symbols and rows: from metadata here (Parquet footers, a CSV's first
    bytes; no rows), and by the groups where a symbol column must be read."""
    with ThreadPoolExecutor(8) as pool:
        quick = list(pool.map(lambda f: quick_file_symbols(f, settings), files))
    todo = [f for f, q in zip(files, quick, strict=True) if q is None]
    scanned = iter(runner.file_symbols(todo) if todo else [])
    return [q if q is not None else next(scanned) for q in quick]
