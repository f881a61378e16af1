"""Map a Keras model to the kernels the TFLite runtime executes (with the converter's fusions).

Each call of each layer becomes the kernels its registry rule names (`fdi_keras.graph`); on top
of that, the converter fuses across layers, and so does `model_kernels`: a BatchNormalization and
then a ReLU/ReLU6 that alone consume a convolution/Dense with a linear output are folded into it,
and a ZeroPadding2D that alone feeds a 'valid' Conv2D/DepthwiseConv2D becomes the convolution's
own padding (the convolution is modeled on the padded input). Dropout, Reshape, Flatten and the
other layers that compute nothing at inference have no kernel. Nested models are inlined and a
shared layer counts once per call.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from fdi_keras.graph import ModelGraph, rule_for, trace
from fdi_keras.graph.registry import node_kernels
from fdi_keras.specs import LayerSpec


@dataclasses.dataclass
class Kernel:
    """One runtime kernel and the Keras layer calls it executes (several when fused)."""

    spec: LayerSpec
    layers: list[str]


CONSTANT_AFFINE = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide")


def _fusion_step(node) -> str | None:
    """ "norm" for a BatchNormalization or a Keras operation scaling or shifting by a constant
    (MobileNetV3's `x + 3.0`), "activation" for a ReLU/ReLU6, else None."""
    if type(node.layer).__name__ in CONSTANT_AFFINE and len(node.inputs) == 1:
        return "norm"
    return rule_for(node.layer).fusion(node.layer)


def fused_tail(graph: ModelGraph, node) -> list:
    """The calls the converter folds into `node` (a convolution/Dense whose own activation is
    linear): BatchNormalizations and constant scales/shifts, then one ReLU/ReLU6."""
    tail, current = [], node
    while (nxt := graph.sole_consumer(current)) is not None and _fusion_step(nxt) == "norm":
        tail.append(nxt)
        current = nxt
    nxt = graph.sole_consumer(current)
    if nxt is not None and _fusion_step(nxt) == "activation":
        tail.append(nxt)
    return tail


GLOBAL_POOLS = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
)


def _folded_by_converter(graph: ModelGraph, node) -> bool:
    """Whether the converter removes `node` into its neighbour: a ZeroPadding2D before a
    'valid' conv becomes its padding (when it is what 'same' would add); a Rescaling without
    offset folds into the weights of the 'valid' conv it reaches (EfficientNetB0's stem); a
    global pool over a single position that keeps its dims or feeds a Reshape becomes a
    reshape (one feeding a Dense stays a MEAN)."""
    nxt = graph.sole_consumer(node)
    if nxt is None:
        return False
    if isinstance(node.layer, GLOBAL_POOLS):
        single = int(np.prod(node.inputs[0].shape[1:-1])) == 1
        keeps = node.layer.get_config().get("keepdims")
        return single and (keeps or isinstance(nxt.layer, keras.layers.Reshape))
    convs = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    if isinstance(node.layer, keras.layers.ZeroPadding2D):
        return (
            isinstance(nxt.layer, convs)
            and nxt.layer.get_config()["padding"] == "valid"
            and _is_same_padding(node.layer.padding, node.inputs[0].shape[1:3], nxt.layer)
        )
    if isinstance(node.layer, keras.layers.Rescaling) and not np.any(node.layer.offset):
        # a pure scale folds into the weights of a 'valid' conv it reaches (through zero
        # padding or an identity Normalization), not into a 'same' one
        while isinstance(nxt.layer, (keras.layers.ZeroPadding2D, keras.layers.Normalization)):
            nxt = graph.sole_consumer(nxt)
            if nxt is None:
                return False
        return isinstance(nxt.layer, convs) and nxt.layer.get_config()["padding"] == "valid"
    return False


def _own_activation_is_linear(layer) -> bool:
    fn = getattr(layer, "activation", None)
    return fn is None or keras.activations.serialize(fn) == "linear"


def _is_same_padding(padding, size, conv) -> bool:
    """Whether ZeroPadding2D's `padding` on a `size` map is what 'same' would add for `conv`
    (TensorFlow's rule: the odd pixel after), the only case the converter folds."""
    for (before, after), n, k, s in zip(padding, size, conv.kernel_size, conv.strides):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        if (before, after) != (total // 2, total - total // 2):
            return False
    return True


def _fuses_activation(node) -> bool:
    """Whether the converter fuses a following ReLU/ReLU6 into `node`: an element-wise merge
    (ADD, MUL, SUB have a fused activation) or a BatchNormalization it could not fold (its
    last op is an ADD)."""
    rule = rule_for(node.layer)
    return rule.channel_kind(node.layer) == "merge" or rule.fusion(node.layer) == "norm"


def model_kernels(model: keras.Model | ModelGraph) -> list[Kernel]:
    """The kernels TFLite runs for `model` (batch 1), in graph order, fusions applied.

    Raises:
        UnsupportedLayerError: a layer has no kernel model (the message names it, its class,
            why, and how to register it).
    """
    graph = model if isinstance(model, ModelGraph) else trace(model)
    absorbed: set[int] = set()
    kernels: list[Kernel] = []
    first_of: dict[tuple, tuple] = {}  # the converter's common-subexpression elimination
    same: dict[int, int] = {}  # id of a duplicate's output -> id of the tensor it duplicates
    for node in graph.nodes:
        if id(node) in absorbed or _folded_by_converter(graph, node):
            continue
        key = _duplicate_key(node, same)
        if key in first_of:  # e.g. NASNet's several ReLUs of one cell input: one RELU op
            kernels_of_first, first = first_of[key]
            for kernel in kernels_of_first:
                kernel.layers.append(node.name)
            same[id(node.output)] = same.get(id(first.output), id(first.output))
            continue
        names = [node.name]
        rule = rule_for(node.layer)
        if rule.absorbs and _own_activation_is_linear(node.layer):
            tail = fused_tail(graph, node)
        elif _fuses_activation(node):
            nxt = graph.sole_consumer(node)
            fused = nxt is not None and rule_for(nxt.layer).fusion(nxt.layer) == "activation"
            tail = [nxt] if fused else []
        else:
            tail = []
        absorbed.update(id(n) for n in tail)
        names += [n.name for n in tail]
        own = [Kernel(spec, names) for spec in node_kernels(node)]
        if key is not None:
            first_of[key] = (own, node)
        kernels.extend(own)
    return kernels


def _duplicate_key(node, same: dict) -> tuple | None:
    """What makes two calls the same computation: the same weightless layer type and config
    on the same input tensors, `same` mapping duplicates to what they duplicate (None for
    layers with weights and for Keras operations)."""
    layer = node.layer
    if not isinstance(layer, keras.layers.Layer) or layer.weights:
        return None
    config = {k: v for k, v in layer.get_config().items() if k != "name"}
    inputs = tuple(same.get(id(t), id(t)) for t in node.inputs)
    return (type(layer), repr(sorted(config.items())), inputs)
