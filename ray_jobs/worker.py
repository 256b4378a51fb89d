"""The per-worker loop shared by the tune trials and the final job.

Every Ray Train worker runs ``train_loop_per_worker``: it joins the
``MultiWorkerMirroredStrategy`` that ``TF_CONFIG`` (set by Ray's TensorFlow backend)
describes, reads its shard of the experiment's prepared dataset, resumes from
``ray.train.get_checkpoint()`` when the run is restarted, trains with the library's custom
loop and calls ``ray.train.report`` after every epoch, with a checkpoint from rank 0.

This is the one module that reports to Ray; the library under ``monolith/`` never imports it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train

log = logging.getLogger(__name__)

# Keys the tune driver puts in ``train_loop_config`` next to the flat hyperparameters.
BASE_CONFIG_KEY = "_base_config"
PREPARED_KEY = "_prepared"
STORAGE_KEY = "_storage"
FINAL_KEY = "_final"


def _configure_threads() -> None:
    """Give TensorFlow the CPUs Ray gave this worker, not the whole machine's."""
    import tensorflow as tf

    # Ray sets OMP_NUM_THREADS to the CPUs in this worker's resource request.
    share = max(1, int(float(os.environ.get("OMP_NUM_THREADS", "1"))))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(share)
        tf.config.threading.set_inter_op_parallelism_threads(max(2, share))
    except RuntimeError:  # already initialised in this process (a restarted loop)
        pass


class ReportToRay:
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


def _restore_dir(scratch: Path) -> Path | None:
    """The latest reported checkpoint, copied next to this worker (None on a fresh start)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    target = scratch / "resume"
    checkpoint.to_directory(str(target))
    log.info("worker %d resumes from %s", ray.train.get_context().get_world_rank(), checkpoint)
    return target


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """One worker of a trial (or of the final job)."""
    started = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _configure_threads()
    import tensorflow as tf

    from monolith.config import config_from_dict
    from monolith.data.windows import Shard
    from monolith.storage import StorageSettings
    from monolith.training import train_on_prepared

    flat = {k: v for k, v in loop_config.items() if not k.startswith("_")}
    cfg = config_from_dict(loop_config[BASE_CONFIG_KEY], "trial config").with_hyperparameters(flat)
    # Each worker reads its own shard of the prepared rows straight from the storage.
    prepared = loop_config[PREPARED_KEY]
    settings = StorageSettings.from_mapping(loop_config.get(STORAGE_KEY) or {})
    final = loop_config.get(FINAL_KEY)
    context = ray.train.get_context()
    shard = Shard(context.get_world_rank(), context.get_world_size())
    # TF_CONFIG comes from Ray's TensorFlow backend; one worker needs no collective.
    strategy = (
        tf.distribute.MultiWorkerMirroredStrategy()
        if context.get_world_size() > 1
        else tf.distribute.get_strategy()
    )
    with tempfile.TemporaryDirectory(prefix="monolith-worker-") as scratch:
        resume = _restore_dir(Path(scratch))
        resumed_at = 0
        if resume is not None:
            resumed_at = int(json.loads((resume / "state.json").read_text())["epoch"])
        result = train_on_prepared(
            cfg,
            prepared,
            strategy=strategy,
            callbacks=[ReportToRay(cfg.train.epochs, started, resumed_at)],
            checkpoint_dir=resume,
            evaluate_test=final is not None,
            # The final fit trains on train+val for a fixed budget; trials select on val.
            train_split="train+val" if final is not None else "train",
            settings=settings,
            shard=shard,
        )
    if final is not None:
        from ray_jobs.train_final import final_report_others, write_final_bundle

        if context.get_world_rank() == 0:
            write_final_bundle(result, cfg, prepared, final, settings)
        else:
            final_report_others(result)
