import numpy as np
import pytest

from fdi_keras.features import compute_features
from fdi_keras.kernels import model_kernels
from fdi_keras.profiling.build import build_kernel_model
from fdi_keras.profiling.networks import (
    GENERATOR_VERSION,
    MAX_MACS,
    MAX_PARAMS,
    network_kernel_specs,
    network_kernels,
    network_specs,
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


def test_version_1_still_draws_the_networks_it_drew():
    """Profiles hold rows of v1 networks: their seeds must keep meaning the networks timed
    (parameter counts and kernel counts as v1 drew them)."""
    drawn = {0: (1029360, 16), 1: (4136933, 34), 3: (4149, 15)}
    for seed, (params, kernels) in drawn.items():
        assert random_network(seed, "v1").count_params() == params
        assert len(network_kernel_specs(seed, version="v1")) == kernels


def test_version_2_draws_networks_with_more_weights_than_a_last_level_cache():
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
    networks = [s for s in specs if s.kind == "network"]
    assert len(networks) == DEFAULT_COUNTS["network"]  # a number is per kernel kind
    keys = {s.key() for s in specs}
    assert len(keys) == len(specs)
    for network in networks[:3]:
        assert {k.key() for k in network_kernels(network)} <= keys
    assert len([s for s in specs if s.kind == "dense"]) > 5  # the networks' heads too


def test_a_network_of_an_unknown_generator_is_refused():
    (spec,) = network_specs(1)
    assert spec.attrs["generator"] == GENERATOR_VERSION
    other = LayerSpec("network", {"seed": 0}, {"generator": GENERATOR_VERSION})
    object.__setattr__(other, "attrs", {"generator": "v0"})
    with pytest.raises(ValueError, match="drawn by generator 'v0'.*profile the networks again"):
        network_kernels(other)
