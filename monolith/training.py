"""One training run on a prepared dataset: windows -> trainer -> metrics -> bundle.

The same function serves the single-process CLI (``monolith train``) and every Ray Train
worker (which passes its ``MultiWorkerMirroredStrategy`` and callbacks): the library never
imports Ray.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monolith.bundle import BEST_CONFIG_FILE, write_bundle
from monolith.config import MonolithConfig
from monolith.data.windows import WHOLE, Shard, WindowSource
from monolith.errors import DataError
from monolith.storage import StorageSettings

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    trainer: Any  # ContrastiveTrainer
    source: WindowSource
    rows: list[dict[str, float]]  # one per epoch
    best_epoch: int | None
    metrics: dict[str, float]  # validation metrics of the best (restored) epoch
    test_metrics: dict[str, float]


def train_dataset_fn(source: WindowSource, global_batch: int, seed: int):
    """The per-worker training stream: this worker's windows, per-replica batches, repeated.

    A source loaded for one shard per worker already holds only this worker's rows; an
    unsharded source is split over the input pipelines by window.
    """

    def dataset_fn(context):
        if context is None:
            return source.dataset(global_batch, seed=seed)
        batch = context.get_per_replica_batch_size(global_batch)
        pipelines, pipeline = context.num_input_pipelines, context.input_pipeline_id
        if source.shard.count == pipelines:
            if source.shard.index != pipeline:
                raise DataError(
                    f"input pipeline {pipeline} was given the rows of shard {source.shard.index}"
                )
            return source.dataset(batch, seed=seed)
        if source.shard.count == 1:
            return source.dataset(batch, seed=seed, num_shards=pipelines, shard_index=pipeline)
        raise DataError(
            f"the source holds shard {source.shard.index} of {source.shard.count}, but training "
            f"runs {pipelines} input pipeline(s)"
        )

    return dataset_fn


def window_source(
    cfg: MonolithConfig,
    prepared: str | Path,
    *,
    settings: StorageSettings | None = None,
    shard: Shard = WHOLE,
    train_split: str = "train",
    evaluate_test: bool = True,
) -> WindowSource:
    """What one worker loads for a run: its shard of ``train_split``, the fixed val sample
    (every epoch), the probes' train sample, and the test sample when it will be scored."""
    samples = {"val": cfg.eval.max_windows, "train": cfg.eval.probe_max_windows}
    if evaluate_test:
        samples["test"] = cfg.eval.max_windows
    return WindowSource(
        prepared,
        sequence_length=cfg.data.sequence_length,
        settings=settings,
        shard=shard,
        fit_split=train_split,
        samples=samples,
    )


def evaluate_split(trainer: Any, source: WindowSource, split: str, probe_data: Any) -> dict:
    """The comparable metrics on ``split`` (e.g. the held-out test split), prefixed by it."""
    from monolith.evaluate import run_evaluator

    # Every worker scores the whole split on its own (no collective after training).
    metrics = run_evaluator(trainer, source.arrays(split), probe_data, shared=False)(trainer.model)
    return {f"{split}_{k.removeprefix('val_')}": v for k, v in metrics.items()}


