"""The graph core: every call of a Keras model's layers, and what each layer type does.

`trace(model)` gives the call graph (nested models inlined, shared layers once per call);
`rule_for(layer)` what fdi_keras knows of a layer type; `register_layer` adds a user's own.
"""

from fdi_keras.graph import keras_layers  # noqa: F401  (registers the stock Keras layers)
from fdi_keras.graph.registry import LayerRule, register_layer, rule_for, unsupported
from fdi_keras.graph.trace import ModelGraph, Node, call_with, clone_layer, copy_weights, trace

__all__ = [
    "LayerRule",
    "ModelGraph",
    "Node",
    "call_with",
    "clone_layer",
    "copy_weights",
    "register_layer",
    "rule_for",
    "trace",
    "unsupported",
]
