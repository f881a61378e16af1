"""Leaf models: non-negative linear time models fitted on a relative-error objective."""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from fdi_keras.features import FEATURES


def design_matrix(features: list[dict]) -> np.ndarray:
    """Columns: intercept, then FEATURES (FLOPs, bytes in, bytes out, parameter bytes,
    recurrent steps)."""
    return np.array([[1.0] + [f[name] for name in FEATURES] for f in features])


def fit_nonnegative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weights w >= 0 minimizing sum(((x @ w) - y) / y)^2, so small and large layers count alike.

    Columns are scaled to unit maximum before `scipy.optimize.nnls`, for conditioning.
    """
    a = x / y[:, None]
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    w, _ = nnls(a / scale, np.ones(len(y)), maxiter=50 * x.shape[1])
    w[w < 1e-9] = 0.0  # solver round-off, not a real (and unreadable) contribution
    return w / scale


def relative_sse(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(((x @ w) - y) ** 2 / y**2))