def train_on_prepared(
    cfg: MonolithConfig,
    prepared_dir: str | Path,
    *,
    strategy: Any = None,
    callbacks: Iterable[Any] = (),
    checkpoint_dir: str | Path | None = None,
    evaluate_test: bool = True,
    source: WindowSource | None = None,
    train_split: str = "train",
    settings: StorageSettings | None = None,
    shard: Shard = WHOLE,
) -> TrainResult:
    """Train ``cfg`` on a prepared dataset under ``strategy`` (default: this process).

    ``checkpoint_dir``, when it holds a trainer checkpoint, is restored first so a restarted
    worker continues where it stopped.

    ``train_split="train+val"`` is the final fit: the validation windows join training, so
    validation can no longer choose anything: no early stopping, no best-epoch restore, the
    model is the last epoch's (per-epoch validation metrics are then in-sample, reported
    for monitoring only). The test split stays held out either way.
    """
    from monolith.contrastive.trainer import ContrastiveTrainer
    from monolith.evaluate import run_evaluator

    source = source or window_source(
        cfg,
        prepared_dir,
        settings=settings,
        shard=shard,
        train_split=train_split,
        evaluate_test=evaluate_test,
    )
    trainer = ContrastiveTrainer(
        cfg.model, cfg.train, cfg.eval, source.spec, strategy=strategy, evaluation=run_evaluator
    )
    if checkpoint_dir is not None and (Path(checkpoint_dir) / "state.json").is_file():
        trainer.restore_checkpoint(checkpoint_dir)
        log.info("resumed from %s at epoch %d", checkpoint_dir, trainer.epoch)
    final_fit = train_split != "train"
    steps = source.steps_per_epoch(cfg.train.batch_size)
    probe_data = source.arrays("train")
    history = trainer.fit(
        train_dataset_fn(source, cfg.train.batch_size, cfg.train.seed),
        steps,
        source.arrays("val"),
        probe_data=probe_data,
        callbacks=callbacks,
        select_on_validation=not final_fit,
    )
    best = (
        history.best_epoch if not final_fit else (len(history.rows) - 1 if history.rows else None)
    )
    rows = history.rows
    metrics = dict(rows[best]) if best is not None and best < len(rows) else dict(rows[-1])
    test_metrics = evaluate_split(trainer, source, "test", probe_data) if evaluate_test else {}
    return TrainResult(trainer, source, rows, best, metrics, test_metrics)


def bundle_result(
    result: TrainResult,
    cfg: MonolithConfig,
    prepared_dir: str | Path,
    output: str | Path,
    *,
    extra_json: dict[str, Any] | None = None,
    overwrite: bool = False,
    settings: StorageSettings | None = None,
    lineage: dict[str, Any] | None = None,
) -> Path:
    """Write the artifact bundle of a finished run."""
    model_config = {
        "hyperparameters": cfg.hyperparameters(),
        "config": cfg.to_dict(),
        "input_spec": result.source.spec.to_dict(),
        "global_batch_size": cfg.train.batch_size,
        "best_epoch": result.best_epoch,
    }
    metrics = {**result.metrics, **result.test_metrics}
    extra = {"test_metrics.json": result.test_metrics, **(extra_json or {})}
    return write_bundle(
        output,
        model=result.trainer.model,
        model_config=model_config,
        prepared_dir=prepared_dir,
        history=result.rows,
        metrics=metrics,
        extra_json=extra,
        overwrite=overwrite,
        settings=settings,
        lineage=lineage,
    )


FINGERPRINT_WINDOWS = 128
FINGERPRINT_FILE = "embedding_fingerprint.json"


def embedding_fingerprint(result: TrainResult) -> dict[str, float]:
    """Summary of the trained model's latent embeddings of the first test windows, so a
    consumer can check that a pulled bundle embeds exactly as the model that was trained."""
    import numpy as np

    from monolith.model.build import encoder_from

    features, _ = result.source.arrays("test", FINGERPRINT_WINDOWS)
    latent = np.asarray(encoder_from(result.trainer.model)(features, training=False))
    return {
        "embedding_sum": float(latent.astype(np.float64).sum()),
        "embedding_abs_sum": float(np.abs(latent.astype(np.float64)).sum()),
    }


def fingerprint_windows(result: TrainResult) -> list[dict[str, Any]]:
    """The fingerprint's windows, by symbol and last bar, with each one's latent vector."""
    import numpy as np
    import pandas as pd

    from monolith.model.build import encoder_from

    features, targets = result.source.arrays("test", FINGERPRINT_WINDOWS)
    latent = np.asarray(encoder_from(result.trainer.model)(features, training=False))
    names = {i: s for s, i in result.source.metadata["instruments"].items()}
    return [
        {
            "symbol": names[int(i)],
            "end": pd.Timestamp(int(t), tz="UTC").isoformat(),
            "latent": [float(x) for x in row],
        }
        for i, t, row in zip(features["instrument_input"], targets["end_time"], latent, strict=True)
    ]


