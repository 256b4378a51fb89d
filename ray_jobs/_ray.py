"""What the Ray entrypoints share: joining the cluster and addressing experiment storage."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from monolith.errors import ConfigError

log = logging.getLogger(__name__)


def connect(
    local_cpus: int | None = None, log_to_driver: bool = True, address: str | None = None
) -> str:
    """Join the Ray cluster this job runs on, or start a local one when there is none.

    Under ``ray job submit`` Ray sets ``RAY_ADDRESS`` to the cluster's GCS address. A
    dashboard URL there means the caller meant to submit a job, not to run one here.
    """
    import ray

    explicit = address is not None
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address.startswith(("http://", "https://")):
        where = "--ray-address" if explicit else "RAY_ADDRESS"
        raise ConfigError(
            f"{where}={address} is a dashboard URL: submit the job to it with "
            "`make tune-cluster` (ray job submit), or give the cluster's GCS address "
            "(host:6379, 'auto' on a node) or ray://host:10001"
        )
    if ray.is_initialized():
        return "already connected"
    # Ray's own INFO lines (where the dashboard is, ...) only when the job's logs are wanted.
    level = logging.INFO if log_to_driver else logging.WARNING
    if address:
        ray.init(address=address, log_to_driver=log_to_driver, logging_level=level)
        return address
    if not log_to_driver:
        # Ray 2.60 turns token auth on for a local cluster and says so at every start; that
        # is the point (README: Token auth), not news.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
    # Embedded default: a fresh local single-node cluster on the loopback interface (never
    # one recorded by `ray start` on this machine: address="local"). Its dashboard serves the
    # State API that Ray Train's placement-group cleaner queries; naming it here (inherited
    # by every worker) keeps the cleaner from scanning the machine for "the" cluster.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(
        address="local",
        num_cpus=local_cpus,
        _node_ip_address="127.0.0.1",
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        log_to_driver=log_to_driver,
        logging_level=level,
    )
    return "local"


def run_entrypoint(parser: Any, run: Any, argv: list[str] | None = None) -> int:
    """``main`` of a Ray job: parse, run, and always leave promptly.

    A ``MonolithError`` is one ``error:`` line and exit code 2; an unexpected exception is
    printed in full and exits 1. Either way the Ray instance this process started or joined
    is shut down first, so no background thread keeps a failed job alive.
    """
    import sys
    import traceback

    from monolith.errors import MonolithError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except MonolithError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("error: the job failed unexpectedly (traceback above)", file=sys.stderr)
        return 1
    finally:
        shutdown()


def shutdown() -> None:
    """Disconnect from (or stop) the Ray instance of this process, if any."""
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            ray.shutdown()
        except Exception as exc:  # leaving matters more than a clean goodbye
            log.warning("ray.shutdown failed: %s", exc)


def release_orphaned_reservations() -> int:
    """Remove placement groups left by jobs that are no longer running; returns how many.

    A driver killed at the wrong moment (between a Train run reserving its workers and Ray
    Train's cleaner learning of the reservation) leaves a reservation nobody owns; on a
    small cluster the next trial, e.g. after ``--resume``, would wait for it forever.
    """
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group
    from ray.util.state import list_jobs, list_placement_groups

    try:
        live = {j.job_id for j in list_jobs(limit=10_000) if j.status in ("RUNNING", "PENDING")}
        live.add(ray.get_runtime_context().get_job_id())
        groups = list_placement_groups(detail=True, limit=10_000)
    except Exception as exc:  # the State API is an optimisation here, never a blocker
        log.warning("could not list placement groups (%s); orphaned reservations stay", exc)
        return 0
    freed = 0
    for group in groups:
        if (
            group.state in ("CREATED", "PENDING", "RESCHEDULING")
            and not group.is_detached
            and group.creator_job_id not in live
        ):
            remove_placement_group(
                PlacementGroup(ray.PlacementGroupID.from_hex(group.placement_group_id))
            )
            freed += 1
    if freed:
        log.warning("removed %d placement group(s) left by jobs that are gone", freed)
    return freed


class ReservationJanitor:
    """While a tune runs: removes this job's placement groups that no actor uses any more.

    Tune stops a trial by ending its driver process. Ray Train's controller, owned by that
    process, can see its workers die first and, within its restart budget, reserve a new
    worker group in the instant before it is killed itself. Ray keeps a reservation made by
    an actor it already counts as dead: it holds its CPUs for the rest of the job, and on a
    cluster that fits one trial the next trial waits for them until its start timeout (seen
    here: a 2-worker trial's group left reserved when Tune stopped the trial at its last
    epoch; the next trial waited 14 min until stopped). A reservation of this job that is
    CREATED, holds no actor, and is still so one look later (``interval_s``) is such a
    leftover: a live controller or Tune places its actors as soon as the group is ready.
    """

    def __init__(self, interval_s: float = 15.0) -> None:
        self.interval_s = interval_s
        self.removed = 0
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ReservationJanitor:
        self._thread = threading.Thread(target=self._run, name="reservation-janitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 30)

    def _run(self) -> None:
        warned = False
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep()
            except Exception as exc:  # the State API is an optimisation here, never a blocker
                # Once, not every look: a cluster without the State API would fill the console.
                if not warned:
                    log.warning("could not look for unused placement groups (%s); will retry", exc)
                    warned = True

    def sweep(self) -> int:
        """One look: remove what was unused at the previous look and still is; returns how
        many were removed."""
        import ray
        from ray.util.placement_group import PlacementGroup, remove_placement_group
        from ray.util.state import list_actors, list_placement_groups

        job = ray.get_runtime_context().get_job_id()
        groups = list_placement_groups(
            filters=[("creator_job_id", "=", job), ("state", "=", "CREATED")],
            detail=True,
            limit=10_000,
        )
        unused = {
            g.placement_group_id
            for g in groups
            if not g.is_detached
            and not list_actors(
                filters=[
                    ("placement_group_id", "=", g.placement_group_id),
                    ("state", "!=", "DEAD"),
                ],
                limit=1,
            )
        }
        stale = unused & self._seen
        for group_id in sorted(stale):
            remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group_id)))
            log.warning(
                "removed placement group %s: reserved by a stopped trial, used by no actor",
                group_id,
            )
        self._seen = unused - stale
        self.removed += len(stale)
        return len(stale)


def check_capacity(need: dict[str, float], what: str) -> None:
    """Fail now, clearly, when the cluster can never fit ``need`` at once (a Train run
    would otherwise wait forever for its workers)."""
    import ray

    have = ray.cluster_resources()
    short = {k: (v, have.get(k, 0.0)) for k, v in need.items() if have.get(k, 0.0) + 1e-9 < v}
    if short:
        detail = ", ".join(f"{k}: needs {n:g}, cluster has {h:g}" for k, (n, h) in short.items())
        raise ConfigError(f"{what} cannot be scheduled on this cluster ({detail})")
