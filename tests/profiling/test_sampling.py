import pytest

from fdi_keras.features import compute_features
from fdi_keras.profiling.sampling import MAX_MACS, sample_configs
from fdi_keras.specs import KINDS


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_deterministic_distinct_within_budget(kind):
    specs = sample_configs(kind, 120, seed=3)
    assert specs == sample_configs(kind, 120, seed=3)
    assert len({s.key() for s in specs}) == 120
    assert all(compute_features(s)["flops"] / 2 <= MAX_MACS for s in specs)


def test_more_configs_extend_the_list():
    assert sample_configs("conv2d", 200)[:80] == sample_configs("conv2d", 80)


def test_sweeps_cover_consecutive_channel_counts():
    specs = sample_configs("dense", 300)
    shapes = {}
    for s in specs:
        shapes.setdefault((s.dims["m"], s.dims["cin"]), set()).add(s.dims["cout"])
    longest = max(len(v) for v in shapes.values())
    assert longest >= 6


def test_dtype_and_threads_are_carried():
    s = sample_configs("dense", 3, dtype="int8", threads=2)[0]
    assert (s.dtype, s.threads) == ("int8", 2)


def test_unknown_kind():
    with pytest.raises(ValueError, match="Supported kinds"):
        sample_configs("conv3d", 3)
