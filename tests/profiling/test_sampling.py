from collections import Counter

import pytest

from fdi_keras.features import compute_features
from fdi_keras.profiling.chains import CHAIN_SHARE, CHAIN_VERSION
from fdi_keras.profiling.networks import (
    GENERATOR_VERSION,
    NARROW_SHARE,
    NARROW_VERSION,
    TINY_SHARE,
    TINY_VERSION,
)
from fdi_keras.profiling.sampling import (
    DEFAULT_COUNTS,
    LARGE_ELEMENTS,
    LARGE_KINDS,
    LARGE_SHARE,
    MAX_MACS,
    sample_configs,
    sample_held_out,
)
from fdi_keras.specs import KINDS, NETWORK, SWEEP_DIMS
from fdi_keras.timing.tree import sweep_groups

KERNEL_KINDS = sorted(set(KINDS) - {NETWORK})


@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_deterministic_distinct_within_budget(kind):
    specs = sample_configs(kind, 120, seed=3)
    assert specs == sample_configs(kind, 120, seed=3)
    assert len({s.key() for s in specs}) == 120
    assert all(compute_features(s)["flops"] / 2 <= MAX_MACS for s in specs)


@pytest.mark.parametrize("kind", ["conv2d", "dense", "add"])  # with and without streams
def test_more_configs_keep_every_config_of_fewer(kind):
    fewer, more = sample_configs(kind, 80), sample_configs(kind, 200)
    assert {s.key() for s in fewer} <= {s.key() for s in more}  # a larger profile resumes


def test_a_sixth_of_conv2d_configs_are_first_layers():
    specs = sample_configs("conv2d", 420)
    first = [s for s in specs if s.dims["cin"] <= 2]  # the other draw starts at 3 channels
    assert len(first) >= 14  # 45% of the 70 first layers draw 1 or 2 (in sweeps of cout)
    assert all(s.dims["kw"] >= 3 for s in first)  # a first layer has a window


def test_a_twelfth_of_conv2d_configs_are_valid_windows_covering_a_small_map():
    # A stock model at a small input ends on them (InceptionV3 at 75 px: a valid 3x3 window
    # at stride 2 on a 3x3 map); the main draw almost never makes one.
    def covering(s):
        d = s.dims
        return s.attrs["padding"] == "valid" and d["kh"] >= 3 and d["h"] <= d["kh"] + 2

    specs = sample_configs("conv2d", 420)
    assert 30 <= sum(covering(s) for s in specs) <= 45  # 35, and a few of the main draw's
    assert sum(covering(s) for s in specs[: 420 - 35 - 70]) <= 10


@pytest.mark.parametrize("kind", LARGE_KINDS)
def test_a_share_of_memory_bound_configs_are_on_maps_past_a_core_s_cache(kind):
    """Where a memory-bound kernel leaves the cache (2 MB of L2 on the Intel VM) its time per
    byte changes; the main draw alone puts few rows there."""
    n = DEFAULT_COUNTS[kind]
    large = sample_configs(kind, n)[n - round(LARGE_SHARE * n) :]
    elements = [
        s.dims["n"] if "h" not in s.dims else s.dims["h"] ** 2 * s.dims.get("cin", s.dims.get("c"))
        for s in large
    ]
    # (channels rounded to a multiple of 8 move a map a little past the bounds)
    assert all(0.8 * LARGE_ELEMENTS[0] <= e <= 1.1 * LARGE_ELEMENTS[1] for e in elements)
    past_l2 = sum(compute_features(s)["bytes_in"] > 2e6 for s in large)
    assert past_l2 >= len(large) / 4


def test_sweeps_cover_consecutive_channel_counts():
    specs = sample_configs("dense", 300)
    shapes = {}
    for s in specs:
        shapes.setdefault((s.dims["m"], s.dims["cin"]), set()).add(s.dims["cout"])
    longest = max(len(v) for v in shapes.values())
    assert longest >= 6


@pytest.mark.parametrize("kind", ["conv2d", "depthwise_conv2d"])
def test_windows_reach_a_1x1_map_with_same_padding_only(kind):
    # A stock model at 32 px ends on 2x2 and 1x1 maps and squeeze-and-excitation convolves a
    # 1x1 map at any size: the trees must not extrapolate there. A `valid` window never
    # exceeds its input.
    specs = sample_configs(kind, 300)
    squares = [s for s in specs if s.dims["h"] == s.dims["w"]]
    assert sum(s.dims["h"] == 1 for s in squares) >= 10
    assert sum(s.dims["h"] == 2 for s in squares) >= 5
    assert all(s.attrs["padding"] == "same" for s in squares if s.dims["h"] < s.dims["kh"])


