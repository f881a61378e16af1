"""How kernels compose into a model: the whole-model correction, fitted on random networks.

A kernel timed alone (as the per-kind trees are fitted) finds its weights in cache on every
invoke; inside a model its weights were last read a whole forward pass earlier. When the
model's weights fit the cache they are still there (only slower to reach than when alone);
when they do not, every kernel reads its weights from memory, and a kernel with many weights
and little arithmetic (a 3x3 convolution on a few pixels late in ResNet50, a classifier head)
waits for it. On this project's AMD EPYC VM ResNet50 at 32 px runs 2.3x the sum of its kernels
timed alone and EfficientNetB0 2.1x, while MobileNetV2 (1.6 MB of weights) runs 0.7x (a kernel
alone also pays an invoke's fixed cost). The correction is a roofline per kernel, so a report
still says where the time goes: inside a model, kernel k takes

    max(0, scale * t_k + per_kernel_us + per_activation_byte_us * activation_bytes_k)
        + max(0, weight_bytes_k / bandwidth - t_k)

where t_k is the tree's single-kernel time: a kernel is never faster than reading its weights
at `bandwidth`, which is `resident_bandwidth_gbps` when the whole model's weights are at most
`cache_mb` (they stay in cache between invokes) and `bandwidth_gbps` otherwise. A model adds
`overhead_us` once per invoke. `per_kernel_us` may be negative, down to -2 us, and for the
minimum no lower than minus the fastest single-kernel time (a kernel saves at most its own
invoke's fixed cost). The cache size
and the bandwidths are chosen on grids (an infinite bandwidth: no memory term; an infinite
cache: one bandwidth for every model); the other coefficients are fitted on the networks of
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
# per_kernel_us may be negative, down to -2 us or minus `fit`'s `fixed_cost_us` if tighter
LOWER_BOUNDS = np.array([0.0, 0.0, -2.0, 0.0])
BANDWIDTHS_GBPS = (*np.geomspace(1, 100, 41), np.inf)  # inf: no memory-bound term
RESIDENT_BANDWIDTHS_GBPS = BANDWIDTHS_GBPS[::2]  # searched per cache size: a coarser grid
# Model weights (MB) that still find themselves in cache at the next invoke; inf: no split.
CACHE_MB = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, np.inf)
# A cache split must cut the fit's error by this much to be kept (two more grid values chosen
# on the same networks otherwise fit their noise).
SPLIT_GAIN = 0.9
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


def _fit(x: np.ndarray, memory: np.ndarray, y: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Coefficients of at least `lower` minimizing a soft-L1 loss of the relative errors of
    `x @ w + memory` against `y`."""
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    a = x / scale / y[:, None]
    target = 1.0 - memory / y
    start = np.array([0.0, 1.0, 0.0, 0.0]) * scale
    result = least_squares(
        lambda w: a @ w - target,
        start,
        bounds=(lower * scale, np.inf),
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
    bandwidth_gbps: float  # weights read beyond the cache (all of them without a cache split)
    networks: int
    cv_mape: float  # 5-fold cross-validated MAPE over the networks
    cache_mb: float = np.inf  # models with at most these weights keep them in cache
    resident_bandwidth_gbps: float | None = None  # and read them at this (default: bandwidth)

    @classmethod
    def fit(
        cls,
        statistic: str,
        networks: list[list[tuple]],
        measured_us,
        fixed_cost_us: float | None = None,
    ) -> Composition:
        """Fits on networks measured whole: `networks[n]` lists network n's kernels as
        (single-kernel time in us, LayerSpec) pairs. `fixed_cost_us`, the fastest
        single-kernel time measured, bounds what a kernel saves inside a model: at most the
        fixed cost of the invoke its single-kernel time includes (`per_kernel_us` >= minus
        it). The networks alone hardly pin that coefficient down (their kernels are large),
        yet it decides small models: unbounded, the fit took -0.94 us on one profile whose
        fastest kernel took 0.42 us, predicting a thinned MobileNetV2's kernels as free.

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
        lower = LOWER_BOUNDS.copy()
        if fixed_cost_us is not None:  # the tighter of the two floors
            i = TERMS.index("per_kernel_us")
            lower[i] = max(lower[i], -float(fixed_cost_us))
        x = np.array([np.sum([kernel_terms(t, s) for t, s in n], axis=0) for n in networks])
        x[:, 0] = 1.0

        # Per network, its kernels' single times and weight bytes, read once for every bandwidth.
        singles = [np.array([t for t, _ in n]) for n in networks]
        weights = [np.array([compute_features(s)["param_bytes"] for _, s in n]) for n in networks]
        model_mb = np.array([w.sum() / 1e6 for w in weights])
        memory = {
            b: np.array([memory_excess(t, w, b).sum() for t, w in zip(singles, weights)])
            for b in {*BANDWIDTHS_GBPS, *RESIDENT_BANDWIDTHS_GBPS}
        }

        def memory_of(rows, choice):
            cache, resident, beyond = choice
            return np.where(model_mb <= cache, memory[resident], memory[beyond])[rows]

        def fitted(rows, choice):
            """(relative error on `rows`, coefficients) with the grid values `choice`."""
            m = memory_of(rows, choice)
            w = _fit(x[rows], m, y[rows], lower)
            return float(np.mean(np.abs((x[rows] @ w + m) / y[rows] - 1))), w

        def choose(rows):
            """((cache_mb, resident bandwidth, bandwidth), coefficients) fitted on `rows`: the
            best single bandwidth first, then per cache size the best (faster) resident one
            for the models that fit it, kept if it cuts the error to SPLIT_GAIN of the first."""
            single = min(
                ((*fitted(rows, (np.inf, b, b)), (np.inf, b, b)) for b in BANDWIDTHS_GBPS),
                key=lambda c: c[0],
            )
            beyond = single[2][2]
            best = (SPLIT_GAIN * single[0], single[1], single[2])
            for cache in CACHE_MB[:-1]:
                if not (model_mb[rows] > cache).any() or (model_mb[rows] > cache).all():
                    continue  # the split would not separate these networks
                for resident in (b for b in RESIDENT_BANDWIDTHS_GBPS if b > beyond):
                    error, w = fitted(rows, (cache, resident, beyond))
                    if error < best[0]:
                        best = (error, w, (cache, resident, beyond))
            return best[2], best[1]

        choice, w = choose(np.arange(len(y)))
        folds = np.arange(len(y)) % 5  # cross-validation re-chooses the grid values per fold
        errors = np.zeros(len(y))
        for fold in range(5):
            test = np.flatnonzero(folds == fold)
            fold_choice, wf = choose(np.flatnonzero(folds != fold))
            predicted = x[test] @ wf + memory_of(test, fold_choice)
            errors[test] = np.abs(predicted / y[test] - 1)
        cache, resident, beyond = choice
        return cls(
            statistic,
            *map(float, w),
            bandwidth_gbps=float(beyond),
            networks=len(y),
            cv_mape=float(errors.mean()),
            cache_mb=float(cache),
            resident_bandwidth_gbps=float(resident),
        )

    def kernel_us(self, single_us: float, spec, model_weight_bytes: float = np.inf) -> float:
        """Kernel `spec`'s time inside a model whose weights total `model_weight_bytes` (they
        decide which bandwidth its weights are read at), given its single-kernel time."""
        linear = float(kernel_terms(single_us, spec)[1:] @ self.weights()[1:])
        weight_bytes = compute_features(spec)["param_bytes"]
        bandwidth = self.bandwidth_for(model_weight_bytes)
        return max(0.0, linear) + float(memory_excess(single_us, weight_bytes, bandwidth))

    def bandwidth_for(self, model_weight_bytes: float) -> float:
        """GB/s at which a model with `model_weight_bytes` of weights reads them."""
        resident = model_weight_bytes <= self.cache_mb * 1e6
        return self.resident_bandwidth_gbps if resident else self.bandwidth_gbps

    def weights(self) -> np.ndarray:
        return np.array([getattr(self, t) for t in TERMS])

    def explain(self) -> str:
        def reading(bandwidth):
            return f"at {bandwidth:.3g} GB/s" if np.isfinite(bandwidth) else "at no cost"

        if np.isfinite(self.cache_mb):
            memory = (
                "\n    + the time its weights take to read beyond its single-kernel time: "
                f"{reading(self.resident_bandwidth_gbps)} when the model's weights fit "
                f"{self.cache_mb:.3g} MB (they stay in cache), else "
                f"{reading(self.bandwidth_gbps)}"
            )
        elif np.isfinite(self.bandwidth_gbps):
            memory = (
                f"\n    + the time its weights take to read {reading(self.bandwidth_gbps)} "
                "beyond its single-kernel time"
            )
        else:
            memory = ""
        return (
            f"inside a model ({self.statistic} over invokes; fitted on {self.networks} random "
            f"networks timed whole, cross-validated MAPE {100 * self.cv_mape:.1f}%):\n"
            f"  kernel time = {self.scale:.3g} * single-kernel time {self.per_kernel_us:+.3g} us"
            f" + {1e3 * self.per_activation_byte_us:.3g} us per KB of activations{memory}"
            f"\n  model time = {self.overhead_us:.3g} us per invoke + the sum of kernel times"
        )

    def __post_init__(self):
        if self.resident_bandwidth_gbps is None:  # one bandwidth for every model
            self.resident_bandwidth_gbps = self.bandwidth_gbps

    @classmethod
    def from_dict(cls, d: dict) -> Composition:
        """Reads `to_dict()`'s output; a term saved before the cache split (no cache_mb) reads
        every model's weights at its one bandwidth, as it did."""
        d = dict(d)
        d.setdefault("resident_bandwidth_gbps", d.get("bandwidth_gbps"))
        for key in ("bandwidth_gbps", "cache_mb", "resident_bandwidth_gbps"):
            d[key] = np.inf if d.get(key) is None else d[key]  # JSON has no infinity
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("bandwidth_gbps", "cache_mb", "resident_bandwidth_gbps"):
            d[key] = d[key] if np.isfinite(d[key]) else None
        return d
