"""Explanatory variables of a kernel: FLOPs, bytes read/written, parameter bytes, raw dims.

`tile` rounds the kernel's channel dimension up to a multiple (the runtime's register tile),
which turns the staircase of execution time into a line; `in_tile` rounds the input channels
a convolution or a Dense reduces over (their packed GEMM's depth) the same way. The timing tree
learns both.
"""

from __future__ import annotations

import math

from fdi_keras.specs import KINDS, LayerSpec, conv_output_size

# Working-set sizes (bytes in, out and parameters) past which a kernel's bytes come from a
# slower level of memory: a core's L2 (0.5-1 MB on phones, 1-2 MB on x86 cores), then a shared
# cache. `bytes_past_2MB` is the working set beyond 2 MB (0 below); a leaf's non-negative
# weights on these make time a convex piecewise-linear function of the working set. On the
# Intel Xeon VM (2 MB of L2) a global average pool read 1.4 MB at 100 GB/s and 10.5 MB at 31
# GB/s, and trees without these features put such kernels 55% low.
CACHE_KNOTS = {"bytes_past_512KB": 2**19, "bytes_past_2MB": 2**21, "bytes_past_8MB": 2**23}
FEATURES = ("flops", "bytes_in", "bytes_out", "param_bytes", "steps", "copies", *CACHE_KNOTS)
_ITEMSIZE = {"float32": 4, "float16": 4, "int8": 1}  # float16 models compute in float32


