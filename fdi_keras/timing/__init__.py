"""Execution-time models: the TimingTree and the baselines it is compared with."""

from fdi_keras.timing.baselines import FlopsLinear
from fdi_keras.timing.tree import TimingTree, rows_to_dataset

__all__ = ["FlopsLinear", "TimingTree", "rows_to_dataset"]
