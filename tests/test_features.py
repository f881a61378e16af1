import pytest

from fdi_keras.features import compute_features, split_variables
from fdi_keras.specs import LayerSpec


def feats(kind, dims, attrs=None, dtype="float32", tile=1):
    return compute_features(LayerSpec(kind, dims, attrs or {}, dtype), tile)


def test_conv2d_same():
    f = feats("conv2d", dict(h=28, w=28, cin=32, cout=64, kh=3, kw=3, sh=1, sw=1))
    assert f["flops"] == 2 * 28 * 28 * 64 * 3 * 3 * 32
    assert f["bytes_in"] == 28 * 28 * 32 * 4
    assert f["bytes_out"] == 28 * 28 * 64 * 4
    assert f["param_bytes"] == (3 * 3 * 32 * 64 + 64) * 4


def test_conv2d_valid_stride_and_tile_padding():
    f = feats(
        "conv2d",
        dict(h=29, w=29, cin=8, cout=65, kh=3, kw=3, sh=2, sw=2),
        {"padding": "valid"},
        tile=16,
    )
    # 14x14 outputs; 65 output channels occupy 80 (5 tiles of 16) in the padded FLOPs/params.
    assert f["flops"] == 2 * 14 * 14 * 80 * 9 * 8
    assert f["bytes_out"] == 14 * 14 * 65 * 4
    assert f["param_bytes"] == (9 * 8 * 80 + 80) * 4


def test_in_tile_rounds_the_input_channels_a_gemm_reduces_over():
    """int8 GEMMs pack their depth (input channels) in runs of 8: FLOPs and parameters of a
    convolution or a Dense count cin rounded up, the bytes read stay what the tensors hold."""
    conv = LayerSpec("conv2d", dict(h=28, w=28, cin=9, cout=64, kh=3, kw=3, sh=1, sw=1))
    f = compute_features(conv, tile=16, in_tile=8)
    assert f["flops"] == 2 * 28 * 28 * 64 * 9 * 16
    assert f["param_bytes"] == (9 * 16 * 64 + 64) * 4
    assert f["bytes_in"] == 28 * 28 * 9 * 4
    dense = compute_features(LayerSpec("dense", dict(m=2, cin=3, cout=5)), in_tile=4)
    assert dense["flops"] == 2 * 2 * 4 * 5 and dense["bytes_in"] == 2 * 3 * 4
    # A depthwise convolution reduces over no channels: in_tile leaves it alone.
    dw = LayerSpec("depthwise_conv2d", dict(h=14, w=14, cin=9, mult=1, kh=3, kw=3, sh=1, sw=1))
    assert compute_features(dw, in_tile=8) == compute_features(dw)


def test_depthwise_with_multiplier():
    f = feats("depthwise_conv2d", dict(h=14, w=14, cin=16, mult=2, kh=3, kw=3, sh=1, sw=1))
    assert f["flops"] == 2 * 14 * 14 * 32 * 9
    assert f["bytes_out"] == 14 * 14 * 32 * 4
    assert f["param_bytes"] == (9 * 32 + 32) * 4


def test_dense_and_int8_bytes():
    f = feats("dense", dict(m=1, cin=256, cout=128), dtype="int8")
    assert f == {
        "flops": 2 * 256 * 128,
        "bytes_in": 256,
        "bytes_out": 128,
        "param_bytes": 256 * 128 + 128,
        "steps": 0,
        "copies": 0,
        "bytes_past_512KB": 0,
        "bytes_past_2MB": 0,
        "bytes_past_8MB": 0,
    }


def test_bytes_past_each_cache_knot_count_the_whole_working_set():
    f = feats("dense", dict(m=1, cin=1024, cout=1024))  # 4 MB of weights, 8 KB in and out
    working_set = 4 * (1024 + 1024 + 1024 * 1024 + 1024)
    assert f["bytes_past_512KB"] == working_set - 2**19
    assert f["bytes_past_2MB"] == working_set - 2**21
    assert f["bytes_past_8MB"] == 0


