import numpy as np
import pytest

from fdi_keras.features import compute_features
from fdi_keras.profiling.sampling import sample_configs
from fdi_keras.timing import TimingTree

KINDS = ("conv2d", "dense", "pool2d", "global_pool", "concat", "lrn", "softmax", "activation")


@pytest.fixture(scope="session")
def staircase_tree_with_lrn():
    """A synthetic device: 1 us per kernel plus its work on channels padded to 16."""
    specs = [s for kind in KINDS for s in sample_configs(kind, 120, seed=3)]
    times = []
    for s in specs:
        f = compute_features(s, tile=16)
        times.append(1.0 + 1e-3 * f["flops"] / 2 + 1e-4 * (f["bytes_in"] + f["bytes_out"]))
    return TimingTree(tiles=(16,)).fit(specs, times)


@pytest.fixture(scope="session")
def cifar_slice(real_dataset):
    data = real_dataset("cifar10")
    order = np.random.default_rng(0).permutation(len(data["y_train"]))[:768]
    return data["x_train"][order].astype("float32") / 255.0, data["y_train"][order].astype("int64")
