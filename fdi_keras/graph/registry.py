"""The layer registry: the one place that knows what each Keras layer type does to channels,
how strip slices it, and which runtime kernels it becomes.

Every analysis in fdi_keras (kernel mapping and latency prediction, gating, strip, the latency
penalty, slimming) asks `rule_for(layer)` instead of testing layer classes itself. A user's own
layer is supported by registering one rule:

    class Swish2(keras.layers.Layer): ...   # x * sigmoid(2x), element-wise

    fdi_keras.graph.register_layer(
        Swish2,
        fdi_keras.graph.LayerRule(
            channels="pass",
            kernels=lambda node: [LayerSpec("activation", {"n": numel(node)}, {"fn": "sigmoid"}),
                                  LayerSpec("add", {"h": 1, "w": 1, "c": numel(node)})],
        ),
    )

Channel kinds (how output channel c relates to the input channels):
- "new": the layer makes its own channels from all of its input's (Conv, Dense, GRU); strip
  slices its weights on the input axis, and on the output axis when it is gated.
- "pass": output channel c depends on input channel c alone (BN, element-wise activations,
  pooling, padding, cropping, dropout, Rescaling); removed channels pass through.
- "depthwise": output channel c * M + m comes from input channel c (DepthwiseConv2D).
- "merge": an element-wise merge (Add, Multiply, ...); its inputs must lose the same channels.
- "concat": channels of the inputs side by side (Concatenate on the channel axis).
- "flatten": channels tiled over positions (Flatten).
- "fixed": anything else (softmax and LayerNormalization mix channels, Reshape relabels them,
  an unknown layer): its inputs keep every channel and its output's channels cannot be removed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from fdi_keras.errors import UnsupportedLayerError

CHANNEL_KINDS = ("new", "pass", "depthwise", "merge", "concat", "flatten", "fixed")


@dataclasses.dataclass(frozen=True)
class LayerRule:
    """What fdi_keras knows about one layer type.

    Args:
        channels: a channel kind (see the module docstring), or a function of the layer
            returning one (e.g. an `Activation` is "pass" unless it is a softmax).
        kernels: `kernels(node) -> list[LayerSpec]`, the runtime kernels one call runs (an
            empty list: the converter drops it); None: it has no kernel model, so predicting a
            model that uses it raises `UnsupportedLayerError`.
        gate: the config entry counting what `LatencyAware` gates on this layer ("filters",
            "units", "depth_multiplier"), or None when it cannot be gated.
        slice_weights: `slice_weights(layer, keep_in, keep_out) -> weights`, the layer's weights
            with removed input/output channels dropped (boolean masks). None for a "new" or
            "pass" layer with weights means strip cannot slice it: its inputs keep every channel.
        fuses: "norm" or "activation" when the TFLite converter fuses this layer into the linear
            convolution/dense layer before it (BatchNormalization, ReLU/ReLU6), else None; or a
            function of the layer returning one.
        absorbs: whether the converter fuses a following BatchNormalization and ReLU/ReLU6
            into this layer (convolutions and Dense with a linear activation).
        elementwise: whether the layer maps each position independently (a removed channel
            holding a constant is mapped by applying the layer at one position).
        predict_as: for a layer that only exists during training (a gate wrapper), a
            function `model -> model` giving the model to predict instead (e.g. `strip`).
        why: for an unsupported layer type, why (shown in the error).
    """

    channels: str | Callable = "fixed"
    kernels: Callable | None = None
    gate: str | None = None
    slice_weights: Callable | None = None
    fuses: str | Callable | None = None
    absorbs: bool = False
    elementwise: bool = False
    predict_as: Callable | None = None
    why: str = ""

    def __post_init__(self):
        if not callable(self.channels) and self.channels not in CHANNEL_KINDS:
            raise ValueError(
                f"channels must be one of {CHANNEL_KINDS} or a function of the layer. "
                f"Received: channels={self.channels!r}"
            )

    def channel_kind(self, layer) -> str:
        return self.channels(layer) if callable(self.channels) else self.channels

    def fusion(self, layer) -> str | None:
        return self.fuses(layer) if callable(self.fuses) else self.fuses

    def can_slice_inputs(self, layer) -> bool:
        """Whether strip can remove input channels of `layer` (it has nothing to slice, or
        knows how)."""
        kind = self.channel_kind(layer)
        if kind in ("merge", "concat", "flatten", "depthwise"):
            return True
        if kind in ("new", "pass"):
            return self.slice_weights is not None or not getattr(layer, "weights", None)
        return False


_RULES: dict[type, LayerRule] = {}


def register_layer(layer_class: type, rule: LayerRule) -> None:
    """Tells fdi_keras what `layer_class` (and its subclasses) does; replaces an earlier rule.

    Raises:
        TypeError: `layer_class` is not a class or `rule` not a `LayerRule`.
    """
    if not isinstance(layer_class, type):
        raise TypeError(f"layer_class must be a class. Received: {layer_class!r}")
    if not isinstance(rule, LayerRule):
        raise TypeError(f"rule must be a fdi_keras.graph.LayerRule. Received: {rule!r}")
    _RULES[layer_class] = rule


_OPERATION_RULES: dict[str, LayerRule] = {}


def register_operation(name: str, rule: LayerRule) -> None:
    """Tells fdi_keras what a Keras operation applied to symbolic tensors does (`x + 3.0`
    makes an `Add` operation, `keras.ops.sigmoid(x)` a `Sigmoid`), or a layer class private to
    Keras (ConvNeXt's `LayerScale`), by its class name: these classes are not public API."""
    _OPERATION_RULES[name] = rule


def registered(layer) -> LayerRule | None:
    """The rule of `layer`'s class or its nearest registered base class, or None."""
    for cls in type(layer).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    if type(layer).__module__.startswith("keras."):
        return _OPERATION_RULES.get(type(layer).__name__)
    return None


UNKNOWN = LayerRule(channels="fixed", why="its class is not registered")


def rule_for(layer) -> LayerRule:
    """The rule for `layer`; an unregistered layer is "fixed" (its channels stay as they are)."""
    return registered(layer) or UNKNOWN


def unsupported(layer, why: str | None = None) -> UnsupportedLayerError:
    """The error for a layer fdi_keras cannot predict: the layer, its class, why, the fixes."""
    rule = registered(layer)
    why = why or (rule.why if rule is not None and rule.why else "its class is not registered")
    name = getattr(layer, "name", type(layer).__name__)
    return UnsupportedLayerError(
        f"Layer {name!r} of class {type(layer).__name__} has no runtime-kernel model: {why}. "
        "Fix: register it with fdi_keras.graph.register_layer("
        f"{type(layer).__name__}, fdi_keras.graph.LayerRule(channels=..., kernels=...)) "
        "(see docs/graph.md), or build the model without it (an operation applied to Keras "
        "tensors directly, e.g. `x + y`, becomes a layer with keras.layers.Add)."
    )


def node_kernels(node) -> list:
    """The runtime kernels of one call (before the converter's cross-layer fusions)."""
    rule = registered(node.layer)
    if rule is None or rule.kernels is None:
        raise unsupported(node.layer)
    return rule.kernels(node)
