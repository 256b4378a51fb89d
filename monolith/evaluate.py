"""Comparable validation metrics: reference NT-Xent, alignment/uniformity and linear probes.

Every trial is scored the same way, whatever its own training temperature, augmentation or
batch size: ``val_ref_ntxent`` is NT-Xent at ``eval.reference_temperature`` over views made
with ``eval.reference_augmentation`` from a fixed seed, in chunks of
``eval.reference_batch_size`` windows, over the whole validation split. The views are drawn
once per ``Evaluator`` and reused every epoch.

Linear probes measure what the frozen latent knows about the regime and the direction of
the next bars: a standardised logistic regression fitted on training windows, scored on
validation windows by balanced accuracy. Two baselines get the same probe:

- ``random``: the same architecture, untrained, built once with ``eval.reference_seed``;
- ``raw``: the scaled technical features themselves (last bar and mean over the window).

``val_probe_<target>_lift_vs_random`` and ``..._lift_vs_raw`` are the trained score minus
each baseline's; ``val_probe_<target>_lift`` (the tunable objective) is the lift over the
STRONGER baseline, so a positive value means the encoder beats both. ``val_probe_mean_lift``
is the mean of the regime and direction lifts.
"""

from __future__ import annotations

import logging
import time
import warnings
import weakref
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from monolith.config import EvalConfig, InputSpec, ModelConfig
from monolith.contrastive.augment import make_views
from monolith.contrastive.loss import alignment, nt_xent_loss, uniformity
from monolith.model.build import build_monolith

logger = logging.getLogger(__name__)

ArrayData = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]
PROBE_TARGETS = ("regime", "direction")
FORWARD_BATCH = 1024
# A probe is a measurement, not a model to ship: a loose tolerance and few iterations keep it
# well under a second for 20k windows while ranking encoders the same way.
PROBE_MAX_ITER = 100
PROBE_TOL = 1e-3


