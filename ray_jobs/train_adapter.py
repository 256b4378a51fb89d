"""The one place that talks to Ray Train: a typed job spec in, a Train run out.

    JobSpec (frozen: base config, prepared data, storage, final spec, logs)
        │  launch(spec, resources, place, hyperparameters)
        ▼
    DataParallelTrainer(TensorflowWorkers()) ── W workers, each worker_loop(spec, hyperparameters):
        │  TF_CONFIG from our backend (no TensorFlow in this process, nor in the Train
        │  controller); MultiWorkerMirroredStrategy; its shard of the prepared rows
        ▼
    every epoch: ray.train.report(metrics, rank 0's trainer checkpoint)
    end of a final run: ray.train.report(test metrics, rank 0's bundle)

``train_loop_config`` carries the hyperparameters only; everything else rides in the frozen
``JobSpec``, bound to the worker function. Tune trials, the final job and the benchmarks all
go through ``launch``; every ``ray.train.report`` is in this module, and it imports nothing of
the platform but the library ``monolith`` (lazily: a process that only launches runs never
loads TensorFlow).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Before Ray Train is imported: its V2 API (a controller and worker group per run), which
# every class below belongs to.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

import ray  # noqa: E402
import ray.train  # noqa: E402
from ray.train.backend import Backend, BackendConfig  # noqa: E402
from ray.train.v2._internal.execution.callback import (  # noqa: E402
    ControllerCallback,
    WorkerGroupCallback,
)
from ray.train.v2.api.callback import UserCallback  # noqa: E402

log = logging.getLogger(__name__)

TASKS = ("trial", "final", "throughput", "noop")
BUNDLE_DIR = "bundle"
STATE_FILE = "state.json"  # what a trainer checkpoint holds (monolith.contrastive.trainer)


# ---- the specs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FinalSpec:
    """A final run: train on train+val, score the test split, write the bundle."""

    best: Mapping[str, Any]  # the flat hyperparameters, published as best_config.json
    run_id: str
    lineage: Mapping[str, Any] = field(default_factory=dict)  # recorded in the manifest


@dataclass(frozen=True)
class JobSpec:
    """Everything a run's workers need besides the hyperparameters."""

    task: str  # one of TASKS
    base_config: Mapping[str, Any]  # MonolithConfig.to_dict(), validated by the driver
    prepared: str = ""  # the prepared dataset: a folder or s3:// prefix
    storage: Mapping[str, Any] = field(default_factory=dict)  # the config's storage: section
    final: FinalSpec | None = None
    # Worker logs (Python, TensorFlow, stdout) go to <logs>/<run name>/worker-<rank>.log; a
    # local folder, or an s3:// prefix (written locally, uploaded when the worker ends).
    # None: the worker's console (Ray forwards it to the driver when asked to).
    logs: str | None = None
    # throughput: {"warmup", "steps", "rounds", "output"} (figures go to a file: Train V2
    # keeps only checkpointed metrics in its Result); noop: {"import_tensorflow": bool}
    bench: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"JobSpec.task = {self.task!r}: one of {TASKS}")
        if (self.task == "final") != (self.final is not None):
            raise ValueError("JobSpec.final is required for, and only for, task 'final'")


@dataclass(frozen=True)
class Resources:
    """The worker group of a run and how its controller watches it."""

    num_workers: int
    per_worker: Mapping[str, float]
    use_gpu: bool = False
    max_failures: int = 0  # worker-group restarts, each from the last checkpoint
    poll_interval_s: float = 0.25  # Ray's default 2 s adds up to a poll per start/report/end
    start_timeout_s: float = 1800.0
    # Ray's preemption watcher (an actor per run) drains runs on nodes being reclaimed
    # (spot GPU pools); a laptop or a non-preemptible node pool does not need it.
    watch_preemption: bool = True
    # A ``start_reservation_watch()`` handle shared by many runs (a Tune experiment's
    # trials), instead of Ray Train's placement-group cleaner actor per run.
    reservation_watch: Any = None


@dataclass(frozen=True)
class RunPlace:
    """Where a run keeps its checkpoints: ``<storage>/<name>``."""

    name: str
    storage: str  # a local folder or an s3:// URI
    keep_checkpoints: int = 1


# ---- the backend: Ray's TensorFlow backend without TensorFlow ----------------------------


