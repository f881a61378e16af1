"""strip: physically remove the channels whose gates are closed, and adjust every consumer.

Channel "keep" masks are propagated through the graph in topological order: a gated layer
sets the mask of its output; BatchNormalization, activations, pooling, padding and dropout pass
it through; DepthwiseConv2D repeats it per multiplier (a gated one keeps channel c * M + m when
input channel c and multiplier m are alive); Flatten tiles it over spatial positions;
Add requires equal masks on its inputs (layers joined by Add share a gate group); Concatenate
joins them at their offsets. Each consumer's weights are sliced on the input axis, each gated
layer's on the output axis. The result is a new plain Keras model; the input is untouched.

A closed gate zeroes its channel, but on the way to the consumer that drops it, a depthwise
convolution's bias, a BatchNormalization's shift or an activation with f(0) != 0 can turn the
removed channel into a constant, which the gated model's consumer still adds up. strip tracks
those per-channel constants alongside the masks and folds them into the bias of the Dense or
(separable) convolution that drops the channel, which is exact when its window never covers
padding (Dense, 1x1 or 'valid'); where it is not exact, it warns.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np

from fdi_keras.errors import UnsupportedLayerError
from fdi_keras.graph import (
    LayerRule,
    ModelGraph,
    call_with,
    clone_layer,
    register_layer,
    rule_for,
    trace,
)
from fdi_keras.prune.structure import channel_kind
from fdi_keras.prune.wrapper import LatencyAware, size_attribute

L = keras.layers


def _inner(layer):
    return layer.layer if isinstance(layer, LatencyAware) else layer


def propagate_keep(graph: ModelGraph) -> tuple[dict, dict, dict]:
    """keep mask of every node's inputs (list) and output, and the constants held by the
    removed channels of its first input (or None), by id(node)."""
    out_keep = {id(t): np.ones(t.shape[-1], bool) for t in graph.inputs}
    out_const = {}
    node_in, node_out, const_in = {}, {}, {}
    for node in graph.nodes:
        ins = [out_keep[id(t)] for t in node.inputs]
        consts = [out_const.get(id(t)) for t in node.inputs]
        keep = _output_keep(node, ins)
        node_in[id(node)], node_out[id(node)], const_in[id(node)] = ins, keep, consts[0]
        const = _output_constant(node, ins, consts, keep)
        for t in node.outputs:
            out_keep[id(t)], out_const[id(t)] = keep, const
    return node_in, node_out, const_in


def _output_keep(node, ins):
    layer, kind = node.layer, channel_kind(node)
    if isinstance(layer, LatencyAware):
        if isinstance(layer.layer, L.DepthwiseConv2D):  # channel c * M + m: input c, gate m
            return np.outer(ins[0], layer.mask()).ravel()
        return layer.mask()
    if all(k.all() for k in ins):
        return np.ones(node.output.shape[-1], bool)
    if kind == "pass" and rule_for(layer).can_slice_inputs(layer):
        return ins[0]
    if kind == "depthwise":
        return np.repeat(ins[0], layer.depth_multiplier)
    if kind == "flatten":
        return np.tile(ins[0], int(np.prod(node.inputs[0].shape[1:-1])))
    if kind == "merge":
        if any(len(k) != len(ins[0]) or (k != ins[0]).any() for k in ins[1:]):
            raise ValueError(
                f"The inputs of {node.name!r} ({type(layer).__name__}) have different alive "
                "channels. Layers joined by an element-wise merge must share one gate group: "
                "build the model with fdi_keras.latency_aware(model), which gives them one "
                "gate (or link LatencyAware layers of one `group` with link_gate_groups)."
            )
        return ins[0]
    if kind == "concat":
        return np.concatenate(ins)
    if kind == "new" and rule_for(layer).can_slice_inputs(layer):
        return np.ones(node.output.shape[-1], bool)
    raise UnsupportedLayerError(
        f"strip cannot remove channels flowing into layer {node.name!r} of class "
        f"{type(layer).__name__}: its registry channel kind is {kind!r} and it cannot slice "
        "its input channels. Exclude the layer that produces them from gating "
        "(latency_aware(model, exclude=[...])) or register a rule for this layer with "
        "slice_weights (fdi_keras.graph.register_layer)."
    )


def _warn_inexact(layer, why: str) -> None:
    warnings.warn(
        f"strip cannot remove channels exactly at layer {layer.name!r}: {why}. The stripped "
        "model's outputs will differ slightly from the gated model's.",
        stacklevel=2,
    )


def _covers_padding(layer) -> bool:
    """Whether some window of a convolution overlaps its padding."""
    return layer.padding != "valid" and any(k > 1 for k in layer.kernel_size)


def _at_one_position(fn, values, rank):
    """`fn` (a per-position layer or activation) applied to one position holding `values` (a
    list: one vector per input), as a vector."""
    x = [np.reshape(v, (1,) * (rank - 1) + (-1,)).astype("float32") for v in values]
    return keras.ops.convert_to_numpy(fn(x if len(x) > 1 else x[0])).ravel()


def _output_constant(node, ins, consts, keep):
    """The values the removed channels of `node`'s output hold in the gated model, one per
    channel (each is constant over positions), or None when they are all zero."""
    layer, kind = node.layer, channel_kind(node)
    inner = _inner(layer)
    if all(k.all() for k in ins) or kind == "new" and not isinstance(layer, LatencyAware):
        return None  # only closed gates remove channels here, and they output zeros
    if isinstance(layer, LatencyAware) and not isinstance(inner, L.DepthwiseConv2D):
        return None
    values = [np.where(k, 0.0, 0.0 if c is None else c) for k, c in zip(ins, consts)]
    rank = len(node.output.shape)
    if isinstance(inner, L.DepthwiseConv2D):
        out = _depthwise_constant(layer, values[0])
    elif rule_for(layer).elementwise:
        x = [np.reshape(v, (1,) * (rank - 1) + (-1,)).astype("float32") for v in values]
        out = keras.ops.convert_to_numpy(call_with(node, layer, x)).ravel()
    elif kind == "flatten":
        out = np.tile(values[0], int(np.prod(node.inputs[0].shape[1:-1])))
    elif kind == "concat":
        out = np.concatenate(values)
    else:  # pooling, padding, cropping: a constant stays one (padding adds zeros)
        if isinstance(layer, (L.ZeroPadding1D, L.ZeroPadding2D)) and values[0].any():
            _warn_inexact(layer, "it pads removed channels that hold non-zero constants")
        out = values[0]
    out = np.where(keep, 0.0, out)
    return out if out.any() else None


def _depthwise_constant(layer, const):
    """The output of a (gated) DepthwiseConv2D block at channel c * M + m when its input
    channel c holds the constant const[c] everywhere."""
    gated = isinstance(layer, LatencyAware)
    inner = layer.layer if gated else layer
    kernel, *bias = inner.get_weights()
    if const.any() and _covers_padding(inner):
        _warn_inexact(layer, "its windows cover padding and removed inputs hold constants")
    out = (const[:, None] * kernel.sum(axis=(0, 1))).ravel() + (bias[0] if bias else 0.0)
    out = _at_one_position(inner.activation, [out], 4)
    if gated:
        for sub in (layer.norm, layer.activation_layer):
            if sub is not None:
                out = _at_one_position(sub, [out], 4)
        out = out * np.tile(layer.mask(), len(const))
    return out


def _bias_shift(layer, inner, const):
    """What the removed input channels of `inner` (holding `const`, None: zeros) add to each
    of its output channels before its bias, or None when there is nothing to fold."""
    if const is None or rule_for(inner).channel_kind(inner) != "new":
        return None
    if isinstance(inner, (L.GRU, L.LSTM)):
        _warn_inexact(layer, f"it cannot fold constants into a {type(inner).__name__}")
        return None
    if not isinstance(inner, L.Dense) and _covers_padding(inner):
        _warn_inexact(layer, "its windows cover padding and removed inputs hold constants")
    kernel, *rest = inner.get_weights()
    if isinstance(inner, L.SeparableConv2D):  # depthwise (no bias), then pointwise
        return (const[:, None] * kernel.sum(axis=(0, 1))).ravel() @ rest[0][0, 0]
    return const @ kernel.reshape(-1, *kernel.shape[-2:]).sum(axis=0)


def _sliced_weights(inner, keep_in, keep_out):
    """The weights of `inner` (the layer, unwrapped) with pruned input/output channels dropped
    (the layer type's registry rule knows how)."""
    slice_weights = rule_for(inner).slice_weights
    if slice_weights is None or (keep_in.all() and (keep_out is None or keep_out.all())):
        return inner.get_weights()
    return slice_weights(inner, keep_in, keep_out)


def strip(model: keras.Model) -> keras.Model:
    """A new plain Keras model without the gates and without the channels they closed.

    Each `LatencyAware` block becomes its layer (with only the alive output channels, or a
    DepthwiseConv2D's alive multipliers), its BatchNormalization and its activation again;
    consumers lose the matching input channels (and fold in the constants removed channels held,
    see the module's docstring). Its outputs equal the gated model's inference outputs. Nested
    models are inlined; a shared layer stays one layer, called as often as before. The
    returned model carries `strip_history`: per gated layer, the channels (multipliers) it had
    and the indices it kept (plain data).

    Example:
        >>> small = fdi_keras.strip(gated)
        >>> small.strip_history[0]
        {'layer': 'conv1', 'channels': 32, 'kept': 19, 'kept_indices': [...]}
    """
    graph = trace(model)
    node_in, node_out, const_in = propagate_keep(graph)
    history = []
    new_layers: dict[int, tuple] = {}  # one new layer (and its norm, activation) per old one

    def build(node, layer, inner):
        keep_in, keep_out = node_in[id(node)][0], node_out[id(node)]
        wrapped = isinstance(layer, LatencyAware)
        shift = _bias_shift(layer, inner, const_in[id(node)])
        overrides = {"use_bias": True} if shift is not None else {}
        if wrapped:
            gates = layer.mask()
            overrides[size_attribute(inner)] = int(gates.sum())
            history.append(
                {
                    "layer": inner.name,
                    "channels": int(len(gates)),
                    "kept": int(gates.sum()),
                    "kept_indices": np.flatnonzero(gates).tolist(),
                }
            )
        new = clone_layer(inner, **overrides)
        norm = clone_layer(layer.norm) if wrapped and layer.norm is not None else None
        act = clone_layer(layer.activation_layer) if wrapped and layer.activation_layer else None

        def set_weights():
            if getattr(inner, "weights", None):
                weights = _sliced_weights(inner, keep_in, keep_out)
                if shift is not None:  # the bias is the last weight, when there is one
                    *kernels, bias = weights if inner.use_bias else [*weights, 0.0]
                    weights = [*kernels, bias + shift[keep_out]]
                new.set_weights(weights)
            if norm is not None:
                norm.set_weights([w[keep_out] for w in layer.norm.get_weights()])

        return new, norm, act, set_weights

    def transform(node, ins):
        layer = node.layer
        inner = _inner(layer)
        first = id(layer) not in new_layers
        if first:
            new_layers[id(layer)] = build(node, layer, inner)
        new, norm, act, set_weights = new_layers[id(layer)]
        if isinstance(layer, LatencyAware):
            out = new(ins[0])
            out = norm(out) if norm is not None else out
            out = act(out) if act is not None else out
        else:
            out = call_with(node, new, ins)
        if first:
            set_weights()
        return out

    stripped = graph.rebuild(transform)
    stripped.strip_history = history
    return stripped


def _wrapped_kind(wrapper) -> str:
    return rule_for(wrapper.layer).channel_kind(wrapper.layer)


# A gated model runs as its stripped self: that is what gets predicted.
register_layer(LatencyAware, LayerRule(channels=_wrapped_kind, predict_as=strip))