def test_pools_and_elementwise():
    assert (
        feats("pool2d", dict(h=28, w=28, c=32, kh=2, kw=2, sh=2, sw=2))["flops"] == 14 * 14 * 32 * 4
    )
    g = feats("global_pool", dict(h=7, w=7, c=256))
    assert (g["flops"], g["bytes_out"]) == (7 * 7 * 256, 256 * 4)
    a = feats("add", dict(h=14, w=14, c=64))
    assert (a["flops"], a["bytes_in"]) == (14 * 14 * 64, 2 * 14 * 14 * 64 * 4)
    p = feats("pad", dict(h=14, w=14, c=8, ph=1, pw=2))
    assert p["bytes_out"] == 15 * 16 * 8 * 4
    assert p["copies"] == 15 * 16  # each output pixel's channels, apart
    assert feats("concat", dict(h=14, w=14, c=64, n=4))["copies"] == 14 * 14 * 4
    many = feats("concat", dict(h=14, w=14, c=64, n=6))  # TFLite's builtin kernel: in steps
    assert (many["copies"], many["steps"]) == (0, 14 * 14 * 6)
    assert a["copies"] == g["copies"] == 0  # one contiguous tensor, or a reduction
    assert feats("lrn", dict(h=7, w=7, c=16, radius=2))["flops"] == 7 * 7 * 16 * 5
    assert feats("softmax", dict(n=1000))["flops"] == 1000


def test_a_convolution_with_a_window_counts_its_input_runs():
    conv = dict(h=28, w=28, cin=1, cout=20, kh=5, kw=5, sh=1, sw=1)
    valid = {"padding": "valid"}
    assert feats("conv2d", conv, valid)["copies"] == 24 * 24 * 25 * 20  # per value and tap
    strided = feats("conv2d", {**conv, "kh": 1, "kw": 1, "sh": 2, "sw": 2})
    assert strided["copies"] == 14 * 14 * 20  # a 1x1 at stride 2 gathers its pixels too
    assert feats("conv2d", {**conv, "kh": 1, "kw": 1})["copies"] == 0  # a plain GEMM


@pytest.mark.parametrize("kind, gates", [("gru", 3), ("lstm", 4)])
def test_recurrent(kind, gates):
    f = feats(kind, dict(t=10, cin=8, units=16))
    assert f["flops"] == 2 * 10 * gates * 16 * (8 + 16)
    assert f["param_bytes"] == gates * 16 * (8 + 16 + 2) * 4
    assert f["steps"] == 10  # the WHILE loop's per-step cost, whatever the width


def test_split_variables_include_dims_and_log_sizes():
    v = split_variables(LayerSpec("dense", dict(m=1, cin=256, cout=128)))
    assert v["cin"] == 256 and v["cout"] == 128 and 16 < v["log2_flops"] < 17


@pytest.mark.parametrize("cout, last", [(512, 32), (513, 1), (528, 16), (529, 17), (31, 31)])
def test_split_variables_count_the_channels_in_the_last_tile(cout, last):
    v = split_variables(LayerSpec("dense", dict(m=1, cin=1000, cout=cout)))
    assert v["cout_in_last_32"] == last
    assert v["cout_in_last_8"] == (cout - 1) % 8 + 1
    assert "m_in_last_32" not in v  # rows, not channels


@pytest.mark.parametrize(
    "kind, dims, attrs",
    [
        ("concat", dict(h=8, w=8, c=80, n=5), {}),
        ("concat", dict(h=8, w=8, c=96, n=6), {}),
        ("pool2d", dict(h=8, w=8, c=16, kh=1, kw=1, sh=2, sw=2), dict(op="avg", padding="valid")),
        ("pool2d", dict(h=8, w=8, c=16, kh=1, kw=1, sh=2, sw=2), dict(op="max", padding="same")),
        ("pool2d", dict(h=8, w=8, c=16, kh=2, kw=2, sh=2, sw=2), dict(op="avg", padding="valid")),
    ],
)
def test_steps_count_exactly_the_kernels_xnnpack_leaves_to_tflite(kind, dims, attrs):
    # The converted single-kernel model, as the profiler times it: a DELEGATE node in its
    # plan means XNNPack took the kernel; without one, TFLite's builtin kernel runs it, pixel
    # by pixel, which the `steps` feature counts.
    from ai_edge_litert.interpreter import Interpreter

    from fdi_keras.export import to_tflite
    from fdi_keras.profiling.build import build_kernel_model

    spec = LayerSpec(kind, dims, attrs)
    interpreter = Interpreter(model_content=to_tflite(build_kernel_model(spec)))
    interpreter.allocate_tensors()
    delegated = "DELEGATE" in [d["op_name"] for d in interpreter._get_ops_details()]
    steps = compute_features(spec)["steps"]
    assert (steps == 0) == delegated
    if not delegated:
        assert steps == (8 * 8 * dims["n"] if kind == "concat" else 4 * 4)