def _worker_address() -> str:
    """This worker's node address and a free port for its TensorFlow gRPC server."""
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return f"{ray.util.get_node_ip_address()}:{port}"


def _set_tf_config(addresses: list[str], index: int) -> None:
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    )


class _TensorflowWorkersBackend(Backend):
    def on_start(self, worker_group: Any, backend_config: BackendConfig) -> None:
        if len(worker_group) < 2:
            return  # one worker runs TensorFlow's default strategy: no cluster to describe
        addresses = worker_group.execute(_worker_address)
        ray.get(
            [
                worker_group.execute_single_async(i, _set_tf_config, addresses=addresses, index=i)
                for i in range(len(worker_group))
            ]
        )


@dataclass
class TensorflowWorkers(BackendConfig):
    """What ``ray.train.tensorflow.TensorflowConfig`` does (``TF_CONFIG`` on each worker, rank
    = task index), from a module that does not import TensorFlow: Ray's own package imports
    it when it loads, so every trial driver and Train controller paid its start-up."""

    @property
    def backend_cls(self):
        return _TensorflowWorkersBackend


# ---- launching ---------------------------------------------------------------------------


@functools.cache
def _trainer_class() -> type:
    """Built on first use: a worker, which imports this module for ``worker_loop``, never
    loads the trainer's modules (Ray Data among them)."""
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import (
        PlacementGroupCleanerCallback,
    )
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    class Trainer(DataParallelTrainer):
        """Ray's data-parallel trainer, less two helper actors per run:

        - the Ray Data plumbing when a run has no Ray datasets (ours read their shards
          themselves): Ray's callback starts a DatasetManager actor per run anyway, which
          imports Ray Data (~1.2 CPU s per trial on 2 cores);
        - Ray's placement-group cleaner when the run is watched by a shared
          ``start_reservation_watch()`` (``Resources.reservation_watch``): Ray's starts an
          actor per run that asks the State API every second whether the controller lives,
          and stopping it holds up the run's end by up to a second (the floor's trivial
          trial: 14.3 -> 10.3 s with the shared watch instead, on the 2-core reference
          machine).
        """

        def _create_default_callbacks(self) -> list:
            callbacks = super()._create_default_callbacks()
            watched = any(isinstance(c, _WatchReservation) for c in callbacks)
            return [
                c
                for c in callbacks
                if not (isinstance(c, DatasetsCallback) and not self.datasets)
                and not (isinstance(c, PlacementGroupCleanerCallback) and watched)
            ]

    return Trainer


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

    def watch(self, controller: Any, group: Any) -> None:
        with self._lock:
            self.watched[controller._actor_id.hex()] = (controller, group)

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


class _WatchReservation(ControllerCallback, WorkerGroupCallback):
    """Train callback (runs in the run's controller): hands each worker group's reservation
    to a ``start_reservation_watch()`` actor, and takes it back before Train frees it."""

    def __init__(self, watch: Any) -> None:
        self.watch = watch

    def after_worker_group_start(self, worker_group: Any) -> None:
        state = worker_group.get_worker_group_state()
        controller = ray.get_runtime_context().current_actor
        self.watch.watch.remote(controller, state.placement_group_handle.placement_group)

    def before_worker_group_shutdown(self, worker_group: Any) -> None:
        self.watch.forget.remote(ray.get_runtime_context().get_actor_id())


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


class _RelayReports(UserCallback):
    """Train callback (runs in the run's controller): rank 0's metrics of each report, with
    the path of its checkpoint if it has one, onto the run's channel of a report relay."""

    def __init__(self, relay: Any, channel: str) -> None:
        self.relay, self.channel = relay, channel

    def after_report(self, run_context: Any, metrics: list, checkpoint: Any) -> None:
        if not metrics:
            return
        item = dict(metrics[0])
        if checkpoint is not None:
            item["checkpoint_path"] = checkpoint.path
        # Delivered before the controller goes on: the launcher's end-of-run marker, put
        # once the run is over, comes after every report.
        ray.get(self.relay.put.remote(self.channel, item))


