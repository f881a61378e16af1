"""Configuration sampling over realistic mobile ranges, dense where the staircases live.

Ranges (inclusive; integers drawn log-uniformly so small and large layers are both covered):

| kind | ranges |
|---|---|
| conv2d | h=w in 1..224 (k..224 with `valid` padding; a fifth 1-D: h=1, w in 16..512, as |
|  | Conv1D runs), cin 3..2048, cout 4..2048, k in {1,3,5,7}, stride 1 or 2; a sixth of |
|  | them first layers: cin 1..4, cout 4..128, k in {3,5,7}, h=w in 16..224 (or 1-D); a |
|  | twelfth `valid` windows covering a small map: k in {3,5,7}, h=w in k..k+2, c 8..1024 |
| depthwise_conv2d | h=w in 1..224 (k..224 with `valid` padding), cin 8..1024, multiplier 1 |
|  | (sometimes 2), k in {3,5,7}, stride 1 or 2 |
| dense | m=1 (sometimes a sequence of 2..128 rows), cin 8..4096, cout 4..4096 |
| pool2d | h in 4..112, c 8..512, k 2 or 3 at stride 1 or 2, or k 1 at stride 2; max or avg |
| global_pool | h in 1..32, c 8..2048, avg (sometimes max) |
| add / squared_difference / concat / pad | h in 1..112, c 8..1024; concat of 2..8 inputs; |
|  | pad 1..2 per axis |
| lrn | h in 7..56, c 16..512, radius 2..5 |
| activation / softmax | 16..2^20 elements (softmax up to 4096) |
| gru / lstm | timesteps 8..256, input 3..128, units 8..256 |
| network | a random network of `fdi_keras.profiling.networks` (some narrow), or a chain of |
|  | one kernel repeated (`fdi_keras.profiling.chains`), timed whole |

A quarter of the memory-bound kinds' configurations (activation, add, concat, depthwise, pooling,
pad, squared_difference) are drawn on large maps instead: 2^16..2^22 elements (0.25-16 MB in
float32) on sides of 7..224, past the caches of phones' and desktop cores (`LARGE_KINDS`).

Work is capped (about 2e8 multiply-accumulates, 16 MB of tensors) to stay within a phone's
budget for one layer. Half the channel counts are rounded to multiples of 8, as designed
networks are; the other half are arbitrary, as pruned networks are. About a third of the
conv/dense/depthwise configurations are sweeps: one base shape at 6-12 consecutive channel
counts around a multiple of 16, which is where the staircases are.

Sampling is deterministic in (kind, seed) and a prefix property holds: asking for more
configurations extends the list, so a resumed or enlarged run reuses every measured row.
"""

from __future__ import annotations

import zlib

import numpy as np

from fdi_keras.features import compute_features, weight_bytes
from fdi_keras.profiling.chains import CHAIN_SHARE, CHAIN_VERSION
from fdi_keras.profiling.networks import (
    NARROW_SHARE,
    NARROW_VERSION,
    TINY_SHARE,
    TINY_VERSION,
    network_kernels,
    network_specs,
)
from fdi_keras.specs import KINDS, NETWORK, LayerSpec

# Configurations per kind of a default profile (20-23 minutes on a 2-core x86 VM): more
# where the time has staircases over many dimensions, fewer for element-wise kinds whose
# time is a line in their size (up to a cache's size: each memory-bound kind draws at least
# 80, a quarter of them on large maps, so that past the cache it has a leaf's worth of rows,
# min_samples_leaf); and random networks timed whole for the composition term.
DEFAULT_COUNTS = {
    "conv2d": 420,  # 315, 70 first layers and 35 covering windows (_SPECIAL_STREAMS)
    "depthwise_conv2d": 300,
    "dense": 200,
    "pool2d": 100,  # 1x1 windows need 20 (below) beside 25 large maps
    "global_pool": 80,
    "add": 80,
    "squared_difference": 80,  # LayerNormalization's; a line in its size, like add
    "concat": 80,
    "pad": 80,
    # Six functions a few times apart in cost (gelu about 3x relu): each needs the rows of
    # its own leaf (min_samples_leaf); at 80 the tree gave gelu and tanh relu's leaf, 60% low.
    "activation": 240,
    "softmax": 30,
    # 120, not 60: with 60 rows (fewer than 4 leaves' worth) a recurrent kind had no folds to
    # prune with, and its unpruned tree split on noise (UCI HAR's 10-unit GRU 12% low alone).
    "gru": 120,
    "lstm": 120,
    "lrn": 100,
    "network": 50,  # and 20 narrow, 20 tiny, 60 chains, and their kernels (profiler.sample_all)
}
# Held-out random networks use seeds from this offset on (fitted ones start at 0).
HELD_OUT_NETWORKS = 1_000_000
MAX_MACS = 2e8
MAX_TENSOR_BYTES = 16e6


