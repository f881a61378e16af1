"""Leaf models: non-negative linear time models fitted on a relative-error objective."""

from __future__ import annotations

import numpy as np
from scipy.optimize import lsq_linear, nnls

from fdi_keras.features import FEATURES


def design_matrix(features: list[dict]) -> np.ndarray:
    """Columns: intercept, then FEATURES (FLOPs, bytes in, bytes out, parameter bytes, the
    runtime's loop steps: recurrent timesteps, per-pixel loops of ops XNNPack leaves to TFLite;
    the runs a padding or concatenation copies; the working set's bytes past each cache knot)."""
    return np.array([[1.0] + [f[name] for name in FEATURES] for f in features])


def fit_nonnegative(x: np.ndarray, y: np.ndarray, intercept_max: float = np.inf) -> np.ndarray:
    """Weights w >= 0 minimizing sum(((x @ w) - y) / y)^2, so small and large layers count alike.

    `intercept_max` bounds the intercept (column 0), a kernel's fixed cost per invoke: the
    tree passes its kind's fastest measured time, which no kernel's fixed cost can exceed.
    Unbounded, a leaf of large layers is free to explain part of their times with a large
    constant (68 us on one profile's depthwise convolutions over 48 px), which it then
    charges in full to every smaller layer that falls into it.

    Columns are scaled to unit maximum before `scipy.optimize.nnls`, for conditioning; only
    when its intercept exceeds the bound is the fit redone with the bound (`lsq_linear`'s
    bounded-variable least squares; an unbounded optimum within the bound is the bounded one).
    """
    a = x / y[:, None]
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    w, _ = nnls(a / scale, np.ones(len(y)), maxiter=50 * x.shape[1])
    if w[0] > intercept_max * scale[0]:
        upper = np.full(x.shape[1], np.inf)
        upper[0] = intercept_max * scale[0]
        w = lsq_linear(a / scale, np.ones(len(y)), bounds=(0.0, upper), method="bvls").x
    w[w < 1e-9] = 0.0  # solver round-off, not a real (and unreadable) contribution
    return w / scale


def relative_sse(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(((x @ w) - y) ** 2 / y**2))
