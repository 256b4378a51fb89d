"""The reservation watch: one actor that frees the worker reservations of Train runs whose
controller died without freeing them. The Train side (the callback that hands each run's
reservation to it) is ``ray_jobs.train_adapter``'s; runs get the watch through
``Resources.reservation_watch``."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray

log = logging.getLogger(__name__)


def start_reservation_watch(interval_s: float = 0.5) -> Any:
    """One actor that frees the worker reservations of every run it is given (through
    ``Resources.reservation_watch``) whose Train controller dies without freeing them.

    Tune ends a trial by ending its driver process, and with it the Train controller it owns,
    often while the run is still shutting down (ASHA stops a trial at its last epoch too). Ray
    keeps a placement group that a dead actor of a live job created, so without a watch its
    CPUs stay reserved and the next trial waits for them. It lives as long as its owner (the
    Tune driver) and checks each watched controller every ``interval_s`` seconds.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return (
        ray.remote(num_cpus=0)(_ReservationWatch)
        .options(scheduling_strategy=here)
        .remote(interval_s)
    )


class _ReservationWatch:
    """The actor of ``start_reservation_watch``."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.watched: dict[str, tuple[Any, Any]] = {}  # controller id -> (handle, group)
        self.freed = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="reservation-watch", daemon=True).start()

    def watch(self, controller: Any, group: Any, controller_id: str) -> None:
        with self._lock:
            self.watched[controller_id] = (controller, group)

    def forget(self, controller_id: str) -> None:
        with self._lock:
            self.watched.pop(controller_id, None)

    def status(self) -> dict[str, int]:
        with self._lock:
            return {"watched": len(self.watched), "freed": self.freed}

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            with self._lock:
                watched = list(self.watched.items())
            for controller_id, (controller, group) in watched:
                try:
                    self._check(controller_id, controller, group)
                except Exception as exc:  # one bad look must not end the watch
                    log.warning("reservation watch: %s", exc)

    def _check(self, controller_id: str, controller: Any, group: Any) -> None:
        from ray.exceptions import GetTimeoutError, RayActorError
        from ray.util.placement_group import remove_placement_group

        try:
            ray.get(controller.__ray_ready__.remote(), timeout=10)
            return
        except GetTimeoutError:
            return  # busy, not gone
        except RayActorError:
            pass
        with self._lock:
            self.watched.pop(controller_id, None)
        if ray.util.placement_group_table(group).get("state") == "REMOVED":
            return  # Train freed it on its way out
        remove_placement_group(group)
        log.info("freed the reservation of a run whose controller ended")
        with self._lock:
            self.freed += 1