def build_trainer(
    spec: JobSpec,
    resources: Resources,
    place: RunPlace,
    hyperparameters: Mapping[str, Any] | None = None,
    *,
    extra_callbacks: list[Any] | None = None,
) -> Any:
    """The Ray Train trainer of a run, not started."""
    from monolith.filesystems import storage_filesystem
    from monolith.storage import StorageSettings

    # Ray Train hands these from this process to the run's controller and workers.
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(resources.poll_interval_s)
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(resources.start_timeout_s)
    os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "1" if resources.watch_preemption else "0"
    fs, path = storage_filesystem(place.storage, StorageSettings.from_mapping(spec.storage))
    callbacks = list(extra_callbacks or [])
    if resources.reservation_watch is not None:
        callbacks.append(_WatchReservation(resources.reservation_watch))
    return _trainer_class()(
        functools.partial(worker_loop, spec),
        train_loop_config=dict(hyperparameters or {}),
        backend_config=TensorflowWorkers(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.num_workers,
            use_gpu=resources.use_gpu,
            resources_per_worker=dict(resources.per_worker),
        ),
        run_config=ray.train.RunConfig(
            name=place.name,
            storage_path=path,
            storage_filesystem=fs,
            callbacks=callbacks,
            failure_config=ray.train.FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=place.keep_checkpoints),
        ),
    )


def launch(
    spec: JobSpec,
    resources: Resources,
    place: RunPlace,
    hyperparameters: Mapping[str, Any] | None = None,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    relay: Any = None,
) -> Any:
    """Run ``spec`` over ``resources``' workers to its end; returns Ray Train's ``Result``.

    A run named like an earlier one continues from its last checkpoint (Ray Train restores
    it for the workers). ``progress`` is called here, in the caller's thread, with rank 0's
    metrics of every report, in order; they come from the run's controller through
    ``relay`` (a ``start_report_relay()`` handle shared by many runs; None starts one for
    this run).
    """
    if progress is None:
        return build_trainer(spec, resources, place, hyperparameters).fit()
    relay = relay or start_report_relay()
    channel = f"{place.name}/{uuid.uuid4().hex}"
    trainer = build_trainer(
        spec,
        resources,
        place,
        hyperparameters,
        extra_callbacks=[_RelayReports(relay, channel)],
    )
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc
        finally:
            # A relay that is gone (its owner ended) takes no marker: the loop below sees
            # this thread end instead.
            with contextlib.suppress(Exception):
                ray.get(relay.put.remote(channel, _RUN_OVER))

    runner = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    runner.start()
    try:
        while True:
            got, item = ray.get(relay.get.remote(channel, 5.0))
            if got and item == _RUN_OVER:
                break
            if got:
                progress(item)
            elif not runner.is_alive():  # ended without its marker (cannot reach the relay)
                break
    finally:
        relay.close.remote(channel)
    runner.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


_RUN_OVER = "monolith-run-over"  # a launcher's end-of-run marker on its run's channel


def run_trial(hyperparameters: dict[str, Any], static: dict[str, Any]) -> None:
    """One Tune trial: a run of ``hyperparameters`` over ``static["resources"]``' workers.

    The run is named after the trial, so a restarted trial (driver failure or ``--resume``)
    finds its earlier checkpoints and continues from the latest. It lives here, not beside
    the search in ``ray_jobs.tune``: every trial driver imports the module of its function,
    and that one's (Optuna, the storage clients) cost each trial ~0.2 s of CPU for nothing.

    ``static``: ``spec`` (a JobSpec), ``resources``, ``train_storage`` (the runs' root) and
    ``relay`` (the experiment's ``start_report_relay()``) that brings each report to Tune.
    """
    from ray import tune

    place = RunPlace(f"trial-{tune.get_context().get_trial_id()}", static["train_storage"])
    launch(
        static["spec"],
        static["resources"],
        place,
        hyperparameters,
        progress=tune.report,
        relay=static.get("relay"),
    )


def completed_bundle(place: RunPlace, storage: Mapping[str, Any]) -> str | None:
    """The bundle a final run already reported (its last checkpoint), or None.

    A final run's last checkpoint is the bundle, not a trainer state: a re-run of the same
    run id (its publish failed, or was lost) takes it from here instead of resuming.
    """
    from monolith.bundle.schema import MANIFEST_FILE
    from monolith.filesystems import arrow_filesystem
    from monolith.storage import StorageSettings
    from monolith.uri import parse_uri

    location = parse_uri(place.storage, "run storage").join(place.name)
    fs, root = arrow_filesystem(location, StorageSettings.from_mapping(storage))
    import pyarrow.fs as pafs

    try:
        entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return None
    checkpoints = sorted(
        (e.base_name for e in entries if e.type == pafs.FileType.Directory),
        reverse=True,
    )
    for name in checkpoints:
        manifest = f"{root}/{name}/{BUNDLE_DIR}/{MANIFEST_FILE}"
        if name.startswith("checkpoint_") and fs.get_file_info(manifest).type == pafs.FileType.File:
            return str(location.join(name, BUNDLE_DIR))
    return None