def test_the_default_depthwise_draw_covers_7x7_windows():
    # XNNPack runs 7x7 depthwise kernels far slower per tap than 3x3 and 5x5; NASNet's were
    # predicted 74-84% low when the profile held one 7x7 sweep (8x8 maps, stride 1).
    specs = sample_configs("depthwise_conv2d", DEFAULT_COUNTS["depthwise_conv2d"])
    sevens = [s for s in specs if s.dims["kh"] == 7]
    assert len(sevens) >= 50 and len({s.dims["h"] for s in sevens}) >= 8
    assert {(s.dims["sh"], s.attrs["padding"]) for s in sevens} == {
        (1, "same"),
        (1, "valid"),
        (2, "same"),
        (2, "valid"),
    }


def test_the_default_draws_cover_the_ops_xnnpack_leaves_to_tflite():
    # XNNPack takes no concatenation of more than 5 inputs and no 1x1 pooling at stride 2
    # (NASNet has both); TFLite's builtin kernels run them, so the trees need rows of both
    # sides of each limit, enough for a leaf of their own (min_samples_leaf=20).
    concats = sample_configs("concat", DEFAULT_COUNTS["concat"])
    assert sum(s.dims["n"] > 5 for s in concats) >= 20
    assert sum(s.dims["n"] <= 5 for s in concats) >= 20
    assert all(s.dims["c"] >= s.dims["n"] for s in concats)  # every input has a channel
    pools = sample_configs("pool2d", DEFAULT_COUNTS["pool2d"])
    ones = [s for s in pools if s.dims["kh"] == 1]
    assert len(ones) >= 20 and all(s.dims["sh"] == 2 for s in ones)
    assert {s.attrs["op"] for s in ones} == {"max", "avg"}


def test_the_default_draws_give_every_activation_function_a_leaf_of_its_own():
    # gelu runs about 3x relu per element: sharing relu's leaf, it was predicted 60% low.
    # A leaf needs min_samples_leaf=20 training rows after the validation sweeps are held out.
    fns = Counter(s.attrs["fn"] for s in sample_configs("activation", DEFAULT_COUNTS["activation"]))
    assert set(fns) == set(KINDS["activation"][1]["fn"])
    assert min(fns.values()) >= 30


def test_dtype_and_threads_are_carried():
    s = sample_configs("dense", 3, dtype="int8", threads=2)[0]
    assert (s.dtype, s.threads) == ("int8", 2)


def test_unknown_kind():
    with pytest.raises(ValueError, match="Supported kinds"):
        sample_configs("conv3d", 3)


@pytest.mark.parametrize("kind", ["conv2d", "dense", "depthwise_conv2d", "lstm"])
def test_held_out_configs_are_new_and_not_sweeps(kind):
    fitted = {s.key() for s in sample_configs(kind, 300)}
    held = sample_held_out(kind, 150)
    assert held == sample_held_out(kind, 150)
    assert not fitted & {s.key() for s in held}
    # no sweeps: the fitted set has runs of 6+ consecutive channel counts, the held-out none
    assert longest_channel_run(held) <= 2 < 6 <= longest_channel_run(sample_configs(kind, 300))


def longest_channel_run(specs):
    groups, dim = sweep_groups(specs), SWEEP_DIMS.get(specs[0].kind)
    if dim is None:
        return 1
    longest = 1
    for g in set(groups):
        values = sorted({s.dims[dim] for s, h in zip(specs, groups) if h == g})
        run = 1
        for a, b in zip(values, values[1:]):
            run = run + 1 if b == a + 1 else 1
            longest = max(longest, run)
    return longest


def test_network_configs_fitted_and_held_out_are_disjoint():
    fitted = sample_configs(NETWORK, 20)
    for generator, count in [
        (GENERATOR_VERSION, 20),
        (NARROW_VERSION, round(NARROW_SHARE * 20)),
        (CHAIN_VERSION, round(CHAIN_SHARE * 20)),
        (TINY_VERSION, round(TINY_SHARE * 20)),
    ]:
        seeds = [s.dims["seed"] for s in fitted if s.attrs["generator"] == generator]
        assert seeds == list(range(count))
    assert not {s.key() for s in fitted} & {s.key() for s in sample_held_out(NETWORK, 20)}


def test_int8_networks_have_no_chains_and_none_too_large_to_convert():
    # TensorFlow's int8 converter takes minutes for a chain of tens of millions of weights,
    # and did not finish random network 7 (37.8M weights) in 7 minutes.
    fitted = sample_configs(NETWORK, 20, dtype="int8")
    seeds = [s.dims["seed"] for s in fitted if s.attrs["generator"] == GENERATOR_VERSION]
    assert 7 not in seeds and seeds == [s for s in range(20) if s != 7]
    assert all(s.attrs["generator"] != CHAIN_VERSION and s.dtype == "int8" for s in fitted)
    assert 7 in [s.dims["seed"] for s in sample_configs(NETWORK, 20)]  # float32 keeps it
