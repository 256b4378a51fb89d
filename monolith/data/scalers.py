"""Per-symbol feature scalers: fitted with numpy where the rows are, kept as scikit-learn
scalers where they are saved.

A ``ScalerFit`` holds exactly the statistics scikit-learn's ``StandardScaler``,
``RobustScaler`` or ``MinMaxScaler`` computes in ``fit`` (same formulas, same handling of
constant features), and becomes that fitted scikit-learn object with ``to_sklearn`` for
``scalers.pkl``. The split lets preparation workers fit without importing scikit-learn (1.6 s
of start-up per process, with the scipy modules it pulls in) while the saved scalers stay the
scikit-learn objects consumers load; ``tests/unit/test_splits.py`` checks both agree with
scikit-learn's own ``fit`` on the same rows.

Every kind is the affine map ``(x - offset) / scale``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from monolith.errors import DataError

KINDS = ("standard", "robust", "minmax")
_EPS = np.finfo(np.float64).eps


def _nonzero(scale: np.ndarray, constant: np.ndarray | None = None) -> np.ndarray:
    """scikit-learn's ``_handle_zeros_in_scale``: near-constant features get a scale of 1."""
    scale = np.array(scale, dtype=np.float64, copy=True)
    if constant is None:
        constant = scale < 10 * _EPS
    scale[constant] = 1.0
    return scale


@dataclass(frozen=True)
class ScalerFit:
    """A scaler fitted on one symbol's train rows."""

    kind: str
    n_samples: int
    offset: np.ndarray
    scale: np.ndarray
    stats: dict[str, np.ndarray] = field(default_factory=dict)

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.offset) / self.scale

    def to_sklearn(self) -> object:
        """The fitted scikit-learn scaler with these statistics."""
        from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

        s = self.stats
        width = len(self.offset)
        if self.kind == "standard":
            scaler = StandardScaler()
            scaler.mean_, scaler.var_, scaler.scale_ = s["mean"], s["var"], self.scale
            scaler.n_samples_seen_ = self.n_samples
        elif self.kind == "robust":
            scaler = RobustScaler()
            scaler.center_, scaler.scale_ = s["center"], self.scale
        else:
            scaler = MinMaxScaler()
            scaler.data_min_, scaler.data_max_ = s["data_min"], s["data_max"]
            scaler.data_range_ = s["data_max"] - s["data_min"]
            scaler.scale_, scaler.min_ = s["scale"], s["min"]
            scaler.n_samples_seen_ = self.n_samples
        scaler.n_features_in_ = width
        return scaler


def fit_scaler(values: np.ndarray, kind: str) -> ScalerFit:
    """Fit ``kind`` on ``values`` (rows x features), as scikit-learn's ``fit`` does."""
    if kind not in KINDS:
        raise DataError(f"unknown scaler kind {kind!r}; allowed {list(KINDS)}")
    x = np.asarray(values, dtype=np.float64)
    n = int(x.shape[0])
    if n == 0:
        raise DataError("cannot fit a scaler on zero rows")
    if not np.isfinite(x).all():
        # scikit-learn ignores NaN in fit; prepared features are finite, so it never runs
        raise DataError("scaler input holds NaN/inf: features must be finite before scaling")
    if kind == "standard":
        # sklearn.utils.extmath._incremental_mean_and_var from a fresh start
        total = x.sum(axis=0)
        mean = total / n
        centred = x - mean
        correction = centred.sum(axis=0)
        centred **= 2
        var = (centred.sum(axis=0) - correction**2 / n) / n
        constant = var <= n * _EPS * var + (n * mean * _EPS) ** 2
        scale = _nonzero(np.sqrt(var), constant)
        return ScalerFit(kind, n, mean, scale, {"mean": mean, "var": var})
    if kind == "robust":
        center = np.median(x, axis=0)
        q25, q75 = np.percentile(x, [25.0, 75.0], axis=0)
        scale = _nonzero(q75 - q25)
        return ScalerFit(kind, n, center, scale, {"center": center})
    data_min = x.min(axis=0)
    data_max = x.max(axis=0)
    step = 1.0 / _nonzero(data_max - data_min)  # feature_range (0, 1)
    minimum = 0.0 - data_min * step
    # scikit-learn's x * step + minimum == (x - (-minimum / step)) / (1 / step)
    return ScalerFit(
        kind,
        n,
        -minimum / step,
        1.0 / step,
        {"data_min": data_min, "data_max": data_max, "scale": step, "min": minimum},
    )
