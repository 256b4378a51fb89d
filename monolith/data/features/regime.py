"""The market-regime HMM: fitted on train rows only, decoded causally.

A Gaussian HMM over standardised (log return, rolling volatility) observations. The regime
label at t is the argmax of the forward-filtered state probability p(state_t | obs_<=t),
never the Viterbi path or smoothed posteriors, which use later bars.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from monolith.data.features.blocks import require_sorted, symbol_blocks, symbol_codes
from monolith.data.features.columns import HMM_OBSERVATION_COLUMNS
from monolith.data.features.forward import forward_pass
from monolith.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegimeModel:
    """A fitted Gaussian HMM over standardised (return, volatility) observations.

    States are relabelled by ascending mean volatility, so 0 is always the calmest regime.
    Parameters are held as plain arrays (full covariances), which is all causal filtering
    needs; ``obs_mean``/``obs_scale`` are the train-row statistics used to standardise.
    """

    n_states: int
    seed: int
    startprob: np.ndarray
    transmat: np.ndarray
    means: np.ndarray
    covars: np.ndarray
    obs_mean: np.ndarray
    obs_scale: np.ndarray
    train_rows: int
    log_likelihood: float
    converged: bool

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RegimeModel:
        """The model a dataset's (or a bundle's) metadata recorded with ``to_dict``."""
        return cls(
            n_states=int(raw["n_states"]),
            seed=int(raw["seed"]),
            startprob=np.asarray(raw["startprob"], dtype=np.float64),
            transmat=np.asarray(raw["transmat"], dtype=np.float64),
            means=np.asarray(raw["means"], dtype=np.float64),
            covars=np.asarray(raw["covars"], dtype=np.float64),
            obs_mean=np.asarray(raw["obs_mean"], dtype=np.float64),
            obs_scale=np.asarray(raw["obs_scale"], dtype=np.float64),
            train_rows=int(raw["train_rows"]),
            log_likelihood=float(raw["log_likelihood"]),
            converged=bool(raw["converged"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters (for the dataset metadata)."""
        return {
            "n_states": self.n_states,
            "seed": self.seed,
            "startprob": self.startprob.tolist(),
            "transmat": self.transmat.tolist(),
            "means": self.means.tolist(),
            "covars": self.covars.tolist(),
            "obs_mean": self.obs_mean.tolist(),
            "obs_scale": self.obs_scale.tolist(),
            "observations": list(HMM_OBSERVATION_COLUMNS),
            "train_rows": self.train_rows,
            "log_likelihood": self.log_likelihood,
            "converged": self.converged,
        }