def forget_run(place: RunPlace, storage: Mapping[str, Any]) -> None:
    """Remove a run's checkpoints, so its next launch starts afresh."""
    from monolith.filesystems import arrow_filesystem
    from monolith.storage import StorageSettings
    from monolith.uri import parse_uri

    location = parse_uri(place.storage, "run storage").join(place.name)
    fs, root = arrow_filesystem(location, StorageSettings.from_mapping(storage))
    with contextlib.suppress(FileNotFoundError):
        fs.delete_dir(root)


# ---- the workers ---------------------------------------------------------------------------


def worker_loop(spec: JobSpec, hyperparameters: dict[str, Any]) -> None:
    """One Ray Train worker of a run (the function ``launch`` hands Ray Train)."""
    context = ray.train.get_context()
    rank = context.get_world_rank()
    with _worker_logs(spec.logs, context.get_experiment_name(), rank, spec.storage):
        _run_task(spec, hyperparameters, rank, context.get_world_size())


def _run_task(spec: JobSpec, hyperparameters: dict[str, Any], rank: int, world: int) -> None:
    started = time.perf_counter()
    if spec.task == "noop":
        # The floor: what Ray costs for a run of W workers that report once; with
        # bench["import_tensorflow"], what every TensorFlow worker pays before its first op.
        if spec.bench.get("import_tensorflow"):
            import tensorflow  # noqa: F401
        ray.train.report(
            {
                "epoch": 1,
                "elapsed_seconds": time.perf_counter() - started,
                "tensorflow": float("tensorflow" in sys.modules),
            }
        )
        return
    from monolith.training import configure_runtime

    # Ray sets OMP_NUM_THREADS to the CPUs in this worker's resource request.
    configure_runtime(int(float(os.environ.get("OMP_NUM_THREADS", "1"))), world)
    import tensorflow as tf

    from monolith.config import config_from_dict
    from monolith.data.windows import Shard
    from monolith.storage import StorageSettings

    # One pack for every gradient (bytes_per_pack=0): our models are small, so one collective
    # beats overlapping several with the backward pass.
    strategy = (
        tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(bytes_per_pack=0)
        )
        if world > 1
        else tf.distribute.get_strategy()
    )
    cfg = config_from_dict(spec.base_config, "run config").with_hyperparameters(hyperparameters)
    settings = StorageSettings.from_mapping(spec.storage)
    shard = Shard(rank, world)
    if spec.task == "throughput":
        from monolith.training import step_throughput

        figures = step_throughput(
            cfg, spec.prepared, strategy=strategy, settings=settings, shard=shard, **{
                k: spec.bench[k] for k in ("warmup", "steps", "rounds")
            }
        )  # fmt: skip
        if rank == 0:
            Path(spec.bench["output"]).write_text(json.dumps({"world_size": world, **figures}))
        ray.train.report({"epoch": 1, **figures})
        return
    _train(spec, cfg, strategy, settings, shard, started)