def forward(
    model: keras.Model, features: dict[str, np.ndarray], outputs: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Inference-mode outputs of ``model`` over all windows, in batches of FORWARD_BATCH.

    A plain local call (no strategy, no ``predict``), so every worker can evaluate on its own.
    The compiled function takes any batch size: one trace per model, whatever the set sizes.
    """
    fn = _compiled(model)
    names = list(model.input)  # a dict-input functional model: the input names
    n = len(features["technical_input"])
    parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    for start in range(0, n, FORWARD_BATCH):
        out = fn({k: features[k][start : start + FORWARD_BATCH] for k in names})
        for name in outputs:
            parts[name].append(out[name].numpy())
    return {name: np.concatenate(parts[name]) for name in outputs}


_FORWARDS: weakref.WeakKeyDictionary[keras.Model, Any] = weakref.WeakKeyDictionary()


def _compiled(model: keras.Model) -> Any:
    """One traced inference function per model, kept as long as the model lives."""
    if model not in _FORWARDS:
        ref = weakref.ref(model)  # a strong reference here would keep the key alive forever
        # A signature with an open batch dimension: traced once, not once per set size.
        signature = {
            name: tf.TensorSpec(shape=tensor.shape, dtype=tensor.dtype, name=name)
            for name, tensor in model.input.items()
        }
        _FORWARDS[model] = tf.function(
            lambda batch: ref()(batch, training=False), input_signature=[signature]
        )
    return _FORWARDS[model]


def raw_features(technical: np.ndarray) -> np.ndarray:
    """The raw-feature baseline: each window's last bar and its mean over time, [N, 2F]."""
    return np.concatenate([technical[:, -1, :], technical.mean(axis=1)], axis=1)


def probe_score(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, seed: int
) -> float:
    """Balanced accuracy on val of a standardised logistic regression fitted on train."""
    classes = np.unique(train_y)
    if len(classes) < 2:
        predictions = np.full_like(val_y, classes[0])
    else:
        train_x, val_x = train_x.astype(np.float32), val_x.astype(np.float32)
        scaler = StandardScaler().fit(train_x)
        probe = LogisticRegression(max_iter=PROBE_MAX_ITER, tol=PROBE_TOL, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at the modest max_iter
            probe.fit(scaler.transform(train_x), train_y)
        predictions = probe.predict(scaler.transform(val_x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class absent from val
        return float(balanced_accuracy_score(val_y, predictions))


def even_sample(n: int, cap: int | None) -> np.ndarray:
    """Indices of at most ``cap`` windows spread evenly over ``n`` (all when cap is None)."""
    if cap is None or n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))


def _take(data: ArrayData, index: np.ndarray) -> ArrayData:
    features, targets = data
    return (
        {k: v[index] for k, v in features.items()},
        {k: v[index] for k, v in targets.items()},
    )


class Evaluator:
    """What stays fixed across epochs of one run: views, probe samples and baselines.

    Args:
        model_cfg, spec: the architecture, for the untrained baseline.
        eval_cfg: reference settings and the probe cap.
        val_data: the whole validation split as arrays ``(features, targets)``.
        probe_data: training windows to fit the probes on; None fits them on the first half
            of the (sampled) validation windows and scores them on the second half.
        train_temperature, train_augmentation, train_batch_size, train_seed: the run's own
            settings, for ``val_loss`` (NT-Xent as the run trains it, in chunks of its global
            batch, with views from a seed fixed for the run).
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        eval_cfg: EvalConfig,
        spec: InputSpec,
        val_data: ArrayData,
        probe_data: ArrayData | None = None,
        *,
        train_temperature: float,
        train_augmentation: str,
        train_batch_size: int,
        train_seed: int,
    ) -> None:
        self.eval_cfg = eval_cfg
        self.val_features = {k: np.asarray(v) for k, v in val_data[0].items()}
        technical = self.val_features["technical_input"].astype(np.float32)
        self.val_features["technical_input"] = technical
        self.train_temperature = float(train_temperature)
        self.train_batch_size = int(train_batch_size)
        self.reference_views = _views(
            technical,
            eval_cfg.reference_augmentation,
            eval_cfg.reference_batch_size,
            eval_cfg.reference_seed,
        )
        self.train_views = _views(technical, train_augmentation, train_batch_size, train_seed)

        val_probe = _take(val_data, even_sample(len(technical), eval_cfg.probe_max_windows))
        if probe_data is None:
            half = len(val_probe[0]["technical_input"]) // 2
            probe_fit = _take(val_probe, np.arange(half))
            val_probe = _take(val_probe, np.arange(half, 2 * half))
        else:
            n_fit = len(probe_data[0]["technical_input"])
            probe_fit = _take(probe_data, even_sample(n_fit, eval_cfg.probe_max_windows))
        self.probe_fit, self.probe_val = probe_fit, val_probe
        self.seed = eval_cfg.reference_seed

        started = time.perf_counter()
        random_model = build_monolith(model_cfg, spec, seed=eval_cfg.reference_seed)
        self.baselines = {
            "random": self._probe_scores(
                self._latent(random_model, probe_fit), self._latent(random_model, val_probe)
            ),
            "raw": self._probe_scores(
                raw_features(probe_fit[0]["technical_input"]),
                raw_features(val_probe[0]["technical_input"]),
            ),
        }
        logger.info("probe baselines %s in %.1fs", self.baselines, time.perf_counter() - started)

    @staticmethod
    def _latent(model: keras.Model, data: ArrayData) -> np.ndarray:
        return forward(model, data[0], ("latent",))["latent"]

    def _probe_scores(self, fit_x: np.ndarray, val_x: np.ndarray) -> dict[str, float]:
        return {
            target: probe_score(
                fit_x, self.probe_fit[1][target], val_x, self.probe_val[1][target], self.seed
            )
            for target in PROBE_TARGETS
        }

    def _projections(self, model: keras.Model, views: tuple[np.ndarray, np.ndarray]) -> Any:
        n = len(views[0])
        features = {k: np.concatenate([v, v]) for k, v in self.val_features.items()}
        features["technical_input"] = np.concatenate(views)
        z = forward(model, features, ("projection",))["projection"]
        return z[:n], z[n:]

    def evaluate(self, model: keras.Model) -> dict[str, float]:
        """All validation metrics of ``model`` (a MonolithModel), as python floats."""
        cfg = self.eval_cfg
        z1, z2 = self._projections(model, self.reference_views)
        metrics = {
            "val_ref_ntxent": _chunked(
                lambda a, b: nt_xent_loss(a, b, cfg.reference_temperature),
                z1,
                z2,
                cfg.reference_batch_size,
            ),
            "val_alignment": _chunked(alignment, z1, z2, cfg.reference_batch_size),
            "val_uniformity": _chunked(
                lambda a, b: (uniformity(a) + uniformity(b)) / 2.0,
                z1,
                z2,
                cfg.reference_batch_size,
            ),
        }
        t1, t2 = self._projections(model, self.train_views)
        metrics["val_loss"] = _chunked(
            lambda a, b: nt_xent_loss(a, b, self.train_temperature),
            t1,
            t2,
            self.train_batch_size,
        )
        trained = self._probe_scores(
            self._latent(model, self.probe_fit), self._latent(model, self.probe_val)
        )
        lifts = []
        for target in PROBE_TARGETS:
            score, random, raw = (
                trained[target],
                self.baselines["random"][target],
                self.baselines["raw"][target],
            )
            metrics[f"val_probe_{target}"] = score
            metrics[f"val_probe_{target}_random"] = random
            metrics[f"val_probe_{target}_raw"] = raw
            metrics[f"val_probe_{target}_lift_vs_random"] = score - random
            metrics[f"val_probe_{target}_lift_vs_raw"] = score - raw
            metrics[f"val_probe_{target}_lift"] = score - max(random, raw)
            lifts.append(score - max(random, raw))
        metrics["val_probe_mean_lift"] = float(np.mean(lifts))
        return {k: float(v) for k, v in metrics.items()}


def evaluate_epoch(model: keras.Model, evaluator: Evaluator) -> dict[str, float]:
    """The end-of-epoch metrics of ``model`` (see ``Evaluator``)."""
    return evaluator.evaluate(model)


def _views(
    technical: np.ndarray, augmentation: str, chunk: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two views of every window; chunk ``i`` is drawn from seed ``(seed, i)``."""
    first, second = [], []
    for i, start in enumerate(range(0, len(technical), chunk)):
        v1, v2 = make_views(
            tf.constant(technical[start : start + chunk]),
            augmentation,
            tf.constant([seed, i], tf.int64),
        )
        first.append(v1.numpy())
        second.append(v2.numpy())
    return np.concatenate(first), np.concatenate(second)


def _chunked(fn: Any, z1: np.ndarray, z2: np.ndarray, chunk: int) -> float:
    """Window-weighted mean of ``fn`` over consecutive chunks (a last chunk of < 2 is dropped)."""
    total, weight = 0.0, 0
    for start in range(0, len(z1), chunk):
        a, b = z1[start : start + chunk], z2[start : start + chunk]
        if len(a) < 2:
            continue
        total += float(fn(tf.constant(a), tf.constant(b))) * len(a)
        weight += len(a)
    return total / max(weight, 1)