def _observation_matrix(frame: pd.DataFrame, where: str) -> np.ndarray:
    missing = [c for c in HMM_OBSERVATION_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; run add_technical_indicators first")
    return frame[list(HMM_OBSERVATION_COLUMNS)].to_numpy(dtype=np.float64)


def _run_lengths(frame: pd.DataFrame, mask: np.ndarray) -> list[int]:
    """Lengths of runs of consecutive selected rows within one symbol (one HMM sequence each)."""
    symbols, _ = symbol_codes(frame)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero((np.diff(idx) != 1) | (symbols[idx[1:]] != symbols[idx[:-1]])) + 1
    bounds = np.concatenate(([0], breaks, [len(idx)]))
    return np.diff(bounds).tolist()


def _initialise(hmm: Any, z: np.ndarray, n_states: int) -> None:
    """Start EM from volatility quantiles: state k holds the k-th slice of calm-to-wild rows.

    This places the states where regimes differ most (volatility), so EM converges quickly
    and to the same optimum for the same train rows.
    """
    order = np.argsort(z[:, 1], kind="stable")
    groups = np.array_split(order, n_states)
    hmm.startprob_ = np.full(n_states, 1.0 / n_states)
    # Regimes persist: start from a sticky chain (expected stay of 20 bars).
    transmat = np.full((n_states, n_states), 0.05 / (n_states - 1))
    np.fill_diagonal(transmat, 0.95)
    hmm.transmat_ = transmat
    hmm.means_ = np.array([z[g].mean(axis=0) for g in groups])
    hmm.covars_ = np.array([z[g].var(axis=0) for g in groups]) + 1e-3


# The regime HMM is fitted on a documented subsample when the train rows are many: a Gaussian
# HMM of a few states over two observations is pinned down by a few hundred thousand bars,
# and EM over every train row of a large dataset would cost a minute per million rows on
# one core (the one step of a preparation that cannot be spread over a cluster). Both the
# single-process and the cluster preparation take exactly this sample.
HMM_FIT_CHUNK_ROWS = 1000


def regime_fit_quotas(train_rows: dict[str, int], max_rows: int | None) -> dict[str, int]:
    """How many train rows of each symbol the regime HMM is fitted on.

    Every train row when the total is at most ``max_rows`` (or ``max_rows`` is None);
    otherwise each symbol's share of ``max_rows`` in proportion to its train rows (floor).
    """
    total = sum(train_rows.values())
    if max_rows is None or total <= max_rows:
        return dict(train_rows)
    return {sym: int(max_rows * n // total) for sym, n in train_rows.items()}


def regime_fit_chunks(n_rows: int, quota: int) -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges of one symbol's train rows that make up its fit sample.

    All rows when ``quota >= n_rows`` (one sequence). Otherwise ``ceil(quota / 1000)``
    contiguous chunks of 1,000 rows (the last one shorter so they sum to ``quota``), their
    starts spread evenly over the symbol's train rows: deterministic, so every run and every
    way of splitting the work over processes fits the same HMM. Each chunk is one HMM
    sequence (the chain restarts at a chunk's first bar).
    """
    if quota >= n_rows:
        return [(0, n_rows)] if n_rows else []
    if quota <= 0:
        return []
    count = -(-quota // HMM_FIT_CHUNK_ROWS)
    lengths = [HMM_FIT_CHUNK_ROWS] * (count - 1) + [quota - HMM_FIT_CHUNK_ROWS * (count - 1)]
    span = n_rows - HMM_FIT_CHUNK_ROWS
    starts = np.linspace(0, max(span, 0), count).round().astype(np.int64)
    return [(int(a), int(a) + n) for a, n in zip(starts, lengths, strict=True)]


def regime_fit_sequences(
    frame: pd.DataFrame, train_mask: np.ndarray, quotas: dict[str, int] | None = None
) -> dict[str, list[np.ndarray]]:
    """Per symbol, the observation sequences its train rows contribute to the HMM fit.

    Sequences are runs of consecutive train rows within a symbol (the train split is one
    run per symbol), cut to ``regime_fit_chunks`` when ``quotas`` limits the symbol.
    """
    mask = np.asarray(train_mask)
    observations = _observation_matrix(frame, "regime_fit_sequences")
    symbols = frame["symbol"].to_numpy()
    out: dict[str, list[np.ndarray]] = {}
    position = 0
    idx = np.flatnonzero(mask)
    for length in _run_lengths(frame, mask):
        rows = idx[position : position + length]
        position += length
        symbol = str(symbols[rows[0]])
        quota = length if quotas is None else min(quotas.get(symbol, length), length)
        for start, stop in regime_fit_chunks(length, quota):
            out.setdefault(symbol, []).append(observations[rows[start:stop]])
    return out


def fit_regime_hmm(
    frame: pd.DataFrame, train_mask: np.ndarray, n_states: int, seed: int
) -> RegimeModel:
    """Fit a Gaussian HMM on the HMM observation columns of the train rows only.

    Each symbol's train rows form their own sequence (no sequence joins two symbols or jumps
    over unselected rows). Observations are standardised with train-row statistics only.

    Raises:
        DataError: the mask does not match the frame, selects too few rows, or selects rows
            with undefined observations.
    """
    where = "fit_regime_hmm"
    require_sorted(frame, where)
    mask = np.asarray(train_mask)
    if mask.dtype != bool or mask.shape != (len(frame),):
        raise DataError(
            f"{where}: train_mask must be a boolean array of shape ({len(frame)},), got "
            f"dtype {mask.dtype} shape {mask.shape}"
        )
    sequences = regime_fit_sequences(frame, mask)
    return fit_regime_hmm_sequences(
        [seq for symbol in sorted(sequences) for seq in sequences[symbol]], n_states, seed
    )


def fit_regime_hmm_sequences(sequences: list[np.ndarray], n_states: int, seed: int) -> RegimeModel:
    """Fit the regime HMM on observation sequences (each ``(T_i, 2)``, train rows only).

    Observations are standardised with the statistics of these rows only.

    Raises:
        DataError: too few rows, or rows with undefined observations.
    """
    from hmmlearn.hmm import GaussianHMM  # imported here: only fitting needs it

    where = "fit_regime_hmm"
    if not 2 <= n_states <= 10:
        raise DataError(f"{where}: n_states = {n_states} is invalid: allowed range [2, 10]")
    sequences = [np.asarray(seq, dtype=np.float64) for seq in sequences if len(seq)]
    x = np.concatenate(sequences) if sequences else np.empty((0, len(HMM_OBSERVATION_COLUMNS)))
    if len(x) < 10 * n_states:
        raise DataError(
            f"{where}: {len(x)} train row(s) for {n_states} states; at least {10 * n_states} needed"
        )
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise DataError(
            f"{where}: observations at train row {int(np.flatnonzero(bad)[0]) + 1} are not "
            "finite; drop warm-up rows (add_technical_indicators does) before fitting"
        )
    obs_mean = x.mean(axis=0)
    obs_scale = x.std(axis=0)
    obs_scale = np.where(obs_scale > 0, obs_scale, 1.0)
    z = (x - obs_mean) / obs_scale
    hmm = GaussianHMM(
        n_components=n_states,
        # Diagonal covariances and the scaling recursion: ~4x faster than full/log on two
        # observations, with the same regimes on the real data.
        covariance_type="diag",
        implementation="scaling",
        # A few dozen EM steps reach the regime split; more only polish the likelihood.
        n_iter=50,
        tol=1e-3,
        random_state=seed,
        # Our own initialisation (below) instead of k-means: deterministic, and k-means on
        # tens of thousands of rows costs more than the whole EM.
        init_params="",
    )
    _initialise(hmm, z, n_states)
    hmm.fit(z, lengths=[len(seq) for seq in sequences])
    order = np.argsort(hmm.means_[:, 1], kind="stable")
    model = RegimeModel(
        n_states=n_states,
        seed=seed,
        startprob=hmm.startprob_[order].copy(),
        transmat=hmm.transmat_[np.ix_(order, order)].copy(),
        means=hmm.means_[order].copy(),
        covars=hmm.covars_[order].copy(),
        obs_mean=obs_mean,
        obs_scale=obs_scale,
        train_rows=len(x),
        log_likelihood=float(hmm.monitor_.history[-1]) if hmm.monitor_.history else float("nan"),
        converged=bool(hmm.monitor_.converged),
    )
    logger.info(
        "regime HMM: %d states fitted on %d train rows in %d sequence(s) (converged=%s)",
        n_states,
        len(x),
        len(sequences),
        model.converged,
    )
    return model


def _emission_log_likelihood(model: RegimeModel, z: np.ndarray) -> np.ndarray:
    """log N(z_t | mean_k, cov_k) for every row and state, vectorised (T, K)."""
    d = z.shape[1]
    out = np.empty((len(z), model.n_states))
    for k in range(model.n_states):
        chol = np.linalg.cholesky(model.covars[k])
        # (z - mean) @ inv(L).T: one small matrix product over the rows instead of a solve
        # with millions of right-hand sides.
        solved = (z - model.means[k]) @ np.linalg.inv(chol).T
        log_det = 2.0 * np.log(np.diag(chol)).sum()
        out[:, k] = -0.5 * (d * np.log(2.0 * np.pi) + log_det + (solved**2).sum(axis=1))
    return out


def filtered_state_probabilities(model: RegimeModel, frame: pd.DataFrame) -> np.ndarray:
    """p(state_t | obs_<=t) per row, filtering each symbol's rows in time order.

    The filter runs across time gaps within a symbol as if the next bar followed directly.
    """
    where = "predict_regimes"
    require_sorted(frame, where)
    x = _observation_matrix(frame, where)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: observations at row {row + 1} (symbol {frame['symbol'].iat[row]!r}) are "
            "not finite"
        )
    log_emission = _emission_log_likelihood(model, (x - model.obs_mean) / model.obs_scale)
    # Only the forward half of forward-backward: the backward half would look ahead.
    forward = forward_pass(model.startprob, model.transmat)
    probs = np.empty_like(log_emission)
    starts, stops, _ = symbol_blocks(frame)
    for start, stop in zip(starts, stops, strict=True):
        alpha = forward(np.ascontiguousarray(log_emission[start:stop]))
        alpha -= alpha.max(axis=1, keepdims=True)
        weights = np.exp(alpha)
        probs[start:stop] = weights / weights.sum(axis=1, keepdims=True)
    return probs


def predict_regimes(model: RegimeModel, frame: pd.DataFrame) -> np.ndarray:
    """Causal regime labels: argmax of p(state_t | obs_<=t) per symbol (0 = calmest)."""
    return filtered_state_probabilities(model, frame).argmax(axis=1).astype(np.int64)
