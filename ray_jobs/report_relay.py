"""The report relay: one actor that carries the reports of Train runs from their
controllers to the processes that launched them. The Train side (the callback that feeds it,
and ``launch``, which reads a run's channel) is ``ray_jobs.train_adapter``'s."""

from __future__ import annotations

import asyncio
from typing import Any

import ray


def start_report_relay() -> Any:
    """One actor that carries the metrics of every run's reports from the run's Train
    controller to the process that launched it (a Tune trial driver, the final job), each run
    on a channel of its own.

    Ray's ``TuneReportCallback`` does this with a queue actor per trial, which is a Ray worker
    process of its own to start every trial (~0.75 CPU s each on the 2-core reference
    machine); this one lives as long as its owner (the Tune driver, the final job).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(num_cpus=0)(_ReportRelay).options(scheduling_strategy=here).remote()


class _ReportRelay:
    """The actor of ``start_report_relay`` (asyncio: a waiting ``get`` holds up no ``put``)."""

    def __init__(self) -> None:
        self.channels: dict[str, asyncio.Queue] = {}

    def _channel(self, run: str) -> asyncio.Queue:
        return self.channels.setdefault(run, asyncio.Queue())

    async def put(self, run: str, item: Any) -> None:
        self._channel(run).put_nowait(item)

    async def get(self, run: str, timeout_s: float) -> tuple[bool, Any]:
        """``(True, item)``, the run's next item in the order put; ``(False, None)`` when
        none came within ``timeout_s``."""
        try:
            return True, await asyncio.wait_for(self._channel(run).get(), timeout_s)
        except TimeoutError:
            return False, None

    async def close(self, run: str) -> None:
        self.channels.pop(run, None)

    async def open_channels(self) -> int:
        return len(self.channels)