def _logint(rng, low, high):
    return int(round(np.exp(rng.uniform(np.log(low), np.log(high)))))


class _Draws:
    """A random stream whose channel counts are multiples of 8 with probability `p_round`."""

    def __init__(self, seed, p_round):
        self.generator = np.random.default_rng(seed)
        self.p_round = p_round

    def __getattr__(self, name):  # random(), choice(), integers(), uniform()
        return getattr(self.generator, name)


def _channels(rng, low, high):
    c = _logint(rng, low, high)
    return max(low, int(round(c / 8)) * 8) if rng.random() < rng.p_round else c


def _smallest_side(k, padding):
    """The smallest input side a k x k window runs on: 1 with `same` padding (a stock model
    at 32 px ends its stages at 2x2 and 1x1, and squeeze-and-excitation convolves a 1x1 map
    at any input size), k without."""
    return 1 if padding == "same" else k


def _conv2d(rng):
    k = int(rng.choice([1, 3, 5, 7], p=[0.4, 0.45, 0.1, 0.05]))
    s = int(rng.choice([1, 2], p=[0.75, 0.25]))
    pad = "same" if rng.random() < 0.8 else "valid"
    if rng.random() < 0.2:
        h, w, kh = 1, _logint(rng, 16, 512), 1
    else:
        h = w = _logint(rng, _smallest_side(k, pad), 224)
        kh = k
    dims = dict(
        h=h,
        w=w,
        cin=_channels(rng, 3, 2048),
        cout=_channels(rng, 4, 2048),
        kh=kh,
        kw=k,
        sh=1 if h == 1 else s,
        sw=s,
    )
    return dims, {"padding": pad}, "cout"


def _input_conv2d(rng):
    """A network's first convolution: the input's few channels (grayscale 1, stereo 2, RGB 3,
    RGB-D 4), often a 5x5 or 7x7 window, on an image-sized map or a raw 1-D signal."""
    k = int(rng.choice([3, 5, 7], p=[0.5, 0.3, 0.2]))
    s = int(rng.choice([1, 2], p=[0.6, 0.4]))
    pad = "same" if rng.random() < 0.7 else "valid"
    cin = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.1, 0.45, 0.1]))
    if rng.random() < 0.2:
        h, w, kh = 1, _logint(rng, 32, 1024), 1
    else:
        h = w = _logint(rng, 16, 224)
        kh = k
    dims = dict(
        h=h, w=w, cin=cin, cout=_channels(rng, 4, 128), kh=kh, kw=k, sh=1 if h == 1 else s, sw=s
    )
    return dims, {"padding": pad}, "cout"


def _covering_conv2d(rng):
    """A window without padding that covers all or nearly all of a small map, as a stock
    model's last convolutions at a small input (InceptionV3 at 75 px reduces 3x3 maps to 1x1
    with a `valid` 3x3 window at stride 2): one to three output positions a side."""
    k = int(rng.choice([3, 5, 7], p=[0.7, 0.15, 0.15]))
    s = int(rng.choice([1, 2]))
    h = k + int(rng.integers(0, 3))
    dims = dict(
        h=h, w=h, cin=_channels(rng, 8, 1024), cout=_channels(rng, 8, 1024), kh=k, kw=k, sh=s, sw=s
    )
    return dims, {"padding": "valid"}, "cout"


