"""strip: physically remove the channels whose gates are closed, and adjust every consumer.

Channel "keep" masks are propagated through the graph in topological order: a gated layer
sets the mask of its output; BatchNormalization, activations, pooling, padding and dropout pass
it through; DepthwiseConv2D repeats it per multiplier; Flatten tiles it over spatial positions;
Add requires equal masks on its inputs (layers joined by Add share a gate group); Concatenate
joins them at their offsets. Each consumer's weights are sliced on the input axis, each gated
layer's on the output axis. The result is a new plain Keras model; the input is untouched.
"""

from __future__ import annotations

import keras
import numpy as np

from fdi_keras.errors import UnsupportedLayerError
from fdi_keras.prune.graph import check_rebuildable, layer_inputs, rebuild
from fdi_keras.prune.structure import CHANNEL_PRESERVING as PASS_THROUGH
from fdi_keras.prune.structure import ELEMENTWISE
from fdi_keras.prune.wrapper import LatencyAware

L = keras.layers


def _propagate(model) -> tuple[dict, dict]:
    """keep mask of every layer's input (list) and output, by layer id."""
    out_keep = {id(t): np.ones(t.shape[-1], bool) for t in model.inputs}
    layer_in, layer_out = {}, {}
    for layer in model.layers:
        if isinstance(layer, L.InputLayer):
            continue
        ins = [out_keep[id(t)] for t in layer_inputs(layer)]
        layer_in[id(layer)] = ins
        keep = _output_keep(layer, ins)
        layer_out[id(layer)] = keep
        out_keep[id(layer.output)] = keep
    return layer_in, layer_out


def _output_keep(layer, ins):
    if isinstance(layer, LatencyAware):
        return layer.mask()
    if isinstance(layer, PASS_THROUGH):
        return ins[0]
    if isinstance(layer, L.DepthwiseConv2D):
        return np.repeat(ins[0], layer.depth_multiplier)
    if isinstance(layer, L.Flatten):
        spatial = int(np.prod(layer.input.shape[1:-1]))
        return np.tile(ins[0], spatial)
    if isinstance(layer, ELEMENTWISE):
        if any((k != ins[0]).any() for k in ins[1:]):
            raise ValueError(
                f"The inputs of {layer.name!r} ({type(layer).__name__}) have different alive "
                "channels. Layers joined by an element-wise merge must share one gate group: "
                "build the model with fdi_keras.latency_aware(model) and train with "
                "FastDeepIoTCallback, which keeps a group's gates identical."
            )
        return ins[0]
    if isinstance(layer, L.Concatenate):
        if layer.axis not in (-1, len(layer.output.shape) - 1):
            raise UnsupportedLayerError(
                f"strip supports Concatenate on the channel axis only. "
                f"Received: {layer.name!r} with axis={layer.axis}"
            )
        return np.concatenate(ins)
    if isinstance(layer, (L.Dense, L.Conv1D, L.Conv2D, L.SeparableConv2D, L.GRU, L.LSTM)):
        return np.ones(layer.output.shape[-1], bool)
    if all(k.all() for k in ins):
        return np.ones(layer.output.shape[-1], bool)
    raise UnsupportedLayerError(
        f"strip cannot remove channels flowing into layer {layer.name!r} of class "
        f"{type(layer).__name__}. Channels can flow through: "
        f"{', '.join(sorted({c.__name__ for c in PASS_THROUGH + ELEMENTWISE}))}, Flatten, "
        "Concatenate, DepthwiseConv2D, and into Dense, Conv1D/2D, SeparableConv2D, GRU, LSTM."
    )


def _sliced_weights(inner, keep_in, keep_out):
    """The weights of `inner` (the layer, unwrapped) with pruned input/output channels dropped."""
    w = [np.asarray(v) for v in inner.get_weights()]
    if isinstance(inner, L.SeparableConv2D):
        depthwise, pointwise, *bias = w
        mult = depthwise.shape[-1]
        rows = np.repeat(keep_in, mult)
        return [
            depthwise[:, :, keep_in],
            pointwise[:, :, rows][..., keep_out],
            *[b[keep_out] for b in bias],
        ]
    if isinstance(inner, L.DepthwiseConv2D):
        kernel, *bias = w
        return [kernel[:, :, keep_in], *[b[np.repeat(keep_in, kernel.shape[-1])] for b in bias]]
    if isinstance(inner, (L.Dense, L.Conv1D, L.Conv2D)):
        kernel, *bias = w
        return [kernel[..., keep_in, :][..., keep_out], *[b[keep_out] for b in bias]]
    if isinstance(inner, (L.GRU, L.LSTM)):
        kernel, recurrent, *bias = w
        units = recurrent.shape[0]
        if keep_out is None or len(keep_out) != units:  # an unwrapped layer keeps its units
            keep_out = np.ones(units, bool)
        blocks = kernel.shape[1] // units
        cols = np.concatenate([b * units + np.flatnonzero(keep_out) for b in range(blocks)])
        return [
            kernel[keep_in][:, cols],
            recurrent[keep_out][:, cols],
            *[v[..., cols] for v in bias],
        ]
    if isinstance(inner, L.BatchNormalization):
        return [v[keep_in] for v in w]
    return w


def _clone(layer, **overrides):
    return type(layer).from_config({**layer.get_config(), **overrides})


def strip(model: keras.Model) -> keras.Model:
    """A new plain Keras model without the gates and without the channels they closed.

    Each `LatencyAware` block becomes its layer (with only the alive output channels), its
    BatchNormalization and its activation again; consumers lose the matching input channels.
    Its outputs equal the gated model's inference outputs. The returned model carries
    `strip_history`: per gated layer, the channels it had and the indices it kept (plain data).

    Example:
        >>> small = fdi_keras.strip(gated)
        >>> small.strip_history[0]
        {'layer': 'conv1', 'channels': 32, 'kept': 19, 'kept_indices': [...]}
    """
    check_rebuildable(model)
    layer_in, layer_out = _propagate(model)
    history = []

    def transform(layer, ins):
        keep_in, keep_out = layer_in[id(layer)][0], layer_out[id(layer)]
        if isinstance(layer, LatencyAware):
            inner = layer.layer
            size = "units" if isinstance(inner, (L.Dense, L.GRU, L.LSTM)) else "filters"
            new = _clone(inner, **{size: int(keep_out.sum())})
            out = new(ins[0])
            new.set_weights(_sliced_weights(inner, keep_in, keep_out))
            if layer.norm is not None:
                norm = _clone(layer.norm)
                out = norm(out)
                norm.set_weights([w[keep_out] for w in layer.norm.get_weights()])
            if layer.activation_layer is not None:
                out = _clone(layer.activation_layer)(out)
            history.append(
                {
                    "layer": inner.name,
                    "channels": int(len(keep_out)),
                    "kept": int(keep_out.sum()),
                    "kept_indices": np.flatnonzero(keep_out).tolist(),
                }
            )
            return out
        new = _clone(layer)
        out = new(ins if len(ins) > 1 else ins[0])
        if layer.weights:
            new.set_weights(_sliced_weights(layer, keep_in, keep_out))
        return out

    stripped = rebuild(model, transform)
    stripped.strip_history = history
    return stripped
