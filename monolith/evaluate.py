"""Comparable validation metrics: reference NT-Xent, alignment/uniformity and probes.

Every trial is scored the same way, whatever its own training temperature, augmentation or
batch size: ``val_ref_ntxent`` is NT-Xent at ``eval.reference_temperature`` over views made
with ``eval.reference_augmentation`` from a fixed seed, in chunks of
``eval.reference_batch_size`` windows, over the whole validation split. The views are drawn
once per ``Evaluator`` and reused every epoch. A run of several workers shares the work out
(view chunks by windows, the probes to one worker) and adds the shares up: the same numbers.

Probes measure what the frozen latent knows (``monolith.probes`` fits and scores them).
``eval.probes`` names them; there are three kinds (``monolith.config.probe_kind``):

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

import contextlib
import logging
import time
import weakref
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from monolith.config import EvalConfig, InputSpec, ModelConfig, objective_probe, probe_kind
from monolith.contrastive.augment import make_views
from monolith.contrastive.loss import alignment, nt_xent_loss, uniformity
from monolith.contrastive.trainer import AddUp, ArrayData, ContrastiveTrainer
from monolith.errors import ConfigError, DataError
from monolith.model.build import build_monolith
from monolith.probes import fit_probe, raw_features, retrieval_score, score_probe

logger = logging.getLogger(__name__)

FORWARD_BATCH = 1024


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
            lambda batch: ref()(batch, training=False),
            input_signature=[signature],
            autograph=False,
        )
    return _FORWARDS[model]


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


def _probe_samples(
    val_data: ArrayData, probe_data: ArrayData | None, cap: int | None
) -> tuple[ArrayData, ArrayData]:
    """The windows the probes are fitted on and scored on, at most ``cap`` of each, spread
    evenly; without ``probe_data``, the two halves of the validation sample."""
    val_probe = _take(val_data, even_sample(len(val_data[0]["technical_input"]), cap))
    if probe_data is None:
        half = len(val_probe[0]["technical_input"]) // 2
        return _take(val_probe, np.arange(half)), _take(val_probe, np.arange(half, 2 * half))
    n_fit = len(probe_data[0]["technical_input"])
    return _take(probe_data, even_sample(n_fit, cap)), val_probe


# The figures an evaluation sums over the run's workers, per view set: the chunk-weighted sums
# of its chunk metrics and their weight (windows).
VIEW_FIGURES = {
    "reference": ("ref_ntxent", "ref_alignment", "ref_uniformity", "ref_windows"),
    "train": ("train_ntxent", "train_windows"),
}


def split_work(
    chunks: list[tuple[str, int, int]], probe_cost: int, workers: int, whole: tuple[str, ...] = ()
) -> tuple[int, dict[tuple[str, int], int]]:
    """Who evaluates what: the probes go to the last worker; each view chunk ``(set, index,
    windows)`` to the least-loaded worker (cost: windows forwarded; ties to the lowest rank),
    the chunks of a set in ``whole`` all to the worker of its first chunk. Deterministic:
    every worker computes the same split from the same sizes."""
    probes_at = workers - 1
    load = [0] * workers
    load[probes_at] = probe_cost
    owner: dict[tuple[str, int], int] = {}
    for name, index, windows in chunks:
        if name in whole and index > 0:
            worker = owner[(name, 0)]
        else:
            worker = min(range(workers), key=lambda w: (load[w], w))
        owner[(name, index)] = worker
        load[worker] += 2 * windows  # two views
    return probes_at, owner


class Evaluator:
    """What stays fixed across epochs of one run: views, probe samples and baselines.

    On a run of several workers each computes its share (``worker`` of ``workers``): the
    reference and training views are cut into their loss chunks, spread over the workers by
    windows; the probes (fits and baselines) run on the last worker. ``figures`` returns this
    worker's share as sums; the trainer adds the workers' figures up (one collective) and
    ``metrics`` turns them into the same numbers a single process computes.

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
        worker, workers: this worker's rank and the run's worker count.
        model: the run's model, if any: the untrained baseline is then computed by it, its
            weights swapped for the untrained ones and back (its compiled forward, which the
            epochs trace anyway, instead of a second trace of the model's inference).

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
        worker: int = 0,
        workers: int = 1,
        model: keras.Model | None = None,
    ) -> None:
        self.eval_cfg = eval_cfg
        self.probes = {name: probe_kind(name) for name in eval_cfg.probes}
        wanted = objective_probe(eval_cfg.objective)
        if wanted is not None and wanted not in self.probes:
            raise ConfigError(
                f"eval.objective = {eval_cfg.objective!r} is invalid: probe {wanted!r} is not "
                f"in eval.probes = {list(self.probes)}"
            )
        if not 0 <= worker < workers:
            raise ValueError(f"worker {worker} of {workers}")
        self.worker, self.workers = worker, workers
        self.val_features = {k: np.asarray(v) for k, v in val_data[0].items()}
        technical = self.val_features["technical_input"].astype(np.float32)
        self.val_features["technical_input"] = technical
        self.train_temperature = float(train_temperature)
        self.train_batch_size = int(train_batch_size)
        self.seed = eval_cfg.reference_seed

        # The probe samples and their targets: cheap, checked on every worker alike.
        self.probe_fit, self.probe_val = _probe_samples(
            val_data, probe_data, eval_cfg.probe_max_windows
        )
        self.labels = {
            name: (
                _labelled(self.probe_fit, name, kind, "fit"),
                _labelled(self.probe_val, name, kind, "val"),
            )
            for name, kind in self.probes.items()
            if kind != "retrieval"
        }
        self._share_work(technical, {"reference": (eval_cfg.reference_augmentation, self.seed),
                                     "train": (train_augmentation, train_seed)})  # fmt: skip
        started = time.perf_counter()
        self.baselines: dict[str, dict[str, float]] = {"random": {}, "raw": {}}
        if self.labels and worker == self.probes_at or self.knn_here:
            random_model = build_monolith(model_cfg, spec, seed=eval_cfg.reference_seed)
            with _untrained(model, random_model) as runner:
                self._baselines(runner, self.probe_fit, self.probe_val)
            logger.info(
                "probe baselines %s in %.1fs", self.baselines, time.perf_counter() - started
            )

    def _share_work(self, technical: np.ndarray, seeds: dict[str, tuple[str, int]]) -> None:
        """The split of the work over the workers (``split_work``), then this worker's view
        chunks, drawn from ``seeds``: per view set, its augmentation and seed."""
        self.chunk_sizes = {
            "reference": self.eval_cfg.reference_batch_size,
            "train": self.train_batch_size,
        }
        n = len(technical)
        chunks = [
            (name, i, min(size, n - start))
            for name, size in self.chunk_sizes.items()
            for i, start in enumerate(range(0, n, size))
        ]
        knn = "knn_views" in self.probes
        probe_cost = sum(
            len(data[0]["technical_input"]) for data in (self.probe_fit, self.probe_val)
        )
        self.probes_at, owner = split_work(
            chunks, probe_cost if self.labels else 0, self.workers, ("reference",) if knn else ()
        )
        self.chunks = {
            name: [i for (set_name, i), w in owner.items() if set_name == name and w == self.worker]
            for name in self.chunk_sizes
        }
        self.views = {
            name: {i: _view_chunk(technical, size, i, *seeds[name]) for i in self.chunks[name]}
            for name, size in self.chunk_sizes.items()
        }
        self.knn_here = knn and bool(self.chunks["reference"])

    def __call__(self, model: keras.Model, add_up: AddUp | None = None) -> dict[str, float]:
        """``evaluate_epoch`` of ``model``: what the trainer calls every epoch."""
        return evaluate_epoch(model, self, add_up)

    def _baselines(
        self, random_model: keras.Model, probe_fit: ArrayData, val_probe: ArrayData
    ) -> None:
        """Both baselines' probe (and retrieval) scores, into ``self.baselines``."""
        if self.labels and self.worker == self.probes_at:
            self.baselines = {
                "random": self._probe_scores(
                    self._latent(random_model, probe_fit), self._latent(random_model, val_probe)
                ),
                "raw": self._probe_scores(
                    raw_features(probe_fit[0]["technical_input"]),
                    raw_features(val_probe[0]["technical_input"]),
                ),
            }
        if self.knn_here:
            chunk = self.eval_cfg.reference_batch_size
            first, second = self._own_views("reference")
            latents = self._view_outputs(random_model, (first, second), ("latent",))
            self.baselines["random"]["knn_views"] = retrieval_score(*latents["latent"], chunk)
            raw = [raw_features(view) for view in (first, second)]
            self.baselines["raw"]["knn_views"] = retrieval_score(*raw, chunk)

    @property
    def figure_names(self) -> list[str]:
        """Every figure of an evaluation, in one order known to all workers."""
        names = [f for name in VIEW_FIGURES for f in VIEW_FIGURES[name]]
        for probe in self.probes:
            names += [f"probe_{probe}", f"probe_{probe}_random", f"probe_{probe}_raw"]
        return names

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

    def _own_views(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """This worker's views of set ``name``, chunks in order, as two arrays of windows."""
        views = [self.views[name][i] for i in self.chunks[name]]
        return np.concatenate([v[0] for v in views]), np.concatenate([v[1] for v in views])

    def _chunk_features(self, name: str, index: int) -> dict[str, np.ndarray]:
        start = index * self.chunk_sizes[name]
        stop = start + len(self.views[name][index][0])
        return {k: v[start:stop] for k, v in self.val_features.items()}

    def _view_outputs(
        self,
        model: keras.Model,
        views: tuple[np.ndarray, np.ndarray],
        outputs: tuple[str, ...],
        name: str = "reference",
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``outputs`` of both views of this worker's chunks of ``name``, in one forward
        pass (the chunks' other inputs alongside)."""
        n = len(views[0])
        parts = [self._chunk_features(name, i) for i in self.chunks[name]]
        features = {k: np.concatenate([p[k] for p in parts] * 2) for k in self.val_features}
        features["technical_input"] = np.concatenate(views)
        out = forward(model, features, outputs)
        return {o: (out[o][:n], out[o][n:]) for o in outputs}

    def figures(self, model: keras.Model) -> dict[str, float]:
        """This worker's share of the evaluation of ``model`` (a MonolithModel): sums over
        its view chunks, and the probes' scores on the worker that runs them."""
        cfg = self.eval_cfg
        chunk_metrics = {
            "reference": {
                "ref_ntxent": lambda a, b: nt_xent_loss(a, b, cfg.reference_temperature),
                "ref_alignment": alignment,
                "ref_uniformity": lambda a, b: (uniformity(a) + uniformity(b)) / 2.0,
            },
            "train": {"train_ntxent": lambda a, b: nt_xent_loss(a, b, self.train_temperature)},
        }
        figures: dict[str, float] = {}
        knn_latents = None
        for name, size in self.chunk_sizes.items():
            if not self.chunks[name]:
                continue
            wants_latent = name == "reference" and self.knn_here
            outputs = ("projection", "latent") if wants_latent else ("projection",)
            out = self._view_outputs(model, self._own_views(name), outputs, name)
            if wants_latent:
                knn_latents = out["latent"]
            windows_figure = VIEW_FIGURES[name][-1]
            figures.update(
                _chunk_sums(chunk_metrics[name], *out["projection"], size, windows_figure)
            )
        if self.labels and self.worker == self.probes_at:
            trained = self._probe_scores(
                self._latent(model, self.probe_fit), self._latent(model, self.probe_val)
            )
            for probe, score in trained.items():
                figures[f"probe_{probe}"] = score
                figures[f"probe_{probe}_random"] = self.baselines["random"][probe]
                figures[f"probe_{probe}_raw"] = self.baselines["raw"][probe]
        if knn_latents is not None:
            figures["probe_knn_views"] = retrieval_score(*knn_latents, cfg.reference_batch_size)
            figures["probe_knn_views_random"] = self.baselines["random"]["knn_views"]
            figures["probe_knn_views_raw"] = self.baselines["raw"]["knn_views"]
        return figures

    def metrics(self, figures: dict[str, float]) -> dict[str, float]:
        """The validation metrics from every worker's figures, summed."""
        metrics = {
            "val_ref_ntxent": figures["ref_ntxent"] / max(figures["ref_windows"], 1.0),
            "val_alignment": figures["ref_alignment"] / max(figures["ref_windows"], 1.0),
            "val_uniformity": figures["ref_uniformity"] / max(figures["ref_windows"], 1.0),
            "val_loss": figures["train_ntxent"] / max(figures["train_windows"], 1.0),
        }
        lifts = []
        for name in self.probes:
            score, random, raw = (figures[f"probe_{name}{s}"] for s in ("", "_random", "_raw"))
            metrics[f"val_probe_{name}"] = score
            metrics[f"val_probe_{name}_random"] = random
            metrics[f"val_probe_{name}_raw"] = raw
            metrics[f"val_probe_{name}_lift_vs_random"] = score - random
            metrics[f"val_probe_{name}_lift_vs_raw"] = score - raw
            metrics[f"val_probe_{name}_lift"] = score - max(random, raw)
            lifts.append(score - max(random, raw))
        metrics["val_probe_mean_lift"] = float(np.mean(lifts))
        return {k: float(v) for k, v in metrics.items()}


@contextlib.contextmanager
def _untrained(model: keras.Model | None, untrained: keras.Model) -> Iterator[keras.Model]:
    """``model`` holding ``untrained``'s variable values while the block runs (its own after,
    whatever happens), or ``untrained`` itself when there is no ``model`` of its
    architecture."""
    same = model is not None and len(model.variables) == len(untrained.variables)
    pairs = list(zip(model.variables, untrained.variables, strict=True)) if same else []
    if not same or any((a.shape, a.dtype) != (b.shape, b.dtype) for a, b in pairs):
        yield untrained
        return
    saved = [np.array(mine.numpy()) for mine, _ in pairs]
    try:
        for mine, theirs in pairs:
            mine.assign(theirs.value)
        yield model
    finally:
        for (mine, _), value in zip(pairs, saved, strict=True):
            mine.assign(value)


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


def run_evaluator(
    trainer: ContrastiveTrainer,
    val_data: ArrayData,
    probe_data: ArrayData | None = None,
    *,
    shared: bool = True,
) -> Evaluator:
    """The ``Evaluator`` of ``trainer``'s run (the trainer's ``evaluation``): the run's own
    settings score ``val_loss`` and its model runs the untrained baseline. ``shared``: the
    work is shared out over the trainer's workers; else this worker evaluates it all."""
    cfg = trainer.train_cfg
    return Evaluator(
        trainer.model_cfg,
        trainer.eval_cfg,
        trainer.spec,
        val_data,
        probe_data,
        train_temperature=cfg.contrastive_temperature,
        train_augmentation=cfg.augmentation_type,
        train_batch_size=cfg.batch_size,
        train_seed=cfg.seed,
        worker=trainer.worker if shared else 0,
        workers=trainer.workers if shared else 1,
        model=trainer.model,
    )


def evaluate_epoch(
    model: keras.Model, evaluator: Evaluator, add_up: AddUp | None = None
) -> dict[str, float]:
    """The end-of-epoch metrics of ``model`` (see ``Evaluator``). An evaluator of several
    workers needs ``add_up``: the element-wise sum of a vector over the run's workers."""
    figures = evaluator.figures(model)
    if evaluator.workers > 1:
        if add_up is None:
            raise ValueError("an evaluator of several workers needs add_up")
        names = evaluator.figure_names
        mine = np.array([figures.get(name, 0.0) for name in names], np.float64)
        figures = dict(zip(names, map(float, add_up(mine)), strict=True))
    return evaluator.metrics(figures)


def _view_chunk(
    technical: np.ndarray, size: int, index: int, augmentation: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Both views of chunk ``index`` (``size`` windows each), drawn from seed ``(seed, index)``:
    the same views whichever worker draws them."""
    start = index * size
    v1, v2 = make_views(
        tf.constant(technical[start : start + size]),
        augmentation,
        tf.constant([seed, index], tf.int64),
    )
    return v1.numpy(), v2.numpy()


def _chunk_sums(
    fns: dict[str, Any], z1: np.ndarray, z2: np.ndarray, chunk: int, windows_figure: str
) -> dict[str, float]:
    """Per ``fns`` entry, its window-weighted sum over consecutive chunks, and the weight (the
    windows) as ``windows_figure``; a chunk of < 2 windows is left out."""
    sums = dict.fromkeys(fns, 0.0)
    windows = 0
    for start in range(0, len(z1), chunk):
        a, b = z1[start : start + chunk], z2[start : start + chunk]
        if len(a) < 2:
            continue
        for name, fn in fns.items():
            sums[name] += float(fn(tf.constant(a), tf.constant(b))) * len(a)
        windows += len(a)
    return {**sums, windows_figure: float(windows)}