def _depthwise(rng):
    # 7x7: NASNet's separable convs. XNNPack runs them far slower per tap than 3x3 and 5x5
    # (21x21x32 at stride 2: 42.8 us alone): a tenth of 200 drew one sweep (8x8, stride 1),
    # and NASNet's 7x7 kernels were predicted 74-84% low.
    k = int(rng.choice([3, 5, 7], p=[0.55, 0.2, 0.25]))
    pad = "same" if rng.random() < 0.7 else "valid"
    h = _logint(rng, _smallest_side(k, pad), 224)
    s = int(rng.choice([1, 2], p=[0.7, 0.3]))
    dims = dict(
        h=h,
        w=h,
        cin=_channels(rng, 8, 1024),
        mult=1 if rng.random() < 0.9 else 2,
        kh=k,
        kw=k,
        sh=s,
        sw=s,
    )
    return dims, {"padding": pad}, "cin"


def _dense(rng):
    m = 1 if rng.random() < 0.85 else _logint(rng, 2, 128)
    return dict(m=m, cin=_channels(rng, 8, 4096), cout=_channels(rng, 4, 4096)), {}, "cout"


def _pool(rng):
    # 1x1 windows at stride 2: NASNet's `_adjust_block` subsamples so. XNNPack does not take
    # them (TFLite's builtin kernel runs them), so they are not the 2x2 and 3x3 line.
    k = int(rng.choice([1, 2, 3], p=[0.3, 0.35, 0.35]))
    s = 2 if k == 1 else int(rng.choice([1, 2], p=[0.3, 0.7]))
    h = _logint(rng, 4, 112)
    attrs = {
        "op": "max" if rng.random() < 0.6 else "avg",
        "padding": "same" if rng.random() < 0.5 else "valid",
    }
    return dict(h=h, w=h, c=_channels(rng, 8, 512), kh=k, kw=k, sh=s, sw=s), attrs, None


def _global_pool(rng):
    h = _logint(rng, 1, 32)
    return (
        dict(h=h, w=h, c=_channels(rng, 8, 2048)),
        {"op": "avg" if rng.random() < 0.7 else "max"},
        None,
    )


def _hwc(rng):
    h = _logint(rng, 1, 112)
    return dict(h=h, w=h, c=_channels(rng, 8, 1024))


def _concat(rng):
    # Up to 8 inputs: XNNPack takes at most 5 (NASNet's cells concatenate 6, which TFLite's
    # builtin kernel runs), so the tree needs rows on both sides of that limit.
    return {**_hwc(rng), "n": int(rng.integers(2, 9))}, {}, None


def _pad(rng):
    return {**_hwc(rng), "ph": int(rng.integers(1, 3)), "pw": int(rng.integers(1, 3))}, {}, None


def _lrn(rng):
    h = _logint(rng, 7, 56)
    return dict(h=h, w=h, c=_channels(rng, 16, 512), radius=int(rng.integers(2, 6))), {}, None


def _activation(rng):
    fns = KINDS["activation"][1]["fn"]
    return dict(n=_logint(rng, 16, 2**20)), {"fn": str(rng.choice(fns))}, None


def _recurrent(rng):
    return (
        dict(t=_logint(rng, 8, 256), cin=_logint(rng, 3, 128), units=_channels(rng, 8, 256)),
        {},
        "units",
    )


def _large_map(rng, low_channels, high_channels=2048):
    """(side, channels) of a square feature map of LARGE_ELEMENTS elements (log-uniform),
    its side 7..224 and its channels within the bounds."""
    while True:
        elements, side = _logint(rng, *LARGE_ELEMENTS), _logint(rng, 7, 224)
        c = elements // (side * side)
        c = max(8, int(round(c / 8)) * 8) if rng.random() < rng.p_round else c
        if low_channels <= c <= high_channels:
            return side, c


def _large(sampler):
    """`sampler`'s configurations moved onto a large feature map (see LARGE_KINDS)."""

    def draw(rng):
        dims, attrs, channel_dim = sampler(rng)
        if "h" not in dims:  # an activation: a count of elements
            return {**dims, "n": _logint(rng, *LARGE_ELEMENTS)}, attrs, channel_dim
        channels = "cin" if "cin" in dims else "c"
        side, c = _large_map(rng, max(dims.get("n", 1), 4))  # concat: a channel per input
        return {**dims, "h": side, "w": side, channels: c}, attrs, channel_dim

    return draw


