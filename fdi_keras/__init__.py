"""fdi_keras: measured-latency-aware compression for Keras 3 models on mobile and embedded CPUs.

Public API (DESIGN.md section 4): profile a device (tools/profile_device.py), fit a
`TimingTree`, predict a model's latency with `predict_latency`, export and measure with
`fdi_keras.export`.
"""

import os

# TensorFlow's C++ start-up chatter buries the tools' reports; a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fdi_keras import export, layers, rebirth  # noqa: E402
from fdi_keras.errors import MissingKindError, TreeFormatError, UnsupportedLayerError
from fdi_keras.kernels import model_kernels
from fdi_keras.latency import LatencyReport, predict_latency
from fdi_keras.prune import (
    FastDeepIoTCallback,
    LatencyAware,
    LatencyRegularizer,
    latency_aware,
    strip,
)
from fdi_keras.specs import LayerSpec
from fdi_keras.timing import TimingTree

__version__ = "0.1.0"

__all__ = [
    "FastDeepIoTCallback",
    "LatencyAware",
    "LatencyRegularizer",
    "latency_aware",
    "strip",
    "LatencyReport",
    "LayerSpec",
    "MissingKindError",
    "TimingTree",
    "TreeFormatError",
    "UnsupportedLayerError",
    "export",
    "layers",
    "model_kernels",
    "predict_latency",
    "rebirth",
]
