"""fdi_keras: measured-latency-aware compression for Keras 3 models on mobile and embedded CPUs.

Public API (DESIGN.md section 4): profile a device (tools/profile_device.py), fit a
`TimingTree`, predict a model's latency with `predict_latency`, export and measure with
`fdi_keras.export`.

`import fdi_keras` does not import TensorFlow: the cost model (`TimingTree`, `predict_latency`)
works with any Keras backend. The submodules that need TensorFlow or optional packages
(`export`, `rebirth`, `qat`, `plots`) are imported on first use, e.g. `fdi_keras.export`.
"""

import importlib
import os

# TensorFlow's C++ start-up chatter buries the tools' reports; a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# `layers` registers LocalResponseNormalization (for .keras loading and the graph registry); it
# imports TensorFlow only when the layer runs.
from fdi_keras import layers  # noqa: E402
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

# Imported on first attribute access (PEP 562): they need TensorFlow, LiteRT, tfmot or matplotlib.
_LAZY_SUBMODULES = ("export", "plots", "qat", "rebirth")

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
    "plots",
    "predict_latency",
    "qat",
    "rebirth",
]


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"fdi_keras.{name}")
    raise AttributeError(f"module 'fdi_keras' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