_SAMPLERS = {
    "conv2d": _conv2d,
    "depthwise_conv2d": _depthwise,
    "dense": _dense,
    "pool2d": _pool,
    "global_pool": _global_pool,
    "add": lambda rng: (_hwc(rng), {}, None),
    "squared_difference": lambda rng: (_hwc(rng), {}, None),
    "concat": _concat,
    "pad": _pad,
    "lrn": _lrn,
    "activation": _activation,
    "softmax": lambda rng: (dict(n=_logint(rng, 2, 4096)), {}, None),
    "gru": _recurrent,
    "lstm": _recurrent,
}


# Memory-bound kinds, a LARGE_SHARE of whose configurations are drawn on feature maps of
# LARGE_ELEMENTS elements (0.25-16 MB in float32): the main draw's log-uniform sides and
# channels seldom make a tensor of over a megabyte, where such a kernel outgrows a core's
# cache (2 MB of L2 on the Intel VM; 0.5-1 MB on phones) and runs at the next level's
# bandwidth. Fitted without these rows, the Intel VM's trees put its held-out add, concat,
# pad, squared_difference, pool2d and global_pool kernels of over 2 MB 24-63% low (those under
# it -6 to +13%), and EfficientNetB0 at 224 px's 112x112x96 element-wise kernels 40% low.
LARGE_KINDS = (
    "activation",
    "add",
    "concat",
    "depthwise_conv2d",
    "global_pool",
    "pad",
    "pool2d",
    "squared_difference",
)
LARGE_SHARE = 1 / 4
LARGE_ELEMENTS = (2**16, 2**22)

# Configurations the main draw almost never makes, each a share of the kind's configurations
# drawn by a random stream of its own, so that the kind's other configurations stay what they
# were (prefixes of their streams):
# - first layers: the log-uniform channel draw (from 3) almost never makes them, and XNNPack
#   runs them at another speed per multiply-accumulate: LeNet-5's 28x28x1 5x5 convolution
#   takes 25.5 us in int8 (4,000 MACs per us), 10.3 us predicted without these rows and the
#   input-run count they identify (`fdi_keras.features._copies`);
# - covering windows: a `valid` window over all of a 3-9 px map (1-3 output positions a side)
#   is drawn in 3 of 420 configurations, and the zoo has 41 such kernels (InceptionV3 and
#   Inception-ResNet at 75 px), which the tree fitted without them predicted 21% slow (every
#   one of them over); with these 35 rows, 12% (+2% on average);
# - large maps of the memory-bound kinds (LARGE_KINDS above).
_SPECIAL_STREAMS = {
    "conv2d": (
        (b"input layers", _input_conv2d, 1 / 6),
        (b"covering windows", _covering_conv2d, 1 / 12),
    ),
    **{kind: ((b"large maps", _large(_SAMPLERS[kind]), LARGE_SHARE),) for kind in LARGE_KINDS},
}


def _within_budget(spec: LayerSpec) -> bool:
    f = compute_features(spec)
    return (
        f["flops"] / 2 <= MAX_MACS
        and max(f["bytes_in"], f["bytes_out"], f["param_bytes"]) <= MAX_TENSOR_BYTES
    )


def _sweep(rng, dims, channel_dim) -> list[dict]:
    """Consecutive channel counts around a multiple of 16: the steps of the staircase."""
    center = max(16, int(round(dims[channel_dim] / 16)) * 16)
    length = int(rng.integers(6, 13))
    start = max(1, center - int(rng.integers(1, length)))
    return [{**dims, channel_dim: c} for c in range(start, start + length)]


