"""The contrastive training loop: a custom ``tf.distribute`` loop, no ``model.fit``.

One optimizer step: draw two augmented views of the replica's windows, run ONE forward pass
over both views stacked into a batch of 2n, and minimise

    NT-Xent(projection(view 1), projection(view 2); train.contrastive_temperature)
    + train.reconstruction_weight * MSE(reconstruction(view 1), clean window)
    + the model's L2 kernel penalties.

The reconstruction term decodes view 1's latent and compares it with the CLEAN window (a
denoising auto-encoder), which costs no third forward pass over the un-augmented window.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from monolith.config import EvalConfig, InputSpec, ModelConfig, TrainConfig
from monolith.contrastive.augment import make_views
from monolith.contrastive.loss import nt_xent_loss
from monolith.contrastive.optimizer import FusedAdam
from monolith.errors import ConfigError, DataError
from monolith.model.build import build_monolith

logger = logging.getLogger(__name__)

DatasetFn = Callable[[tf.distribute.InputContext | None], tf.data.Dataset]
ArrayData = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # windows: (features, targets)
AddUp = Callable[[np.ndarray], np.ndarray]  # element-wise sum of a vector over the workers


class EpochEvaluation(Protocol):
    """Scores the model at the end of an epoch: the validation metrics by name, the
    ``eval.objective`` among them. ``add_up`` sums a vector over the run's workers (one
    collective), so workers that share the work out hold the same metrics."""

    def __call__(self, model: keras.Model, add_up: AddUp) -> dict[str, float]: ...


class Evaluation(Protocol):
    """What the trainer is handed to score its epochs (``monolith.evaluate.run_evaluator``):
    builds one fit's ``EpochEvaluation`` from the validation windows and the windows the
    probes are fitted on, for this trainer's worker of the run."""

    def __call__(
        self, trainer: ContrastiveTrainer, val_data: ArrayData, probe_data: ArrayData | None
    ) -> EpochEvaluation: ...


class EpochCallback(Protocol):
    """Called after every epoch's evaluation; returning True asks the loop to stop."""

    def on_epoch_end(
        self, epoch: int, metrics: dict[str, float], trainer: ContrastiveTrainer
    ) -> bool | None: ...


@dataclasses.dataclass
class History:
    """One row per finished epoch: ``epoch``, ``loss``, ``val_loss`` and every metric."""

    rows: list[dict[str, float]]
    best_epoch: int | None
    best: float | None
    monitor: str

    @property
    def history(self) -> dict[str, list[float]]:
        """Column view, like ``keras.callbacks.History.history``."""
        keys = dict.fromkeys(k for row in self.rows for k in row)
        return {k: [row.get(k, math.nan) for row in self.rows] for k in keys}