def _train(
    spec: JobSpec, cfg: Any, strategy: Any, settings: Any, shard: Any, started: float
) -> None:
    from monolith.training import train_on_prepared, write_final_bundle

    final = spec.final
    with tempfile.TemporaryDirectory(prefix="monolith-worker-") as scratch:
        resume = _restore_dir(Path(scratch))
        resumed_at = 0
        if resume is not None:
            resumed_at = int(json.loads((resume / STATE_FILE).read_text())["epoch"])
        result = train_on_prepared(
            cfg,
            spec.prepared,
            strategy=strategy,
            callbacks=[_EpochReport(cfg.train.epochs, started, resumed_at)],
            checkpoint_dir=resume,
            evaluate_test=final is not None,
            # The final fit trains on train+val for a fixed budget; trials select on val.
            train_split="train+val" if final is not None else "train",
            settings=settings,
            shard=shard,
        )
    if final is None:
        return
    # Every worker reports once more (a report is collective); rank 0's carries the bundle,
    # which the driver verifies and publishes.
    if ray.train.get_context().get_world_rank() == 0:
        with tempfile.TemporaryDirectory(prefix="monolith-final-") as tmp:
            figures = write_final_bundle(
                result,
                cfg,
                spec.prepared,
                Path(tmp, BUNDLE_DIR),
                dict(final.best),
                settings,
                lineage=dict(final.lineage),
            )
            ray.train.report(figures, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        metrics = {k: float(v) for k, v in result.test_metrics.items()}
        ray.train.report({**metrics, "epoch": len(result.rows), "final": 1}, checkpoint=None)


def _restore_dir(scratch: Path) -> Path | None:
    """The latest reported trainer checkpoint, copied next to this worker (None: a fresh
    start)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    target = scratch / "resume"
    checkpoint.to_directory(str(target))
    if not (target / STATE_FILE).is_file():
        from monolith.errors import MonolithError

        # A final run's bundle checkpoint: the driver publishes it instead of relaunching.
        raise MonolithError(
            f"checkpoint {checkpoint.path} holds no trainer state ({STATE_FILE}); it is a "
            "finished run's bundle, not a point to resume training from"
        )
    log.info("worker %d resumes from %s", ray.train.get_context().get_world_rank(), checkpoint)
    return target


class _EpochReport:
    """Epoch callback: every worker reports (Ray Train's report is collective); rank 0
    attaches the trainer checkpoint so a restarted worker group resumes after this epoch."""

    def __init__(self, max_epochs: int, started: float, resumed_at_epoch: int):
        self.max_epochs = max_epochs
        self.resumed_at_epoch = resumed_at_epoch
        self.started = started
        self.epoch_started = started
        self.rank = ray.train.get_context().get_world_rank()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], trainer: Any) -> None:
        now = time.perf_counter()
        cfg = trainer.train_cfg
        patience_out = trainer.wait >= cfg.early_stopping_patience
        report = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        report.update(
            epoch=epoch + 1,  # epochs completed: ASHA's time attribute
            best_epoch=-1 if trainer.best_epoch is None else trainer.best_epoch + 1,
            # The running best of the comparable objective: what Tune, ASHA and TPE rank.
            **{
                f"best_{trainer.eval_cfg.objective}": math.nan
                if trainer.best is None
                else float(trainer.best)
            },
            early_stopped=int(patience_out and epoch + 1 < self.max_epochs),
            epoch_seconds=now - self.epoch_started,
            # Seconds from the worker loop's start to the first report: start-up + epoch 1.
            elapsed_seconds=now - self.started,
            world_size=ray.train.get_context().get_world_size(),
            global_batch=cfg.batch_size,
            samples_per_step=float(trainer.last_samples_per_step or 0),
            loss_windows_gathered=float(trainer.last_gathered_per_step or 0),
            resumed_at_epoch=self.resumed_at_epoch,
        )
        self.epoch_started = now
        if self.rank == 0:
            with tempfile.TemporaryDirectory(prefix="monolith-ckpt-") as tmp:
                trainer.save_checkpoint(tmp)
                ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(report, checkpoint=None)


@contextlib.contextmanager
def _worker_logs(
    logs: str | None, run_name: str, rank: int, storage: Mapping[str, Any]
) -> Iterator[None]:
    """Send this worker's output (Python logging, TensorFlow's C++ log, prints) to its log
    file while the run lasts; on S3 storage it is uploaded when the worker ends."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not logs:
        yield
        return
    from monolith.uri import is_s3_uri, join

    name = f"worker-{rank}.log"
    remote = is_s3_uri(logs)
    folder = Path(tempfile.mkdtemp(prefix="monolith-logs-")) if remote else Path(logs, run_name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    handle = open(path, "a", buffering=1)  # noqa: SIM115  (closed below, after the fds)
    os.dup2(handle.fileno(), 1)
    os.dup2(handle.fileno(), 2)
    root = logging.getLogger()
    handler = logging.StreamHandler(handle)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    previous = root.handlers[:]
    root.handlers = [handler]
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        root.handlers = previous
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        handle.close()
        if remote:
            from monolith.storage import StorageSettings, write_bytes

            with contextlib.suppress(Exception):  # a log is worth less than the run's result
                write_bytes(
                    join(logs, run_name, name),
                    path.read_bytes(),
                    StorageSettings.from_mapping(storage),
                )
