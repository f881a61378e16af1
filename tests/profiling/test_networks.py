import numpy as np
import pytest

from fdi_keras.features import compute_features
from fdi_keras.kernels import model_kernels
from fdi_keras.profiling.build import build_kernel_model
from fdi_keras.profiling.networks import (
    MAX_MACS,
    MAX_PARAMS,
    network_kernel_specs,
    network_specs,
    random_network,
)


@pytest.mark.parametrize("seed", range(6))
def test_random_networks_are_deterministic_and_within_budget(seed):
    a, b = random_network(seed), random_network(seed)
    assert [type(x).__name__ for x in a.layers] == [type(x).__name__ for x in b.layers]
    assert a.count_params() == b.count_params() <= MAX_PARAMS
    specs = network_kernel_specs(seed)
    macs = sum(compute_features(s)["flops"] / 2 for s in specs if s.kind != "pool2d")
    assert macs <= MAX_MACS * 1.5  # pools and element-wise ops are not budgeted
    assert [s.key() for s in specs] == [k.spec.key() for k in model_kernels(a)]


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