def round_up(value: int, tile: int) -> int:
    return -(-value // tile) * tile if tile > 1 else value


def _conv(d, attrs, tile, in_tile):
    oh = conv_output_size(d["h"], d["kh"], d["sh"], attrs["padding"])
    ow = conv_output_size(d["w"], d["kw"], d["sw"], attrs["padding"])
    cout, cin = round_up(d["cout"], tile), round_up(d["cin"], in_tile)
    macs = oh * ow * cout * d["kh"] * d["kw"] * cin
    params = d["kh"] * d["kw"] * cin * cout + cout
    return macs, d["h"] * d["w"] * d["cin"], oh * ow * d["cout"], params


def _depthwise(d, attrs, tile, in_tile):
    oh = conv_output_size(d["h"], d["kh"], d["sh"], attrs["padding"])
    ow = conv_output_size(d["w"], d["kw"], d["sw"], attrs["padding"])
    c = round_up(d["cin"] * d["mult"], tile)
    macs = oh * ow * c * d["kh"] * d["kw"]
    return (
        macs,
        d["h"] * d["w"] * d["cin"],
        oh * ow * d["cin"] * d["mult"],
        d["kh"] * d["kw"] * c + c,
    )


def _dense(d, attrs, tile, in_tile):
    cout, cin = round_up(d["cout"], tile), round_up(d["cin"], in_tile)
    return d["m"] * cin * cout, d["m"] * d["cin"], d["m"] * d["cout"], cin * cout + cout


def _pool(d, attrs, tile, in_tile):
    oh = conv_output_size(d["h"], d["kh"], d["sh"], attrs["padding"])
    ow = conv_output_size(d["w"], d["kw"], d["sw"], attrs["padding"])
    c = round_up(d["c"], tile)
    return oh * ow * c * d["kh"] * d["kw"], d["h"] * d["w"] * d["c"], oh * ow * d["c"], 0


def _elementwise_hwc(d, attrs, tile, in_tile, inputs=1):
    n = d["h"] * d["w"] * round_up(d["c"], tile)
    return n, inputs * d["h"] * d["w"] * d["c"], d["h"] * d["w"] * d["c"], 0


def _global_pool(d, attrs, tile, in_tile):
    n = d["h"] * d["w"] * round_up(d["c"], tile)
    return n, d["h"] * d["w"] * d["c"], d["c"], 0


def _pad(d, attrs, tile, in_tile):
    out = (d["h"] + d["ph"]) * (d["w"] + d["pw"]) * d["c"]
    return out, d["h"] * d["w"] * d["c"], out, 0


def _lrn(d, attrs, tile, in_tile):
    n = d["h"] * d["w"] * round_up(d["c"], tile)
    return n * (2 * d["radius"] + 1), d["h"] * d["w"] * d["c"], d["h"] * d["w"] * d["c"], 0


def _vector(d, attrs, tile, in_tile):
    return round_up(d["n"], tile), d["n"], d["n"], 0


def _recurrent(gates):
    def features(d, attrs, tile, in_tile):
        units = round_up(d["units"], tile)
        macs = d["t"] * gates * units * (d["cin"] + d["units"])
        params = gates * units * (d["cin"] + d["units"] + 2)
        return macs, d["t"] * d["cin"], d["t"] * d["units"], params

    return features


_FORMULAS = {
    "conv2d": _conv,
    "depthwise_conv2d": _depthwise,
    "dense": _dense,
    "pool2d": _pool,
    "global_pool": _global_pool,
    "add": lambda d, a, t, i: _elementwise_hwc(d, a, t, i, inputs=2),
    "squared_difference": lambda d, a, t, i: _elementwise_hwc(d, a, t, i, inputs=2),
    "concat": _elementwise_hwc,
    "pad": _pad,
    "lrn": _lrn,
    "activation": _vector,
    "softmax": _vector,
    "gru": _recurrent(3),
    "lstm": _recurrent(4),
}
# Kinds whose input channels are the depth of a packed GEMM, which `in_tile` rounds up: XNNPack's
# int8 (QS8) GEMMs pack that depth in runs of 8 on x86 with AVX-512 (4 or 8 on ARM), so an int8
# convolution's time steps every 8 input channels (on the AMD EPYC VM, 28x28 3x3 to 64 outputs:
# cin 8 22.9 us, 9-16 38.3, 17-24 53.3, 25-32 69.4; 2026-12-06); float32's step 1.
IN_TILE_KINDS = ("conv2d", "dense")
# Kinds whose work is multiply-accumulates (2 FLOPs each); the others count one op per element.
_MAC_KINDS = {"conv2d", "depthwise_conv2d", "dense", "gru", "lstm"}
# XNNPack takes no concatenation of more inputs than this; TFLite's builtin kernel runs it.
XNNPACK_MAX_CONCAT_INPUTS = 5


def _steps(spec: LayerSpec) -> int:
    """Iterations the runtime pays a fixed cost for outside a vectorized kernel: the timesteps
    of a recurrent kernel (LiteRT runs it as a WHILE loop), and the per-pixel loops of the ops
    XNNPack leaves to TFLite's builtin kernels: a concatenation of more than
    XNNPACK_MAX_CONCAT_INPUTS inputs copies each input's channels pixel by pixel, and a 1x1
    pooling window at stride 2 or more visits each output pixel (on one AMD EPYC VM: 21 ns per
    pixel and input for 110x110x8 from 6 inputs, 258 us where the same bytes from 2 inputs
    through XNNPack take about 12 us). 0 for every other kernel."""
    d = spec.dims
    if spec.kind in ("gru", "lstm"):
        return d["t"]
    if spec.kind == "concat" and d["n"] > XNNPACK_MAX_CONCAT_INPUTS:
        return d["h"] * d["w"] * d["n"]
    if spec.kind == "pool2d" and d["kh"] == d["kw"] == 1 and max(d["sh"], d["sw"]) > 1:
        padding = spec.attrs["padding"]
        oh = conv_output_size(d["h"], 1, d["sh"], padding)
        return oh * conv_output_size(d["w"], 1, d["sw"], padding)
    return 0


def _copies(spec: LayerSpec) -> int:
    """The contiguous runs an XNNPack kernel reads or copies one at a time, each at a fixed
    cost that no FLOP or byte count shows when the runs are short:
    - a padding copies each output pixel's channels apart (its rows are cut by the padded
      columns): on one AMD EPYC VM a pad of 57x57x14 took 31.9 us where the bytes of wide pads
      predicted 19.4;
    - a concatenation copies each input's channels of each pixel; 0 for one XNNPack does not
      take: its runs are its `steps` (one count, not two equal columns of which a leaf could
      weigh either);
    - a convolution with a window (or a stride) runs as an indirect GEMM: for each output value
      and window tap it reads one run of `cin` input channels through a pointer, so a network's
      first layer (1-4 channels) pays that per-run cost on almost every multiply-accumulate.
      LeNet-5's 28x28x1 5x5 convolution took 25.5 us in int8 (float32: 15.4 us), which its
      FLOPs put at 10.3 us (13.7 us). A 1x1 convolution at stride 1 is a plain GEMM over
      contiguous rows: 0.
    0 for other kinds."""
    d = spec.dims
    if spec.kind == "conv2d" and not (d["kh"] == d["kw"] == d["sh"] == d["sw"] == 1):
        oh = conv_output_size(d["h"], d["kh"], d["sh"], spec.attrs["padding"])
        ow = conv_output_size(d["w"], d["kw"], d["sw"], spec.attrs["padding"])
        return oh * ow * d["kh"] * d["kw"] * d["cout"]
    if spec.kind == "pad":
        return (d["h"] + d["ph"]) * (d["w"] + d["pw"])
    if spec.kind == "concat" and d["n"] <= XNNPACK_MAX_CONCAT_INPUTS:
        return d["h"] * d["w"] * d["n"]
    return 0


def weight_bytes(specs) -> float:
    """The weight bytes of a model made of the kernels `specs`: whether they stay in cache
    between invokes depends on it (`fdi_keras.timing.composition`)."""
    return float(sum(compute_features(s)["param_bytes"] for s in specs))


def compute_features(spec: LayerSpec, tile: int = 1, in_tile: int = 1) -> dict[str, float]:
    """FLOPs, bytes in/out and parameter bytes of `spec`, channels padded to `tile` (and the
    input channels of IN_TILE_KINDS to `in_tile`; bytes moved stay unpadded), its
    `steps` (`_steps`): the iterations the runtime pays a fixed cost for, whose cost dominates
    small recurrent layers and the ops XNNPack does not take, its `copies` (`_copies`):
    the contiguous runs a padding or concatenation copies one by one, and its working set's
    bytes past each of CACHE_KNOTS.

    Example:
        >>> s = LayerSpec("dense", dict(m=1, cin=256, cout=128))
        >>> compute_features(s)["flops"]
        65536.0
    """
    ops, n_in, n_out, n_params = _FORMULAS[spec.kind](spec.dims, spec.attrs, tile, in_tile)
    itemsize = _ITEMSIZE[spec.dtype]
    working_set = (n_in + n_out + n_params) * itemsize
    return {
        "flops": float(2 * ops if spec.kind in _MAC_KINDS else ops),
        "bytes_in": float(n_in * itemsize),
        "bytes_out": float(n_out * itemsize),
        "param_bytes": float(n_params * itemsize),
        "steps": float(_steps(spec)),
        "copies": float(_copies(spec)),
        **{name: float(max(0, working_set - size)) for name, size in CACHE_KNOTS.items()},
    }


# Channel dims whose last register tile a tree may split on, and the tile sizes: the variable
# `cout_in_last_32` counts the channels the last tile of 32 holds (1-32; 32 when 32 divides
# cout). Where a tile does not divide the channels, the runtime may switch code paths rather
# than pad: a batch-1 Dense on the AMD EPYC VM (XNNPack, float32, 1 thread) whose last tile of
# 32 held 1-16 outputs ran ~1.6x slower than one whose last tile held 17-32 (cin 1000: 512
# outputs 22.2 us, 513 35.6 us, 528 35.6 us, 529 23.5 us; 2026-12-06): fewer channels, more
# time, a step that neither rounding cout up to a tile nor `cout % k == 0` can express.
LAST_TILE_DIMS = ("cin", "cout", "c", "units")
LAST_TILE_SIZES = (8, 16, 32, 64)
LAST_TILE = "_in_last_"


def is_last_tile(name: str) -> bool:
    """Last-tile variables are named like `cout_in_last_32`."""
    return LAST_TILE in name


def split_variables(spec: LayerSpec) -> dict[str, float]:
    """The variables a tree may split on: raw dims, the channels in the last tile of each
    channel dim (`cout_in_last_32`, see LAST_TILE_DIMS), one 0/1 indicator per categorical
    attr value (`op=max`), and log2 of FLOPs and memory."""
    f = compute_features(spec)
    return {
        **{k: float(v) for k, v in spec.dims.items()},
        **{
            f"{k}{LAST_TILE}{m}": float((v - 1) % m + 1)
            for k, v in spec.dims.items()
            if k in LAST_TILE_DIMS and v > 0
            for m in LAST_TILE_SIZES
        },
        **{f"{k}={v}": 1.0 for k, v in spec.attrs.items()},
        **{
            f"{k}={other}": 0.0
            for k, values in KINDS[spec.kind][1].items()
            for other in values
            if other != spec.attrs[k]
        },
        "log2_flops": math.log2(f["flops"] + 1.0),
        "log2_bytes": math.log2(f["bytes_in"] + f["bytes_out"] + f["param_bytes"] + 1.0),
    }
