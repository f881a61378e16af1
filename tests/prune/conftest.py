import os

import numpy as np
import pytest
from prune_helpers import KINDS, staircase_time

from fdi_keras.profiling.sampling import sample_configs
from fdi_keras.timing import TimingTree


@pytest.fixture(scope="session")
def staircase_tree():
    specs = [s for kind in KINDS for s in sample_configs(kind, 150, seed=7)]
    return TimingTree(tiles=(16,)).fit(specs, [staircase_time(s) for s in specs])


@pytest.fixture(scope="session")
def mnist_slice():
    path = os.environ.get(
        "FDI_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
    )
    data = np.load(os.path.join(path, "mnist.npz"))
    return data["x_train"][:512, ..., None].astype("float32") / 255.0, data["y_train"][:512]
