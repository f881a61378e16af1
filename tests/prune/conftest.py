import pytest
from prune_helpers import KINDS, staircase_time

from fdi_keras.profiling.sampling import sample_configs
from fdi_keras.timing import TimingTree


@pytest.fixture(scope="session")
def staircase_tree():
    specs = [s for kind in KINDS for s in sample_configs(kind, 150, seed=7)]
    return TimingTree(tiles=(16,)).fit(specs, [staircase_time(s) for s in specs])


@pytest.fixture(scope="session")
def mnist_slice(real_dataset):
    data = real_dataset("mnist")
    return data["x_train"][:512, ..., None].astype("float32") / 255.0, data["y_train"][:512]
