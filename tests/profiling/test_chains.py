import collections
import os
import sys

import pytest

from fdi_keras.features import compute_features
from fdi_keras.profiling import sample_all
from fdi_keras.profiling.build import build_kernel_model
from fdi_keras.profiling.chains import CHAIN_SHARE, CHAIN_VERSION, MAX_WEIGHT_BYTES, draw_chain
from fdi_keras.profiling.networks import network_kernels, network_specs, profiled_kernels

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from tflite_ops import runtime_kinds  # noqa: E402


def chain_specs(count, first_seed=0):
    return network_specs(count, first_seed, generator=CHAIN_VERSION)


def weights_mb(spec):
    return sum(compute_features(k)["param_bytes"] for k in network_kernels(spec)) / 1e6


def test_a_chain_is_one_kernel_repeated_as_the_converter_runs_it():
    (spec,) = chain_specs(1, first_seed=7)
    assert spec.attrs["generator"] == CHAIN_VERSION
    kernels = network_kernels(spec)
    assert len(kernels) >= 2 and len({k.key() for k in kernels}) == 1
    kernel = kernels[0]
    assert kernel.dims["cin"] == kernel.dims["cout"]  # each copy feeds the next
    model = build_kernel_model(spec)
    assert model.count_params() == draw_chain(7).count_params()
    assert runtime_kinds(model) == collections.Counter({kernel.kind: len(kernels)})


@pytest.mark.parametrize("seed, drawn", [(0, ("conv2d", 21, 911)), (3, ("dense", 21, 1312))])
def test_chains_still_draw_what_they_drew(seed, drawn):
    """A profile's chain rows are fitted by seed: a seed must keep meaning the chain timed."""
    kernels = network_kernels(chain_specs(1, first_seed=seed)[0])
    assert (kernels[0].kind, len(kernels), kernels[0].dims["cin"]) == drawn


def test_chains_span_the_cache_levels():
    sizes = [weights_mb(s) for s in chain_specs(30)]
    assert min(sizes) < 1 and max(sizes) > 64  # below an L2, beyond a last-level cache
    assert max(sizes) <= MAX_WEIGHT_BYTES / 1e6 * 1.01
    assert sum(s < 4 for s in sizes) >= 5


def test_the_profile_times_chains_and_their_one_kernel_alone():
    specs = sample_all(["network"], {"network": 5})
    keys = {s.key() for s in specs}
    chains = [s for s in specs if s.attrs.get("generator") == CHAIN_VERSION]
    assert len(chains) == round(CHAIN_SHARE * 5)
    for chain in chains:
        (kernel,) = profiled_kernels(chain)
        assert kernel.key() in keys