class ContrastiveTrainer:
    """Builds the MonolithModel and trains it contrastively under a ``tf.distribute`` strategy.

    Batch sizes: ``train_cfg.batch_size`` is the GLOBAL batch, the windows consumed by one
    optimizer step summed over all replicas (workers x local devices). Each replica receives
    ``batch_size // num_replicas_in_sync`` windows (the per-replica batch the dataset
    function must batch with) and the NT-Xent negatives are gathered across replicas, so a
    step sees 2 * batch_size - 2 negatives per anchor, whatever the number of replicas.

    Loss scaling: each replica computes the mean loss over its own anchors, divides it by the
    number of replicas, and the optimizer sums gradients across replicas; with equal
    per-replica batches that is the gradient of the mean loss over the global batch.

    Reproducibility: ``keras.utils.set_random_seed(train_cfg.seed)`` before building, and the
    augmentation seed of step s on replica r is ``fold_in((seed, s), r)``. ``get_state`` /
    ``save_checkpoint`` hold everything needed to resume exactly (all model variables
    including dropout seed states, optimizer variables, step, epoch, best so far, history).

    Evaluation: the caller hands the trainer its ``evaluation`` (the trainer scores nothing
    itself); a trainer that only takes steps (``train_steps``) needs none.
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        eval_cfg: EvalConfig,
        spec: InputSpec,
        *,
        strategy: tf.distribute.Strategy | None = None,
        evaluation: Evaluation | None = None,
    ) -> None:
        self.model_cfg, self.train_cfg, self.eval_cfg, self.spec = (
            model_cfg,
            train_cfg,
            eval_cfg,
            spec,
        )
        self.evaluation = evaluation
        self.strategy = strategy or tf.distribute.get_strategy()
        self.num_replicas = int(self.strategy.num_replicas_in_sync)
        if train_cfg.batch_size % self.num_replicas != 0:
            raise ConfigError(
                f"train.batch_size = {train_cfg.batch_size} is invalid: it is the global batch "
                f"and must divide evenly over the {self.num_replicas} replicas "
                f"(workers x devices); choose a multiple of {self.num_replicas}"
            )
        self.per_replica_batch = train_cfg.batch_size // self.num_replicas
        if self.per_replica_batch < 2:
            raise ConfigError(
                f"train.batch_size = {train_cfg.batch_size} is invalid: with "
                f"{self.num_replicas} replicas each gets {self.per_replica_batch} window(s); "
                f"NT-Xent needs at least 2 per replica"
            )
        keras.utils.set_random_seed(train_cfg.seed)
        with self.strategy.scope():
            self.model = build_monolith(model_cfg, spec, seed=train_cfg.seed)
            self.optimizer = FusedAdam(learning_rate=train_cfg.learning_rate)
            self.optimizer.build(self.model.trainable_variables)
        self.step = 0  # optimizer steps taken: the position in the training stream
        self.epoch = 0  # the next epoch to run
        self.rows: list[dict[str, float]] = []
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.best_weights: list[np.ndarray] | None = None
        self.last_samples_per_step: int | None = None
        self.last_gathered_per_step: int | None = None
        # Steps run in batches inside one compiled loop: no Python or host sync per step.
        # Nothing here needs AutoGraph (Keras 3 layers and our functions use no Python control
        # flow on tensors; the loop is an explicit while_loop): converting every layer's call
        # cost each worker ~1.5 s of tracing per run.
        self._train_loop = tf.function(self._distributed_steps, autograph=False)
        self.worker, self.workers = self._worker_rank()
        self._summed = tf.function(self._sum_over_workers, autograph=False)

    # ---- one step -----------------------------------------------------------------------

    def _replica_step(
        self, features: dict[str, tf.Tensor], step: tf.Tensor
    ) -> tuple[tf.Tensor, ...]:
        cfg = self.train_cfg
        context = tf.distribute.get_replica_context()
        replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
        seed = tf.random.experimental.stateless_fold_in(
            tf.stack([tf.constant(cfg.seed, tf.int64), step]), replica
        )
        window = tf.cast(features["technical_input"], tf.float32)
        n = tf.shape(window)[0]
        view1, view2 = make_views(window, cfg.augmentation_type, seed)
        stacked = {k: tf.concat([v, v], axis=0) for k, v in features.items()}
        stacked["technical_input"] = tf.concat([view1, view2], axis=0)
        with tf.GradientTape() as tape:
            out = self.model(stacked, training=True)
            z1, z2 = tf.split(out["projection"], 2, axis=0)
            contrastive, gathered = nt_xent_loss(
                z1, z2, cfg.contrastive_temperature, replica_context=context, return_gathered=True
            )
            reconstruction = tf.reduce_mean(tf.square(out["reconstruction"][:n] - window))
            penalty = tf.add_n(self.model.losses) if self.model.losses else tf.constant(0.0)
            local = cfg.reconstruction_weight * reconstruction + penalty
            loss = contrastive + local
            # The replicas' gradients are summed: the contrastive loss is the global batch's
            # on every replica, differentiable through its own rows only (see nt_xent_loss),
            # so it counts whole; the local terms count for their share.
            scaled = contrastive + local / self.num_replicas
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        # The instrument embedding's gradient is sparse (IndexedSlices), which the strategy
        # all-reduces apart, as a gather of indices and values; dense, it joins the one pack
        # every other gradient travels in (the table is a few hundred floats).
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        # The step's scalars travel together: one collective, not one per figure.
        return tf.stack(
            [
                loss,
                contrastive,
                reconstruction,
                tf.cast(n, tf.float32),
                tf.cast(gathered, tf.float32),
            ]
        )

    # Entries of a step's figures and how each is combined over the replicas.
    STEP_FIGURES = ("loss", "contrastive", "reconstruction", "samples", "gathered")
    _SUMMED = ("samples",)  # the rest are means over replicas

    def _local_step(self, iterator: Any, step: tf.Tensor) -> tf.Tensor:
        """One optimizer step; the sum of its figures over this worker's replicas."""
        features, _ = next(iterator)
        features = {k: v for k, v in features.items() if k in self.model.input}
        per_replica = self.strategy.run(self._replica_step, args=(features, step))
        return tf.add_n(list(self.strategy.experimental_local_results(per_replica)))

    def _distributed_steps(self, iterator: Any, first: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
        """``count`` optimizer steps numbered from ``first``; their figures [count, 5].

        The figures travel once per call, after the loop, in one collective: a step itself
        runs only the loss's gather and the gradients' all-reduce.
        """

        def body(i: tf.Tensor, figures: tf.TensorArray) -> tuple[tf.Tensor, tf.TensorArray]:
            step = self._local_step(iterator, first + tf.cast(i, tf.int64))
            return i + 1, figures.write(i, step)

        _, figures = tf.while_loop(
            lambda i, _: i < count,
            body,
            (tf.constant(0, tf.int32), tf.TensorArray(tf.float32, size=count)),
        )
        local = figures.stack()
        if self.num_replicas > 1:
            local = self._sum_over_workers(local)
        # "gathered": windows each replica's NT-Xent saw (mean over replicas): the global
        # batch when the negatives are really gathered across workers, else the local batch.
        mean = tf.constant(
            [1.0 if name in self._SUMMED else 1.0 / self.num_replicas for name in self.STEP_FIGURES]
        )
        return local * mean

    def _checked(self, dataset_fn: DatasetFn, skip: int) -> DatasetFn:
        """Check the per-replica batch and skip the steps already taken (exact resume)."""

        def wrapped(context: tf.distribute.InputContext | None) -> tf.data.Dataset:
            dataset = dataset_fn(context)
            batch = dataset.element_spec[0]["technical_input"].shape[0]
            if batch is not None and batch != self.per_replica_batch:
                raise DataError(
                    f"the training dataset yields batches of {batch} windows per replica; "
                    f"expected train.batch_size = {self.train_cfg.batch_size} / "
                    f"{self.num_replicas} replicas = {self.per_replica_batch}"
                )
            return dataset.skip(skip) if skip else dataset

        return wrapped

    def make_iterator(self, train_dataset_fn: DatasetFn) -> Any:
        """A distributed iterator over the training stream, positioned at ``self.step``."""
        return iter(
            self.strategy.distribute_datasets_from_function(
                self._checked(train_dataset_fn, self.step)
            )
        )

    def train_steps(self, iterator: Any, steps: int, per_call: int = 50) -> list[dict[str, float]]:
        """Run ``steps`` optimizer steps; per step: loss terms and the global window count.

        Steps run ``per_call`` at a time in one compiled loop (the figures come back once per
        call); the loop is traced once for any count.
        """
        results: list[dict[str, float]] = []
        while len(results) < steps:
            count = min(per_call, steps - len(results))
            figures = self._train_loop(
                iterator, tf.constant(self.step, tf.int64), tf.constant(count, tf.int32)
            ).numpy()
            self.step += count
            results += [
                dict(zip(self.STEP_FIGURES, map(float, row), strict=True)) for row in figures
            ]
        self.last_samples_per_step = int(results[-1]["samples"]) if results else None
        self.last_gathered_per_step = int(results[-1]["gathered"]) if results else None
        return results

    # ---- the loop -----------------------------------------------------------------------

    def fit(
        self,
        train_dataset_fn: DatasetFn,
        steps_per_epoch: int,
        val_data: ArrayData,
        *,
        probe_data: ArrayData | None = None,
        epochs: int | None = None,
        callbacks: Iterable[EpochCallback] = (),
        initial_epoch: int | None = None,
        select_on_validation: bool = True,
    ) -> History:
        """Train until ``epochs`` (default ``train.epochs``), early stopping or a callback stop.

        Args:
            train_dataset_fn: per-worker dataset of ``(features, targets)`` batched with the
                per-replica batch and repeated.
            steps_per_epoch: optimizer steps per epoch (the same on every worker); capped
                by ``train.max_steps_per_epoch``.
            val_data: the whole validation split as arrays, for the epoch metrics.
            probe_data: training windows as arrays for fitting the linear probes (see
                ``monolith.evaluate.Evaluator``).
            epochs: the epoch count to reach (not the count to add).
            callbacks: objects with ``on_epoch_end(epoch, metrics, trainer)``.
            initial_epoch: the first epoch to run; None continues from ``self.epoch`` (0 for
                a fresh trainer, the saved epoch after ``restore_checkpoint``).
            select_on_validation: early stopping and best-epoch restore on the validation
                objective; False when validation windows are part of training (final fit).

        Returns:
            The ``History`` of all epochs so far. The best epoch's weights are restored.

        Raises:
            ValueError: the trainer was built without an ``evaluation``.
        """
        if self.evaluation is None:
            raise ValueError("a trainer built without evaluation= takes steps, it cannot fit")
        epochs = self.train_cfg.epochs if epochs is None else epochs
        if self.train_cfg.max_steps_per_epoch is not None:
            steps_per_epoch = min(steps_per_epoch, self.train_cfg.max_steps_per_epoch)
        if steps_per_epoch < 1:
            raise DataError(
                f"steps_per_epoch = {steps_per_epoch}: the training split has fewer windows "
                f"than one global batch (train.batch_size = {self.train_cfg.batch_size})"
            )
        if initial_epoch is not None:
            self.epoch = initial_epoch
        evaluate = self.evaluation(self, val_data, probe_data)
        iterator = self.make_iterator(train_dataset_fn)
        monitor = self.eval_cfg.objective
        while self.epoch < epochs:
            epoch = self.epoch
            started = time.perf_counter()
            steps = self.train_steps(iterator, steps_per_epoch)
            train_loss = float(np.mean([s["loss"] for s in steps]))
            # Each worker evaluates its share; one collective adds the shares up, so every
            # worker holds the same metrics and takes the same decisions.
            metrics = {"loss": train_loss, **evaluate(self.model, self._add_up)}
            stop = self._early_stopping(epoch, metrics[monitor]) and select_on_validation
            self.rows.append({"epoch": float(epoch), **metrics})
            self.epoch = epoch + 1
            for callback in callbacks:
                stop = bool(callback.on_epoch_end(epoch, metrics, self)) or stop
            stop = self._add_up(np.array([float(stop)]))[0] > 0  # any worker stops all
            logger.info(
                "epoch %d: loss %.4f %s %.4f (%.1fs)",
                epoch,
                metrics["loss"],
                monitor,
                metrics[monitor],
                time.perf_counter() - started,
            )
            if stop:
                break
        if self.best_weights is not None and select_on_validation:
            self.model.set_weights(self.best_weights)
        return self.history()

    def _early_stopping(self, epoch: int, value: float) -> bool:
        """Track the best epoch (its weights kept in memory); True when patience runs out.

        Keras semantics: stop once ``train.early_stopping_patience`` epochs in a row have not
        improved on the best (0: stop at the first epoch that does not improve).
        """
        sign = -1.0 if self.eval_cfg.mode == "min" else 1.0
        if math.isfinite(value) and (self.best is None or sign * value > sign * self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_weights = [np.array(w) for w in self.model.get_weights()]
            return False
        self.wait += 1
        return self.wait >= self.train_cfg.early_stopping_patience

    def _worker_rank(self) -> tuple[int, int]:
        """This process's rank among the strategy's workers, and their count (0, 1 when the
        strategy spans one process)."""
        resolver = getattr(self.strategy, "cluster_resolver", None)
        spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
        tasks = [(job, i) for job in ("chief", "worker") for i in range(len(spec.get(job, [])))]
        if len(tasks) < 2:
            return 0, 1
        return tasks.index((resolver.task_type, int(resolver.task_id))), len(tasks)

    def _sum_over_workers(self, value: tf.Tensor) -> tf.Tensor:
        """Element-wise sum over the workers of ``value``, which each worker holds once: each
        of a worker's replicas contributes its share (one collective)."""
        share = value / (self.num_replicas // self.workers)
        per_replica = self.strategy.run(lambda: tf.identity(share))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def _add_up(self, vector: np.ndarray) -> np.ndarray:
        """``_sum_over_workers`` of a host vector (compiled: nothing eager under the strategy)."""
        if self.num_replicas == 1:
            return vector
        return self._summed(tf.constant(vector, tf.float64)).numpy()

    def history(self) -> History:
        return History(
            rows=[dict(r) for r in self.rows],
            best_epoch=self.best_epoch,
            best=self.best,
            monitor=self.eval_cfg.objective,
        )

    # ---- state --------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Everything a restarted worker needs to continue exactly where this one stopped."""
        return {
            "model": [np.array(v.numpy()) for v in self.model.variables],
            "optimizer": [np.array(v.numpy()) for v in self.optimizer.variables],
            "best_weights": self.best_weights,
            "step": self.step,
            "epoch": self.epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "rows": [dict(r) for r in self.rows],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        for name, variables in (
            ("model", self.model.variables),
            ("optimizer", self.optimizer.variables),
        ):
            values = state[name]
            if len(values) != len(variables):
                raise ConfigError(
                    f"checkpoint holds {len(values)} {name} variables, this {name} has "
                    f"{len(variables)}: it was written with a different model config"
                )
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)
        self.best_weights = state["best_weights"]
        self.step, self.epoch, self.wait = state["step"], state["epoch"], state["wait"]
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.rows = [dict(r) for r in state["rows"]]

    def save_checkpoint(self, directory: str | Path) -> Path:
        """Write ``state.json`` and ``arrays.npz`` under ``directory``; returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = self.get_state()
        arrays = {f"model_{i}": v for i, v in enumerate(state.pop("model"))}
        arrays |= {f"optimizer_{i}": v for i, v in enumerate(state.pop("optimizer"))}
        best = state.pop("best_weights")
        state["has_best_weights"] = best is not None
        arrays |= {f"best_{i}": v for i, v in enumerate(best or [])}
        np.savez(directory / "arrays.npz", **arrays)
        (directory / "state.json").write_text(json.dumps(state, indent=1))
        return directory

    def restore_checkpoint(self, directory: str | Path) -> None:
        directory = Path(directory)
        if not (directory / "state.json").is_file():
            raise ConfigError(f"no trainer checkpoint in {directory} (state.json missing)")
        state = json.loads((directory / "state.json").read_text())
        with np.load(directory / "arrays.npz") as arrays:
            state["model"] = [arrays[f"model_{i}"] for i in range(len(self.model.variables))]
            state["optimizer"] = [
                arrays[f"optimizer_{i}"] for i in range(len(self.optimizer.variables))
            ]
            n_best = len(self.model.weights) if state.pop("has_best_weights") else 0
            state["best_weights"] = [arrays[f"best_{i}"] for i in range(n_best)] or None
        self.set_state(state)
