"""How kernels compose into a model: the whole-model correction, fitted on random networks.

A kernel timed alone (as the per-kind trees are fitted) finds its weights in cache on every
invoke; inside a model its weights were last read a whole forward pass earlier, so a kernel
with many weights and little arithmetic (a classifier head, a late 1x1 or 3x3 convolution on
a few pixels) waits for memory. On this project's x86 VM ResNet50 at 64 px runs 1.8x slower
than the sum of its kernels timed alone, MobileNetV2 1.5x. The correction is a roofline per
kernel, so a report still says where the time goes: inside a model, kernel k takes

    max(0, scale * t_k + per_kernel_us + per_activation_byte_us * activation_bytes_k)
        + max(0, weight_bytes_k / bandwidth - t_k)

where t_k is the tree's single-kernel time: a kernel is never faster than reading its weights
from memory at `bandwidth`. A model adds `overhead_us` once per invoke. `per_kernel_us` may be
negative, down to -2 us: a single-kernel model's time includes an invoke's fixed cost that a
kernel inside a model does not pay again. The bandwidth is chosen on a grid (infinite: no
memory term); the other coefficients are fitted on the networks of
`fdi_keras.profiling.networks` measured whole, once per statistic (the minimum over invokes
and the median), on relative errors with a soft-L1 loss, so that a few networks timed during
a burst of interference on a shared machine do not steer the fit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import least_squares

from fdi_keras.features import compute_features

STATISTICS = ("min", "median")
# Fitted coefficients, in the order of the design's columns (the invoke, then per kernel).
TERMS = ("overhead_us", "scale", "per_kernel_us", "per_activation_byte_us")
LOWER_BOUNDS = np.array([0.0, 0.0, -2.0, 0.0])  # per_kernel_us may be negative
BANDWIDTHS_GBPS = (*np.geomspace(1, 100, 41), np.inf)  # inf: no memory-bound term
# Fewer networks than this cannot pin down the coefficients: no composition term is fitted.
MIN_NETWORKS = 10


def memory_excess(single_us, weight_bytes, bandwidth_gbps: float):
    """How much longer reading `weight_bytes` at `bandwidth_gbps` takes than the kernel's
    single-kernel time (0 when it computes longer than it reads); element-wise on arrays."""
    return np.maximum(0.0, weight_bytes / (bandwidth_gbps * 1e3) - single_us)  # GB/s = 1e3 B/us


def kernel_terms(single_us: float, spec) -> np.ndarray:
    """One kernel's row of the linear part of the design: [0, t_k, 1, activation bytes] (the
    invoke column is 1 once per network, not per kernel)."""
    f = compute_features(spec)
    return np.array([0.0, single_us, 1.0, f["bytes_in"] + f["bytes_out"]])


def _fit(x: np.ndarray, memory: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients within LOWER_BOUNDS minimizing a soft-L1 loss of the relative errors of
    `x @ w + memory` against `y`."""
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    a = x / scale / y[:, None]
    target = 1.0 - memory / y
    start = np.array([0.0, 1.0, 0.0, 0.0]) * scale
    result = least_squares(
        lambda w: a @ w - target,
        start,
        bounds=(LOWER_BOUNDS * scale, np.inf),
        loss="soft_l1",
        f_scale=0.05,
    )
    w = result.x
    w[np.abs(w) < 1e-6] = 0.0  # solver round-off (scaled units), not a real contribution
    return w / scale


@dataclasses.dataclass
class Composition:
    """The fitted whole-model correction for one statistic (see the module docstring)."""

    statistic: str
    overhead_us: float
    scale: float
    per_kernel_us: float
    per_activation_byte_us: float
    bandwidth_gbps: float
    networks: int
    cv_mape: float  # 5-fold cross-validated MAPE over the networks

    @classmethod
    def fit(cls, statistic: str, networks: list[list[tuple]], measured_us) -> Composition:
        """Fits on networks measured whole: `networks[n]` lists network n's kernels as
        (single-kernel time in us, LayerSpec) pairs.

        Raises:
            ValueError: an unknown statistic, or fewer than MIN_NETWORKS networks.
        """
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}. Received: {statistic!r}")
        if len(networks) < MIN_NETWORKS:
            raise ValueError(
                f"A composition term needs at least {MIN_NETWORKS} networks timed whole. "
                f"Received: {len(networks)}. Profile more with --kinds=network."
            )
        y = np.asarray(measured_us, dtype=float)
        x = np.array([np.sum([kernel_terms(t, s) for t, s in n], axis=0) for n in networks])
        x[:, 0] = 1.0

        # Per network, its kernels' single times and weight bytes, read once for every bandwidth.
        singles = [np.array([t for t, _ in n]) for n in networks]
        weights = [np.array([compute_features(s)["param_bytes"] for _, s in n]) for n in networks]

        def memory(bandwidth):
            return np.array(
                [memory_excess(t, w, bandwidth).sum() for t, w in zip(singles, weights)]
            )

        def choose(rows):
            """(error, bandwidth, weights) of the best bandwidth, fitted on `rows` only."""
            best = None
            for bandwidth in BANDWIDTHS_GBPS:
                m = memory(bandwidth)
                w = _fit(x[rows], m[rows], y[rows])
                error = float(np.mean(np.abs((x[rows] @ w + m[rows]) / y[rows] - 1)))
                if best is None or error < best[0]:
                    best = (error, bandwidth, w)
            return best

        _, bandwidth, w = choose(np.arange(len(y)))
        folds = np.arange(len(y)) % 5  # cross-validation re-chooses the bandwidth per fold
        errors = np.zeros(len(y))
        for fold in range(5):
            test = folds == fold
            _, b, wf = choose(np.flatnonzero(~test))
            errors[test] = np.abs((x[test] @ wf + memory(b)[test]) / y[test] - 1)
        return cls(
            statistic,
            *map(float, w),
            bandwidth_gbps=float(bandwidth),
            networks=len(y),
            cv_mape=float(errors.mean()),
        )

    def kernel_us(self, single_us: float, spec) -> float:
        """Kernel `spec`'s time inside a model, given its single-kernel time `single_us`."""
        linear = float(kernel_terms(single_us, spec)[1:] @ self.weights()[1:])
        weight_bytes = compute_features(spec)["param_bytes"]
        return max(0.0, linear) + float(memory_excess(single_us, weight_bytes, self.bandwidth_gbps))

    def weights(self) -> np.ndarray:
        return np.array([getattr(self, t) for t in TERMS])

    def explain(self) -> str:
        memory = (
            f"\n    + the time its weights take to read at {self.bandwidth_gbps:.3g} GB/s beyond "
            "its single-kernel time"
            if np.isfinite(self.bandwidth_gbps)
            else ""
        )
        return (
            f"inside a model ({self.statistic} over invokes; fitted on {self.networks} random "
            f"networks timed whole, cross-validated MAPE {100 * self.cv_mape:.1f}%):\n"
            f"  kernel time = {self.scale:.3g} * single-kernel time {self.per_kernel_us:+.3g} us"
            f" + {1e3 * self.per_activation_byte_us:.3g} us per KB of activations{memory}"
            f"\n  model time = {self.overhead_us:.3g} us per invoke + the sum of kernel times"
        )

    def __post_init__(self):
        if self.bandwidth_gbps is None:  # JSON has no infinity
            self.bandwidth_gbps = np.inf

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["bandwidth_gbps"] = d["bandwidth_gbps"] if np.isfinite(d["bandwidth_gbps"]) else None
        return d
