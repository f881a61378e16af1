"""How kernels compose into a model: the whole-model correction, fitted on random networks.

A kernel timed alone (as the per-kind trees are fitted) finds its weights in cache on every
invoke; inside a model its weights were last read a whole forward pass earlier, so a kernel
with many weights and little arithmetic (a classifier head, a late 1x1 or 3x3 convolution on
a few pixels) waits for memory. On this project's x86 VM ResNet50 at 64 px runs 1.8x slower
than the sum of its kernels timed alone, MobileNetV2 1.5x. The correction is a roofline per
kernel, so a report still says where the time goes: inside a model, kernel k takes

    scale * t_k + per_kernel_us + memory_bound * max(0, weight_bytes_k / bandwidth - t_k)
                + per_activation_byte_us * activation_bytes_k

where t_k is the tree's single-kernel time and `bandwidth` the memory bandwidth weights are
read at; a model adds `overhead_us` once per invoke. `per_kernel_us` may be negative, down to
-2 us: a single-kernel model's time includes an invoke's fixed cost that a kernel inside a
model does not pay again. The bandwidth is chosen on a grid; the other coefficients are fitted
on the networks of `fdi_keras.profiling.networks` measured whole, once per statistic (the
minimum over invokes and the median), on relative errors with a soft-L1 loss, so that a few
networks timed during a burst of interference on a shared machine do not steer the fit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import least_squares

from fdi_keras.features import compute_features

STATISTICS = ("min", "median")
# Coefficients, in the order of the design's columns (the invoke, then per-kernel terms).
TERMS = ("overhead_us", "scale", "per_kernel_us", "memory_bound", "per_activation_byte_us")
BANDWIDTHS_GBPS = np.geomspace(0.5, 200, 49)
LOWER_BOUNDS = np.array([0.0, 0.0, -2.0, 0.0, 0.0])  # per_kernel_us may be negative


def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients within LOWER_BOUNDS minimizing a soft-L1 loss of the relative errors."""
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    a = x / scale / y[:, None]
    start = np.array([0.0, 1.0, 0.0, 0.0, 0.0]) * scale
    result = least_squares(
        lambda w: a @ w - 1.0,
        start,
        bounds=(LOWER_BOUNDS * scale, np.inf),
        loss="soft_l1",
        f_scale=0.05,
    )
    w = result.x
    w[np.abs(w) < 1e-6] = 0.0  # solver round-off (scaled units), not a real contribution
    return w / scale


def kernel_terms(single_us: float, spec, bandwidth_gbps: float) -> np.ndarray:
    """One kernel's row of the composition design: [0, t_k, 1, memory-bound excess,
    activation bytes] (the invoke column is 1 once per network, not per kernel)."""
    f = compute_features(spec)
    memory_us = f["param_bytes"] / (bandwidth_gbps * 1e3)  # GB/s = 1e3 bytes per us
    return np.array(
        [0.0, single_us, 1.0, max(0.0, memory_us - single_us), f["bytes_in"] + f["bytes_out"]]
    )


@dataclasses.dataclass
class Composition:
    """The fitted whole-model correction for one statistic (see the module docstring)."""

    statistic: str
    overhead_us: float
    scale: float
    per_kernel_us: float
    memory_bound: float
    per_activation_byte_us: float
    bandwidth_gbps: float
    networks: int
    cv_mape: float  # 5-fold cross-validated MAPE over the networks

    @classmethod
    def fit(cls, statistic: str, networks: list[list[tuple]], measured_us) -> Composition:
        """Fits on networks measured whole: `networks[n]` lists network n's kernels as
        (single-kernel time in us, LayerSpec) pairs."""
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}. Received: {statistic!r}")
        y = np.asarray(measured_us, dtype=float)
        best = None
        for bandwidth in BANDWIDTHS_GBPS:
            x = _network_sums(networks, bandwidth)
            w = _fit(x, y)
            error = float(np.mean(np.abs((x @ w) / y - 1)))
            if best is None or error < best[0]:
                best = (error, bandwidth, x, w)
        _, bandwidth, x, w = best
        folds = np.arange(len(y)) % 5
        errors = np.zeros(len(y))
        for fold in range(5):
            test = folds == fold
            errors[test] = np.abs(x[test] @ _fit(x[~test], y[~test]) / y[test] - 1)
        return cls(
            statistic,
            *map(float, w),
            bandwidth_gbps=float(bandwidth),
            networks=len(y),
            cv_mape=float(errors.mean()),
        )

    def kernel_us(self, single_us: float, spec) -> float:
        """Kernel `spec`'s time inside a model, given its single-kernel time `single_us`."""
        return float(kernel_terms(single_us, spec, self.bandwidth_gbps)[1:] @ self.weights()[1:])

    def weights(self) -> np.ndarray:
        return np.array([getattr(self, t) for t in TERMS])

    def explain(self) -> str:
        return (
            f"inside a model ({self.statistic} over invokes; fitted on {self.networks} random "
            f"networks timed whole, cross-validated MAPE {100 * self.cv_mape:.1f}%):\n"
            f"  kernel time = {self.scale:.3g} * single-kernel time + {self.per_kernel_us:.3g} us"
            f"\n    + {self.memory_bound:.3g} * the time its weights take to read at "
            f"{self.bandwidth_gbps:.3g} GB/s beyond its single-kernel time"
            f"\n    + {1e3 * self.per_activation_byte_us:.3g} us per KB of activations"
            f"\n  model time = {self.overhead_us:.3g} us per invoke + the sum of kernel times"
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _network_sums(networks, bandwidth_gbps) -> np.ndarray:
    """Per network, its kernels' terms summed, with the invoke column set to 1."""
    x = np.array(
        [
            np.sum([kernel_terms(t, s, bandwidth_gbps) for t, s in kernels], axis=0)
            for kernels in networks
        ]
    )
    x[:, 0] = 1.0
    return x
