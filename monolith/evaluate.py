"""Comparable validation metrics: reference NT-Xent, alignment/uniformity and probes.

Every trial is scored the same way, whatever its own training temperature, augmentation or
batch size: ``val_ref_ntxent`` is NT-Xent at ``eval.reference_temperature`` over views made
with ``eval.reference_augmentation`` from a fixed seed, in chunks of
``eval.reference_batch_size`` windows, over the whole validation split. The views are drawn
once per ``Evaluator`` and reused every epoch.

Probes measure what the frozen latent knows. ``eval.probes`` names them; there are three kinds
(``monolith.config.probe_kind``):

- classification: ``regime`` (the causal HMM state at the window's last bar), ``direction``
  (close ``data.label_horizon`` bars later above the last close) and ``direction_h<H>`` (the
  H-bar return from the next bar's open is positive): a standardised logistic regression,
  scored by balanced accuracy;
- regression: ``fwd_vol_h<H>`` (realised volatility of the next H bars): a ridge regression on
  the standardised latent predicting log volatility, scored by the Spearman rank correlation
  of its predictions with the target. Rank correlation rather than R²: it is bounded like the
  accuracies, does not depend on the target's scale (volatility differs by symbol and era),
  and a few turbulent bars cannot dominate it;
- retrieval, label-free: ``knn_views``, the fraction of validation windows whose reference
  view 1's nearest neighbour (standardised, Euclidean) among the chunk's view-2 embeddings is
  its own view 2, in the reference loss's chunks (chance: 1 / ``eval.reference_batch_size``).

Label probes are fitted on training windows (the fixed train sample) and scored on the
validation sample, every epoch; a window whose target is undefined (its horizon runs past its
symbol's data) is left out of both. The forward targets use bars after the window's last bar
only (``monolith.data.features.forward_targets``) and the split purge covers their horizon, so
no train target reaches a validation bar. Two baselines get the same probes:

- ``random``: the same architecture, untrained, built once with ``eval.reference_seed``;
- ``raw``: the scaled technical features themselves (last bar and mean over the window).

For every probe ``p``: ``val_probe_<p>`` is the trained encoder's score, ``..._random`` and
``..._raw`` the baselines', ``..._lift_vs_random`` and ``..._lift_vs_raw`` the differences, and
``val_probe_<p>_lift`` (a tunable objective) the lift over the STRONGER baseline, so a positive
value means the encoder beats both. ``val_probe_mean_lift`` is the mean of the configured
probes' lifts: every score is 0 for "no better than the stronger baseline" on a scale of at
most 1, so the kinds average without weights.
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
from scipy.stats import rankdata
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from monolith.config import EvalConfig, InputSpec, ModelConfig, objective_probe, probe_kind
from monolith.contrastive.augment import make_views
from monolith.contrastive.loss import alignment, nt_xent_loss, uniformity
from monolith.errors import ConfigError, DataError
from monolith.model.build import build_monolith

logger = logging.getLogger(__name__)

ArrayData = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]
FORWARD_BATCH = 1024
# A probe is a measurement, not a model to ship: a loose tolerance and few iterations keep it
# well under a second for 20k windows while ranking encoders the same way.
PROBE_MAX_ITER = 100
PROBE_TOL = 1e-3
# Ridge penalty on the standardised latent: enough to keep collinear latent units stable,
# small against thousands of windows, so the probe stays a (near) least-squares read-out.
RIDGE_ALPHA = 1.0
# Volatility is regressed in logs; a flat path (zero volatility) is floored here first.
VOLATILITY_FLOOR = 1e-8


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


def fit_probe(kind: str, x: np.ndarray, y: np.ndarray, seed: int) -> Pipeline | DummyClassifier:
    """A probe fitted on ``(x, y)``: a standardised logistic regression (``classification``;
    a constant when ``y`` holds one class) or a standardised ridge regression on log ``y``
    (``regression``)."""
    x = x.astype(np.float32)
    if kind == "regression":
        probe = make_pipeline(StandardScaler(), Ridge(alpha=RIDGE_ALPHA))
        return probe.fit(x, np.log(np.maximum(y.astype(np.float64), VOLATILITY_FLOOR)))
    if kind != "classification":
        raise ConfigError(f"no fitted probe of kind {kind!r}; kinds: classification, regression")
    if len(np.unique(y)) < 2:
        return DummyClassifier(strategy="most_frequent").fit(x, y)
    probe = make_pipeline(
        StandardScaler(),
        LogisticRegression(max_iter=PROBE_MAX_ITER, tol=PROBE_TOL, random_state=seed),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at the modest max_iter
        return probe.fit(x, y)


def score_probe(
    kind: str, probe: Pipeline | DummyClassifier, x: np.ndarray, y: np.ndarray
) -> float:
    """Balanced accuracy (``classification``) or Spearman rank correlation (``regression``)
    of a fitted probe's predictions on ``(x, y)``."""
    predictions = probe.predict(x.astype(np.float32))
    if kind == "regression":
        return spearman(predictions, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class absent from val
        return float(balanced_accuracy_score(y, predictions))


def probe_score(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    seed: int,
    kind: str = "classification",
) -> float:
    """A probe of ``kind`` fitted on train, scored on val (see ``fit_probe``/``score_probe``)."""
    return score_probe(kind, fit_probe(kind, train_x, train_y, seed), val_x, val_y)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation; 0.0 when either side is constant (nothing is ranked)."""
    ra, rb = rankdata(a), rankdata(b)
    if len(ra) < 2 or np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def retrieval_score(first: np.ndarray, second: np.ndarray, chunk: int) -> float:
    """Fraction of windows whose ``first`` embedding's nearest neighbour among its chunk's
    ``second`` embeddings is its own (rows pair up). Columns are standardised over both sets;
    distances are Euclidean; consecutive chunks of ``chunk`` rows (a last chunk of < 2 is
    dropped), so chance is 1 / chunk."""
    both = np.concatenate([first, second]).astype(np.float64)
    both = both.reshape(len(both), -1)
    scale = both.std(axis=0)
    both = (both - both.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    a, b = both[: len(first)], both[len(first) :]
    hits, total = 0, 0
    for start in range(0, len(a), chunk):
        x, y = a[start : start + chunk], b[start : start + chunk]
        if len(x) < 2:
            continue
        distance = (y**2).sum(axis=1)[None, :] - 2.0 * x @ y.T  # + |x|^2, the same per row
        hits += int(np.count_nonzero(distance.argmin(axis=1) == np.arange(len(x))))
        total += len(x)
    return hits / max(total, 1)


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
        eval_cfg: reference settings, the probes and the probe cap.
        val_data: the whole validation split as arrays ``(features, targets)``; the targets
            hold each label probe's target by probe name.
        probe_data: training windows to fit the probes on; None fits them on the first half
            of the (sampled) validation windows and scores them on the second half.
        train_temperature, train_augmentation, train_batch_size, train_seed: the run's own
            settings, for ``val_loss`` (NT-Xent as the run trains it, in chunks of its global
            batch, with views from a seed fixed for the run).

    Raises:
        ConfigError: the objective names a probe that ``eval_cfg.probes`` does not list.
        DataError: the data carry no target for a configured probe, or fewer than two
            windows with a defined target in the fit or the scoring sample.
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
        self.probes = {name: probe_kind(name) for name in eval_cfg.probes}
        wanted = objective_probe(eval_cfg.objective)
        if wanted is not None and wanted not in self.probes:
            raise ConfigError(
                f"eval.objective = {eval_cfg.objective!r} is invalid: probe {wanted!r} is not "
                f"in eval.probes = {list(self.probes)}"
            )
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
        self.labels = {
            name: (_labelled(probe_fit, name, kind, "fit"), _labelled(val_probe, name, kind, "val"))
            for name, kind in self.probes.items()
            if kind != "retrieval"
        }
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
        if "knn_views" in self.probes:
            chunk = eval_cfg.reference_batch_size
            latents = self._view_outputs(random_model, self.reference_views, ("latent",))
            self.baselines["random"]["knn_views"] = retrieval_score(*latents["latent"], chunk)
            raw = [raw_features(view) for view in self.reference_views]
            self.baselines["raw"]["knn_views"] = retrieval_score(*raw, chunk)
        logger.info("probe baselines %s in %.1fs", self.baselines, time.perf_counter() - started)

    @staticmethod
    def _latent(model: keras.Model, data: ArrayData) -> np.ndarray:
        return forward(model, data[0], ("latent",))["latent"]

    def _probe_scores(self, fit_x: np.ndarray, val_x: np.ndarray) -> dict[str, float]:
        """Every label probe fitted on ``fit_x`` (the fit sample's embeddings), scored on
        ``val_x``; each on the windows where its target is defined."""
        scores = {}
        for name, ((fit_rows, fit_y), (val_rows, val_y)) in self.labels.items():
            kind = self.probes[name]
            probe = fit_probe(kind, fit_x[fit_rows], fit_y, self.seed)
            scores[name] = score_probe(kind, probe, val_x[val_rows], val_y)
        return scores

    def _view_outputs(
        self,
        model: keras.Model,
        views: tuple[np.ndarray, np.ndarray],
        outputs: tuple[str, ...],
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``outputs`` of both views of every validation window, in one forward pass."""
        n = len(views[0])
        features = {k: np.concatenate([v, v]) for k, v in self.val_features.items()}
        features["technical_input"] = np.concatenate(views)
        out = forward(model, features, outputs)
        return {name: (out[name][:n], out[name][n:]) for name in outputs}

    def evaluate(self, model: keras.Model) -> dict[str, float]:
        """All validation metrics of ``model`` (a MonolithModel), as python floats."""
        cfg = self.eval_cfg
        # The latent rides along the reference views' pass only when the retrieval probe
        # needs it.
        outputs = ("projection", "latent") if "knn_views" in self.probes else ("projection",)
        reference = self._view_outputs(model, self.reference_views, outputs)
        z1, z2 = reference["projection"]
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
        t1, t2 = self._view_outputs(model, self.train_views, ("projection",))["projection"]
        metrics["val_loss"] = _chunked(
            lambda a, b: nt_xent_loss(a, b, self.train_temperature),
            t1,
            t2,
            self.train_batch_size,
        )
        trained = self._probe_scores(
            self._latent(model, self.probe_fit), self._latent(model, self.probe_val)
        )
        if "knn_views" in self.probes:
            trained["knn_views"] = retrieval_score(*reference["latent"], cfg.reference_batch_size)
        lifts = []
        for name in self.probes:
            score, random, raw = (
                trained[name],
                self.baselines["random"][name],
                self.baselines["raw"][name],
            )
            metrics[f"val_probe_{name}"] = score
            metrics[f"val_probe_{name}_random"] = random
            metrics[f"val_probe_{name}_raw"] = raw
            metrics[f"val_probe_{name}_lift_vs_random"] = score - random
            metrics[f"val_probe_{name}_lift_vs_raw"] = score - raw
            metrics[f"val_probe_{name}_lift"] = score - max(random, raw)
            lifts.append(score - max(random, raw))
        metrics["val_probe_mean_lift"] = float(np.mean(lifts))
        return {k: float(v) for k, v in metrics.items()}


def _labelled(data: ArrayData, name: str, kind: str, sample: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``data`` whose ``name`` target is defined, and those targets.

    Undefined is -1 for a class label (the windows' encoding of NaN) and NaN for a value.
    """
    targets = data[1]
    if name not in targets:
        available = sorted(k for k in targets if k != "end_time")
        raise DataError(
            f"probe {name!r}: the {sample} windows carry no {name!r} target (they carry "
            f"{available}); prepare the dataset with the data setting that adds it "
            "(data.direction_horizons, data.volatility_horizons) or drop it from eval.probes"
        )
    y = np.asarray(targets[name])
    defined = y >= 0 if kind == "classification" else np.isfinite(y)
    rows = np.flatnonzero(defined)
    if len(rows) < 2:
        raise DataError(
            f"probe {name!r}: {len(rows)} of the {len(y)} {sample} windows have a defined "
            "target (its horizon runs past the data?); a probe needs at least 2"
        )
    return rows, y[rows]


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
