"""The probes: what a frozen latent knows, read out by small fitted models.

A classification probe is a standardised logistic regression scored by balanced accuracy; a
regression probe a standardised ridge regression on log volatility scored by the Spearman
rank correlation; the retrieval score asks whether a window's nearest neighbour among the
other view's embeddings is its own (``monolith.evaluate`` says why each, and what it is
compared with).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import rankdata
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from monolith.errors import ConfigError

# A probe is a measurement, not a model to ship: a loose tolerance and few iterations keep it
# well under a second for 20k windows while ranking encoders the same way.
PROBE_MAX_ITER = 100
PROBE_TOL = 1e-3
# Ridge penalty on the standardised latent: enough to keep collinear latent units stable,
# small against thousands of windows, so the probe stays a (near) least-squares read-out.
RIDGE_ALPHA = 1.0
# Volatility is regressed in logs; a flat path (zero volatility) is floored here first.
VOLATILITY_FLOOR = 1e-8


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
