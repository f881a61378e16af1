import numpy as np
import pytest

from fdi_keras.features import compute_features
from fdi_keras.kernels import model_kernels
from fdi_keras.profiling.build import build_kernel_model
from fdi_keras.profiling.networks import (
    GENERATOR_VERSION,
    MAX_MACS,
    MAX_PARAMS,
    NARROW_SHARE,
    NARROW_VERSION,
    PROFILED_NETWORK_KERNELS,
    TINY_SHARE,
    TINY_VERSION,
    network_kernel_specs,
    network_kernels,
    network_specs,
    profiled_kernels,
    random_network,
)
from fdi_keras.specs import LayerSpec


@pytest.mark.parametrize("seed", range(6))
def test_random_networks_are_deterministic_and_within_budget(seed):
    a, b = random_network(seed), random_network(seed)
    assert [type(x).__name__ for x in a.layers] == [type(x).__name__ for x in b.layers]
    assert a.count_params() == b.count_params() <= MAX_PARAMS[GENERATOR_VERSION]
    specs = network_kernel_specs(seed)
    macs = sum(compute_features(s)["flops"] / 2 for s in specs if s.kind != "pool2d")
    assert macs <= MAX_MACS * 1.5  # pools and element-wise ops are not budgeted
    assert [s.key() for s in specs] == [k.spec.key() for k in model_kernels(a)]


@pytest.mark.parametrize(
    "version, drawn",
    [
        ("v1", {0: (1029360, 16), 1: (4136933, 34), 3: (4149, 15)}),
        ("v2", {1: (13679495, 34), 5: (18811585, 27), 12: (17563893, 25)}),
        ("v3", {0: (581054, 21), 2: (2565170, 81), 7: (37750883, 48)}),
    ],
)
def test_earlier_versions_still_draw_the_networks_they_drew(version, drawn):
    """Profiles hold rows of earlier versions' networks: their seeds must keep meaning the
    networks timed (parameter and kernel counts as that version drew them)."""
    for seed, (params, kernels) in drawn.items():
        assert random_network(seed, version).count_params() == params
        assert len(network_kernel_specs(seed, version=version)) == kernels


def test_deep_networks_are_timed_whole_without_their_kernels():
    from fdi_keras.profiling import sample_all

    specs = sample_all(["network"], {"network": 12})
    keys = {s.key() for s in specs}
    networks = [
        s for s in specs if s.kind == "network" and s.attrs["generator"] == GENERATOR_VERSION
    ]
    sizes = {s.key(): len(network_kernels(s)) for s in networks}
    assert max(sizes.values()) > PROFILED_NETWORK_KERNELS  # v3 draws deep ones
    shallow_kernels = {
        k.key()
        for n in networks
        if sizes[n.key()] <= PROFILED_NETWORK_KERNELS
        for k in network_kernels(n)
    }
    assert shallow_kernels <= keys  # every kernel of a shallow network is profiled
    profiled = {k.key() for s in specs if s.kind == "network" for k in profiled_kernels(s)}
    for network in networks:  # a deep one's only when a shallow network or a chain has it
        if sizes[network.key()] > PROFILED_NETWORK_KERNELS:
            own = {k.key() for k in network_kernels(network)}
            assert own & keys <= profiled


def test_networks_with_more_weights_than_a_last_level_cache_are_drawn():
    weights_mb = [
        sum(compute_features(k)["param_bytes"] for k in network_kernel_specs(s)) / 1e6
        for s in range(20)
    ]
    assert max(weights_mb) > 64 and min(weights_mb) < 1


def test_networks_vary():
    sizes = [random_network(s).count_params() for s in range(8)]
    kinds = {k.kind for s in range(8) for k in network_kernel_specs(s)}
    assert len(set(sizes)) == 8
    assert {"conv2d", "depthwise_conv2d", "add"} <= kinds


def test_a_network_spec_builds_its_network():
    (spec,) = network_specs(1, first_seed=3)
    model = build_kernel_model(spec)
    assert model.count_params() == random_network(3).count_params()
    assert np.all(np.isfinite(model(np.zeros((1, *model.input_shape[1:]))).numpy()))


def test_sample_all_profiles_the_networks_kernels_and_keeps_their_count():
    from fdi_keras.profiling import sample_all
    from fdi_keras.profiling.sampling import DEFAULT_COUNTS

    specs = sample_all(["dense", "network"], 5)
    networks = [s for s in specs if s.kind == "network" and s.attrs["generator"] != "c1"]
    narrow = [s for s in networks if s.attrs["generator"] == NARROW_VERSION]
    tiny = [s for s in networks if s.attrs["generator"] == TINY_VERSION]
    assert len(networks) - len(narrow) - len(tiny) == DEFAULT_COUNTS["network"]  # per kind
    assert len(narrow) == round(NARROW_SHARE * DEFAULT_COUNTS["network"])
    assert len(tiny) == round(TINY_SHARE * DEFAULT_COUNTS["network"])
    keys = {s.key() for s in specs}
    assert len(keys) == len(specs)
    wide = [n for n in networks if n.attrs["generator"] not in (NARROW_VERSION, TINY_VERSION)]
    shallow = [n for n in wide if len(network_kernels(n)) <= PROFILED_NETWORK_KERNELS]
    for network in shallow[:3]:
        assert {k.key() for k in network_kernels(network)} <= keys
    assert len([s for s in specs if s.kind == "dense"]) > 5  # the networks' heads too


def test_narrow_networks_are_narrow_small_and_deterministic():
    # What pruning and small inputs leave: kernels of a few channels on small maps.
    for spec in network_specs(4, generator=NARROW_VERSION):
        model = random_network(spec.dims["seed"], NARROW_VERSION)
        assert model.input_shape[1] <= 64
        convs = [k for k in network_kernels(spec) if k.kind == "conv2d"]
        # 4-48 channels; an inverted residual block expands up to three times that
        assert convs and max(k.dims["cout"] for k in convs) <= 3 * 48
        assert network_kernels(spec) == network_kernel_specs(spec.dims["seed"], version="n1")
        assert profiled_kernels(spec) == []  # timed whole only, for the composition term


def test_tiny_networks_have_a_few_kernels_and_are_timed_whole_only():
    # One invoke's fixed cost against a few kernels: what tells it from a kernel's saving.
    specs = network_specs(20, generator=TINY_VERSION)
    counts = [len(network_kernels(spec)) for spec in specs]
    assert min(counts) <= 2 and max(counts) <= 20 and len(set(counts)) > 5
    assert all(profiled_kernels(spec) == [] for spec in specs)
    model = random_network(specs[0].dims["seed"], TINY_VERSION)
    assert model.input_shape[1] <= 64


def test_a_network_of_an_unknown_generator_is_refused():
    (spec,) = network_specs(1)
    assert spec.attrs["generator"] == GENERATOR_VERSION
    other = LayerSpec("network", {"seed": 0}, {"generator": GENERATOR_VERSION})
    object.__setattr__(other, "attrs", {"generator": "v0"})
    with pytest.raises(ValueError, match="drawn by generator 'v0'.*profile the networks again"):
        network_kernels(other)
