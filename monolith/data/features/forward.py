"""The HMM forward pass: log p(obs_<=t, state_t), the causal half of forward-backward.

The one place that uses hmmlearn's private compiled module (``hmmlearn._hmmc``): hmmlearn has
no public forward-only pass (its public ``predict_proba`` is forward-backward, which looks
ahead), and the compiled recursion is ~100x faster than a Python loop over the rows. If a
hmmlearn release moves it, ``forward_log_numpy`` (the same recursion) takes over.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def forward_log_numpy(
    log_start: np.ndarray, log_trans: np.ndarray, log_emission: np.ndarray
) -> np.ndarray:
    """Log forward variables log p(obs_<=t, state_t); the reference and fallback path."""
    alpha = np.empty_like(log_emission)
    alpha[0] = log_start + log_emission[0]
    for t in range(1, len(log_emission)):
        prev = alpha[t - 1][:, None] + log_trans
        top = prev.max(axis=0)
        alpha[t] = top + np.log(np.exp(prev - top).sum(axis=0)) + log_emission[t]
    return alpha


def forward_pass(startprob: np.ndarray, transmat: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The forward pass of a chain: log emissions ``(T, K)`` -> log forward variables."""
    try:
        from hmmlearn import _hmmc

        def forward(e: np.ndarray) -> np.ndarray:
            return _hmmc.forward_log(startprob, transmat, e)[1]
    except (ImportError, AttributeError):  # pragma: no cover - hmmlearn internals moved
        with np.errstate(divide="ignore"):
            log_start, log_trans = np.log(startprob), np.log(transmat)

        def forward(e: np.ndarray) -> np.ndarray:
            return forward_log_numpy(log_start, log_trans, e)

    return forward
