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
loads TensorFlow). Every use of Ray's private API is in one section below, each with why.

Beside it, each on its own: the actors runs share (``ray_jobs.report_relay``,
``ray_jobs.reservation_watch``), a Tune trial's driver (``ray_jobs.trial``) and a final
run's checkpoints (``ray_jobs.run_checkpoints``). The worker side and the benchmarks' tasks
stay here: they report to Ray Train, and every report is in this module.
"""

from __future__ import annotations

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
from typing import TYPE_CHECKING, Any

# Before Ray Train is imported: its V2 API (a controller and worker group per run), which
# every class below belongs to.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

import ray  # noqa: E402
import ray.train  # noqa: E402
from ray.train.backend import Backend, BackendConfig  # noqa: E402
from ray.train.v2.api.callback import UserCallback  # noqa: E402

if TYPE_CHECKING:
    from monolith.config import MonolithConfig

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
    # The run's config, validated by the driver; a mapping (``MonolithConfig.to_dict()``)
    # is parsed here, so the workers always receive the typed config.
    base_config: MonolithConfig | Mapping[str, Any]
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
        if isinstance(self.base_config, Mapping):
            from monolith.config import config_from_dict

            typed = config_from_dict(dict(self.base_config), "run config")
            object.__setattr__(self, "base_config", typed)  # frozen: set once, here


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


# ---- Ray's private API: every use of it, here --------------------------------------------
# Ray Train V2 has no public hook for what these do; a Ray upgrade that moves them breaks here
# and only here. The controller's and worker group's callback bases are internal (Train V2
# exports only ``UserCallback``, which sees reports, not the worker group's start and end).
from ray.train.v2._internal.execution.callback import (  # noqa: E402
    ControllerCallback,
    WorkerGroupCallback,
)


@functools.cache
def _trainer_class() -> type:
    """Built on first use: a worker, which imports this module for ``worker_loop``, never
    loads the trainer's modules (Ray Data among them)."""
    # Internal: the default callbacks' classes, and the hook that lists them
    # (``_create_default_callbacks``): the only way to leave the two helper actors below out.
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


class _WatchReservation(ControllerCallback, WorkerGroupCallback):
    """Train callback (runs in the run's controller): hands each worker group's reservation
    to a ``start_reservation_watch()`` actor, and takes it back before Train frees it."""

    def __init__(self, watch: Any) -> None:
        self.watch = watch

    def after_worker_group_start(self, worker_group: Any) -> None:
        # The worker group's reservation: internal state, with no public accessor.
        state = worker_group.get_worker_group_state()
        context = ray.get_runtime_context()
        self.watch.watch.remote(
            context.current_actor,
            state.placement_group_handle.placement_group,
            context.get_actor_id(),
        )

    def before_worker_group_shutdown(self, worker_group: Any) -> None:
        self.watch.forget.remote(ray.get_runtime_context().get_actor_id())


def experiment_stopper(tuner: Any) -> Any:
    """The stopper a Tune experiment runs with. A restored Tuner runs with the one pickled
    with the experiment, not one its caller built, and only the Tuner's internal
    ``_local_tuner`` holds it (the public Tuner has no accessor for its run config)."""
    local = getattr(tuner, "_local_tuner", None)
    return local.get_run_config().stop if local is not None else None


# ---- launching ---------------------------------------------------------------------------


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
    ``relay`` (a ``ray_jobs.report_relay.start_report_relay()`` handle, which many runs may
    share).
    """
    if progress is None:
        return build_trainer(spec, resources, place, hyperparameters).fit()
    if relay is None:
        raise ValueError("launch: progress needs a relay (ray_jobs.report_relay)")
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
    cfg = spec.base_config.with_hyperparameters(hyperparameters)
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