def _draw(kind, num_configs, seed, p_round, sweeps, dtype, threads) -> list[LayerSpec]:
    """`num_configs` distinct configurations of `kind`: for a kind with special streams
    (`_SPECIAL_STREAMS`), each stream's share of them is drawn from a random stream of its
    own, after the others from the stream `seed`. Each part is a prefix of a longer draw, so
    asking for more configurations gives a superset of them."""
    if kind not in _SAMPLERS:
        raise ValueError(f"Cannot sample kind {kind!r}. Supported kinds: {sorted(_SAMPLERS)}")
    streams = [
        (name, sampler, int(round(share * num_configs)))
        for name, sampler, share in _SPECIAL_STREAMS.get(kind, ())
    ]
    main = num_configs - sum(count for _, _, count in streams)
    rng = _Draws(seed, p_round)
    specs = _draw_from(_SAMPLERS[kind], kind, main, rng, sweeps, dtype, threads)
    for name, sampler, count in streams:
        rng = _Draws([*seed, zlib.crc32(name)], p_round)
        known = {s.key() for s in specs}
        extra = _draw_from(sampler, kind, num_configs, rng, sweeps, dtype, threads)
        specs += [s for s in extra if s.key() not in known][:count]
    return specs


def _draw_from(sampler, kind, num_configs, rng, sweeps, dtype, threads) -> list[LayerSpec]:
    specs: dict[str, LayerSpec] = {}
    while len(specs) < num_configs:
        dims, attrs, channel_dim = sampler(rng)
        group = [dims]
        if sweeps and channel_dim is not None and rng.random() < 0.35:
            group = _sweep(rng, dims, channel_dim)
        for d in group:
            spec = LayerSpec(kind, d, attrs, dtype, threads)
            if _within_budget(spec) and len(specs) < num_configs:
                specs.setdefault(spec.key(), spec)
    return list(specs.values())


# TensorFlow 2.21's int8 converter converted every random network of up to 22M weights in
# seconds (17.6M: 8.8 s) but had not finished the one of 37.8M (seed 7) after 7 minutes.
MAX_INT8_NETWORK_WEIGHT_BYTES = 25e6


def _convertible(networks: list[LayerSpec]) -> list[LayerSpec]:
    """`networks` without the int8 ones too large for the converter to finish."""
    return [
        s
        for s in networks
        if s.dtype != "int8" or weight_bytes(network_kernels(s)) <= MAX_INT8_NETWORK_WEIGHT_BYTES
    ]


def sample_configs(
    kind: str, num_configs: int, seed: int = 0, dtype: str = "float32", threads: int = 1
) -> list[LayerSpec]:
    """The first `num_configs` distinct configurations of `kind` (deterministic in `seed`);
    for `network`, the first `num_configs` random networks of `fdi_keras.profiling.networks`,
    the first NARROW_SHARE as many narrow networks, CHAIN_SHARE as many chains and TINY_SHARE
    as many tiny networks
    (`fdi_keras.profiling.chains`). In int8, no chains (TensorFlow's int8 converter did not
    finish the first, 17M weights, in 11 minutes: an int8 tree's memory curve is fitted on the
    random networks alone), and no network of more than MAX_INT8_NETWORK_WEIGHT_BYTES."""
    if kind == NETWORK:
        chains = 0 if dtype == "int8" else int(round(CHAIN_SHARE * num_configs))
        narrow = int(round(NARROW_SHARE * num_configs))
        tiny = int(round(TINY_SHARE * num_configs))
        return (
            _convertible(network_specs(num_configs, seed, dtype, threads))
            + network_specs(narrow, seed, dtype, threads, NARROW_VERSION)
            + network_specs(chains, seed, dtype, threads, CHAIN_VERSION)
            + network_specs(tiny, seed, dtype, threads, TINY_VERSION)
        )
    return _draw(kind, num_configs, [seed, zlib.crc32(kind.encode())], 0.5, True, dtype, threads)


def sample_held_out(
    kind: str, num_configs: int, seed: int = 0, dtype: str = "float32", threads: int = 1
) -> list[LayerSpec]:
    """An independent validation set of `kind`: configurations drawn over the same documented
    ranges by another random stream, with no sweeps and no preference for multiples of 8, so
    none of them is a near-copy of a fitted row (for `network`: networks of other seeds).
    Never fit or prune on these."""
    if kind == NETWORK:
        return _convertible(network_specs(num_configs, HELD_OUT_NETWORKS + seed, dtype, threads))
    stream = [seed, zlib.crc32(kind.encode()), 0x68656C64]
    return _draw(kind, num_configs, stream, 0.0, False, dtype, threads)
