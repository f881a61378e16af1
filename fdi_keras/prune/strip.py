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
from fdi_keras.prune.graph import check_rebuildable, layer_inputs, rebuild
from fdi_keras.prune.structure import CHANNEL_PRESERVING, ELEMENTWISE, passes_channels
from fdi_keras.prune.wrapper import LatencyAware, size_attribute

L = keras.layers
# Layers whose input channels strip slices (the others pass channels on or keep them all).
SLICING = (L.Dense, L.Conv1D, L.Conv2D, L.SeparableConv2D, L.GRU, L.LSTM)


def propagate_keep(model) -> tuple[dict, dict, dict]:
    """keep mask of every layer's inputs (list) and output, and the constants held by the
    removed channels of its first input (or None), by layer id."""
    out_keep = {id(t): np.ones(t.shape[-1], bool) for t in model.inputs}
    out_const = {}
    layer_in, layer_out, const_in = {}, {}, {}
    for layer in model.layers:
        if isinstance(layer, L.InputLayer):
            continue
        tensors = layer_inputs(layer)
        ins = [out_keep[id(t)] for t in tensors]
        consts = [out_const.get(id(t)) for t in tensors]
        keep = _output_keep(layer, ins)
        layer_in[id(layer)], layer_out[id(layer)], const_in[id(layer)] = ins, keep, consts[0]
        out_keep[id(layer.output)] = keep
        out_const[id(layer.output)] = _output_constant(layer, ins, consts, keep)
    return layer_in, layer_out, const_in


def _output_keep(layer, ins):
    if isinstance(layer, LatencyAware):
        if isinstance(layer.layer, L.DepthwiseConv2D):  # channel c * M + m: input c, gate m
            return np.outer(ins[0], layer.mask()).ravel()
        return layer.mask()
    if passes_channels(layer):
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
    if isinstance(layer, SLICING):
        return np.ones(layer.output.shape[-1], bool)
    if all(k.all() for k in ins):
        return np.ones(layer.output.shape[-1], bool)
    raise UnsupportedLayerError(
        f"strip cannot remove channels flowing into layer {layer.name!r} of class "
        f"{type(layer).__name__}. Channels can flow through: "
        f"{', '.join(sorted({c.__name__ for c in CHANNEL_PRESERVING + ELEMENTWISE}))} "
        "(element-wise activations only), Flatten, Concatenate, DepthwiseConv2D, and into "
        "Dense, Conv1D/2D, SeparableConv2D, GRU, LSTM."
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


def _output_constant(layer, ins, consts, keep):
    """The values the removed channels of `layer`'s output hold in the gated model, one per
    channel (each is constant over positions), or None when they are all zero."""
    inner = layer.layer if isinstance(layer, LatencyAware) else layer
    if all(k.all() for k in ins) or isinstance(inner, SLICING):
        return None  # only closed gates remove channels here, and they output zeros
    values = [np.where(k, 0.0, 0.0 if c is None else c) for k, c in zip(ins, consts)]
    rank = len(layer.output.shape)
    if isinstance(inner, L.DepthwiseConv2D):
        out = _depthwise_constant(layer, values[0])
    elif isinstance(layer, (L.BatchNormalization, L.ReLU, L.Activation, *ELEMENTWISE)):
        out = _at_one_position(layer, values, rank)
    elif isinstance(layer, L.Flatten):
        out = np.tile(values[0], int(np.prod(layer.input.shape[1:-1])))
    elif isinstance(layer, L.Concatenate):
        out = np.concatenate(values)
    else:  # pooling, padding, inference identities: a constant stays one (padding adds zeros)
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
    if const is None or not isinstance(inner, SLICING):
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
    if isinstance(inner, L.DepthwiseConv2D):  # keep_out: channels c * M + m
        kernel, *bias = w
        multipliers = keep_out.reshape(-1, kernel.shape[-1]).any(axis=0)  # of a kept c
        return [kernel[:, :, keep_in][..., multipliers], *[b[keep_out] for b in bias]]
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

    Each `LatencyAware` block becomes its layer (with only the alive output channels, or a
    DepthwiseConv2D's alive multipliers), its BatchNormalization and its activation again;
    consumers lose the matching input channels (and fold in the constants removed channels held,
    see the module's docstring). Its outputs equal the gated model's inference outputs. The
    returned model carries `strip_history`: per gated layer, the channels (multipliers) it had
    and the indices it kept (plain data).

    Example:
        >>> small = fdi_keras.strip(gated)
        >>> small.strip_history[0]
        {'layer': 'conv1', 'channels': 32, 'kept': 19, 'kept_indices': [...]}
    """
    check_rebuildable(model)
    layer_in, layer_out, const_in = propagate_keep(model)
    history = []

    def transform(layer, ins):
        keep_in, keep_out = layer_in[id(layer)][0], layer_out[id(layer)]
        wrapped = isinstance(layer, LatencyAware)
        inner = layer.layer if wrapped else layer
        shift = _bias_shift(layer, inner, const_in[id(layer)])
        overrides = {"use_bias": True} if shift is not None else {}
        if wrapped:
            gates = layer.mask()
            overrides[size_attribute(inner)] = int(gates.sum())
        new = _clone(inner, **overrides)
        out = new(ins if len(ins) > 1 else ins[0])
        if inner.weights:
            weights = _sliced_weights(inner, keep_in, keep_out)
            if shift is not None:  # the bias is the last weight, when there is one
                *kernels, bias = weights if inner.use_bias else [*weights, 0.0]
                weights = [*kernels, bias + shift[keep_out]]
            new.set_weights(weights)
        if not wrapped:
            return out
        if layer.norm is not None:
            norm = _clone(layer.norm)
            out = norm(out)
            norm.set_weights([w[keep_out] for w in layer.norm.get_weights()])
        if layer.activation_layer is not None:
            out = _clone(layer.activation_layer)(out)
        history.append(
            {
                "layer": inner.name,
                "channels": int(len(gates)),
                "kept": int(gates.sum()),
                "kept_indices": np.flatnonzero(gates).tolist(),
            }
        )
        return out

    stripped = rebuild(model, transform)
    stripped.strip_history = history
    return stripped