def write_final_bundle(
    result: TrainResult,
    cfg: MonolithConfig,
    prepared: str | Path,
    output: str | Path,
    best: dict[str, Any],
    settings: StorageSettings | None = None,
    lineage: dict[str, Any] | None = None,
) -> dict[str, float]:
    """The final run's bundle (with the best config it trained, and the fingerprint of its
    first test windows' embeddings; ``lineage`` goes into the manifest) at ``output``;
    returns the run's last figures: test metrics, epochs, the fingerprint."""
    fingerprint = embedding_fingerprint(result)
    bundle_result(
        result,
        cfg,
        prepared,
        output,
        extra_json={
            BEST_CONFIG_FILE: best,
            FINGERPRINT_FILE: {
                "test_windows": FINGERPRINT_WINDOWS,
                **fingerprint,
                "windows": fingerprint_windows(result),
            },
        },
        settings=settings,
        lineage=lineage,
    )
    metrics = {k: float(v) for k, v in result.test_metrics.items()}
    return {**metrics, "epoch": len(result.rows), "final": 1, **fingerprint}


def configure_runtime(cpus: int, workers: int = 1) -> None:
    """Give TensorFlow the CPUs this process was given, not the whole machine's.

    Grappler's graph rewrites are switched off on CPU-only processes of a multi-worker run or
    with one CPU. Measured on the 2-core reference machine: 2 workers x 1 CPU, they cost each
    worker ~3 s of start-up per run and ~10% of windows/s; 1 worker x 1 CPU (the laptop's
    trials), ~2 s of start-up (warm-up 6.5-6.7 s on, 3.9-4.7 s off) for the same windows/s
    within noise (1290-1339 on, 1270-1299 off). One process with several CPUs, or a worker
    with a GPU, keeps them (one process x 2 CPUs ran ~5% faster with them).
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, cpus))
        tf.config.threading.set_inter_op_parallelism_threads(max(2, cpus))
    except RuntimeError:  # already initialised in this process (a restarted loop)
        pass
    if (workers > 1 or cpus <= 1) and not tf.config.list_physical_devices("GPU"):
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


def step_throughput(
    cfg: MonolithConfig,
    prepared: str | Path,
    *,
    strategy: Any = None,
    settings: StorageSettings | None = None,
    shard: Shard = WHOLE,
    warmup: int = 5,
    steps: int = 20,
    rounds: int = 3,
) -> dict[str, float]:
    """Optimizer steps per second of ``cfg`` on a prepared dataset, nothing else (no
    evaluation): ``rounds`` timed rounds of ``steps`` after ``warmup`` untimed steps."""
    import statistics
    import time

    from monolith.contrastive.trainer import ContrastiveTrainer

    source = WindowSource(
        prepared, sequence_length=cfg.data.sequence_length, settings=settings, shard=shard
    )
    trainer = ContrastiveTrainer(cfg.model, cfg.train, cfg.eval, source.spec, strategy=strategy)
    iterator = trainer.make_iterator(train_dataset_fn(source, cfg.train.batch_size, cfg.train.seed))
    started = time.perf_counter()
    trainer.train_steps(iterator, warmup)  # tracing + first steps
    warmup_s = time.perf_counter() - started
    times, last = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        last = trainer.train_steps(iterator, steps)  # syncs on every step's loss
        times.append(time.perf_counter() - started)
    windows = float(last[-1]["samples"])  # summed over workers: the global batch
    return {
        "windows_per_step": windows,
        "steps": steps,
        "best_round_s": min(times),
        "median_round_s": statistics.median(times),
        "warmup_s": warmup_s,
        "windows_per_s": windows * steps / min(times),
    }
