"""The rules of stock Keras layers (see `registry`): one entry per layer type.

Kernel mappings follow what the TFLite converter emits for batch 1 (checked op by op against
converted keras.applications models in tests/graph/test_zoo.py). Approximations, where the
runtime op has no profiled kind of its own, are stated at the rule.
"""

from __future__ import annotations

import keras
import numpy as np

from fdi_keras.graph.registry import LayerRule, register_layer, register_operation, unsupported
from fdi_keras.specs import LayerSpec

L = keras.layers


# ---- shapes -------------------------------------------------------------------------------


def in_shape(node) -> tuple:
    return tuple(node.inputs[0].shape[1:])


def out_shape(node) -> tuple:
    return tuple(node.output.shape[1:])


def hwc(shape) -> tuple:
    """(h, w, c) of a channels-last tensor: 1-D maps have h = 1, vectors h = w = 1; the
    leading dims of a higher-rank tensor are folded into h."""
    if len(shape) == 1:
        return 1, 1, shape[0]
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    return int(np.prod(shape[:-2])), shape[-2], shape[-1]


def numel(shape) -> int:
    return int(np.prod(shape))


# ---- activations --------------------------------------------------------------------------

ACTIVATION_ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}


def activation_name(layer) -> str | None:
    """The serialized name of the activation `layer` applies (its own `activation` argument, an
    `Activation` layer's, a plain ReLU/ReLU6 layer's), or None (a ReLU with a slope, a
    threshold or another cap, or a function that is not a Keras activation)."""
    if isinstance(layer, L.ReLU):
        cfg = layer.get_config()
        if cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
            return None
        cap = cfg.get("max_value")
        return "relu" if cap is None else ("relu6" if cap == 6 else None)
    fn = getattr(layer, "activation", None)
    if fn is None:
        return None
    name = keras.activations.serialize(fn)
    return ACTIVATION_ALIASES.get(name, name) if isinstance(name, str) else None


CHANNEL_MIXING = ("softmax", "log_softmax")
# The TFLite ops each activation becomes, as profiled kernel kinds ("add" is any element-wise
# binary op: ADD, MUL, SUB). hard_sigmoid is relu6(x + 3) / 6: an ADD with RELU6 fused, a MUL.
ACTIVATION_KERNELS = {
    "linear": [],
    "relu": [("activation", "relu")],
    "relu6": [("activation", "relu6")],
    "sigmoid": [("activation", "sigmoid")],
    "tanh": [("activation", "tanh")],
    "hard_silu": [("activation", "hard_swish")],
    "silu": [("activation", "sigmoid"), ("add", None)],
    "gelu": [("activation", "gelu")],
    "hard_sigmoid": [("add", None), ("add", None)],
    "softmax": [("softmax", None)],
}


def activation_specs(layer, name: str, shape) -> list[LayerSpec]:
    if name not in ACTIVATION_KERNELS:
        raise unsupported(layer, f"activation {name!r} has no kernel model")
    n, (h, w, c) = numel(shape), hwc(shape)
    specs = []
    for kind, fn in ACTIVATION_KERNELS[name]:
        if kind == "activation":
            specs.append(LayerSpec("activation", {"n": n}, {"fn": fn}))
        elif kind == "softmax":
            specs.append(LayerSpec("softmax", {"n": n}))
        else:
            specs.append(LayerSpec("add", {"h": h, "w": w, "c": c}))
    return specs


def _activation_channels(layer) -> str:
    name = activation_name(layer)
    return "fixed" if name is None or name in CHANNEL_MIXING else "pass"


def _fused_activation(layer) -> str | None:
    return "activation" if activation_name(layer) in ("relu", "relu6") else None


def _activation_kernels(node) -> list[LayerSpec]:
    name = activation_name(node.layer)
    if name is None:
        raise unsupported(node.layer, "only plain ReLU/ReLU6 and Keras activations are modeled")
    return activation_specs(node.layer, name, in_shape(node))


# ---- tensor layers ------------------------------------------------------------------------


def _pair(v) -> tuple:
    return (1, v[0]) if len(v) == 1 else tuple(v)


def conv_specs(layer, shape, out, padding=None) -> list[LayerSpec]:
    """The kernels of a Conv1D/Conv2D/DepthwiseConv2D/SeparableConv2D on input `shape`.

    Dilation is not a dim of its own: a dilated conv is predicted as the undilated one (same
    FLOPs and bytes). A conv with one group per input channel (`groups == cin`, ConvNeXt's
    7x7 convolutions) is a depthwise conv: the converter emits a CONV_2D that XNNPack runs
    as one (8x8x96, 7x7: 124.0 us grouped, 122.8 us as a DepthwiseConv2D; predicted as a
    conv of one input channel, 7.1 us). Another grouped conv (`1 < groups < cin`) is
    predicted as one conv whose input has `cin / groups` channels: the same FLOPs and
    weights, but not XNNPack's per-group tiles (on six shapes, -49% to +3% of its time).
    """
    h, w, cin = hwc(shape)
    cfg = layer.get_config()
    (kh, kw), (sh, sw) = _pair(cfg["kernel_size"]), _pair(cfg["strides"])
    padding = padding or cfg["padding"]
    if padding not in ("same", "valid"):
        raise unsupported(layer, f"padding={padding!r} (modeled: 'same', 'valid')")
    conv = dict(h=h, w=w, cin=cin, kh=kh, kw=kw, sh=sh, sw=sw)
    if isinstance(layer, (L.DepthwiseConv2D, L.SeparableConv2D)):
        mult = cfg["depth_multiplier"]
        specs = [LayerSpec("depthwise_conv2d", {**conv, "mult": mult}, {"padding": padding})]
        if isinstance(layer, L.SeparableConv2D):
            oh, ow, _ = hwc(out)
            pointwise = dict(h=oh, w=ow, cin=cin * mult, cout=cfg["filters"])
            specs.append(LayerSpec("conv2d", {**pointwise, "kh": 1, "kw": 1, "sh": 1, "sw": 1}))
        return specs
    groups = cfg.get("groups", 1)
    if groups > 1 and groups == cin:
        mult = cfg["filters"] // cin
        return [LayerSpec("depthwise_conv2d", {**conv, "mult": mult}, {"padding": padding})]
    conv["cin"] = cin // groups
    return [LayerSpec("conv2d", {**conv, "cout": cfg["filters"]}, {"padding": padding})]


def tensor_specs(layer, shape, out, padding=None) -> list[LayerSpec]:
    """The kernels of a Dense/Conv layer, without its activation."""
    if isinstance(layer, L.Dense):
        return [LayerSpec("dense", dict(m=numel(shape[:-1]), cin=shape[-1], cout=layer.units))]
    return conv_specs(layer, shape, out, padding)


FUSED_ACTIVATIONS = ("linear", "relu", "relu6")


def _tensor_kernels(node) -> list[LayerSpec]:
    """A Dense/Conv layer's kernels; its own ReLU/ReLU6 is fused, other activations are not."""
    specs = tensor_specs(node.layer, in_shape(node), out_shape(node))
    name = activation_name(node.layer)
    if name in FUSED_ACTIVATIONS:
        return specs
    return specs + activation_specs(node.layer, name, out_shape(node))


def _slice_dense_conv(layer, keep_in, keep_out):
    kernel, *bias = layer.get_weights()
    return [kernel[..., keep_in, :][..., keep_out], *[b[keep_out] for b in bias]]


def _slice_separable(layer, keep_in, keep_out):
    depthwise, pointwise, *bias = layer.get_weights()
    rows = np.repeat(keep_in, depthwise.shape[-1])
    return [
        depthwise[:, :, keep_in],
        pointwise[:, :, rows][..., keep_out],
        *[b[keep_out] for b in bias],
    ]


def _slice_depthwise(layer, keep_in, keep_out):
    """keep_out indexes channels c * M + m; the kept multipliers are those of a kept c."""
    kernel, *bias = layer.get_weights()
    multipliers = keep_out.reshape(-1, kernel.shape[-1]).any(axis=0)
    return [kernel[:, :, keep_in][..., multipliers], *[b[keep_out] for b in bias]]


def _slice_recurrent(layer, keep_in, keep_out):
    """GRU [z, r, h] / LSTM [i, f, c, o] column blocks of kernel, recurrent kernel and bias."""
    kernel, recurrent, *bias = layer.get_weights()
    units = recurrent.shape[0]
    if keep_out is None or len(keep_out) != units:
        keep_out = np.ones(units, bool)
    blocks = kernel.shape[1] // units
    cols = np.concatenate([b * units + np.flatnonzero(keep_out) for b in range(blocks)])
    return [kernel[keep_in][:, cols], recurrent[keep_out][:, cols], *[v[..., cols] for v in bias]]


def _slice_per_channel(layer, keep_in, keep_out):
    return [np.asarray(v)[keep_in] for v in layer.get_weights()]


def _conv_channels(layer) -> str:
    # A grouped conv's input channels are split between groups: strip keeps them all.
    return "fixed" if layer.get_config().get("groups", 1) > 1 else "new"


def _recurrent_kernels(node) -> list[LayerSpec]:
    t, cin = in_shape(node)[-2:]
    kind = "gru" if isinstance(node.layer, L.GRU) else "lstm"
    return [LayerSpec(kind, dict(t=t, cin=cin, units=node.layer.units))]


# ---- the other layers ---------------------------------------------------------------------


def _pool_kernels(node) -> list[LayerSpec]:
    h, w, c = hwc(in_shape(node))
    cfg = node.layer.get_config()
    (kh, kw) = _pair(cfg["pool_size"])
    (sh, sw) = _pair(cfg["strides"] or cfg["pool_size"])
    op = "max" if "Max" in type(node.layer).__name__ else "avg"
    return [
        LayerSpec(
            "pool2d",
            dict(h=h, w=w, c=c, kh=kh, kw=kw, sh=sh, sw=sw),
            {"op": op, "padding": cfg["padding"]},
        )
    ]


def _global_pool_kernels(node) -> list[LayerSpec]:
    """A MEAN / REDUCE_MAX (over a single position the converter may reshape instead: see
    `fdi_keras.kernels`)."""
    h, w, c = hwc(in_shape(node))
    op = "max" if "Max" in type(node.layer).__name__ else "avg"
    return [LayerSpec("global_pool", dict(h=h, w=w, c=c), {"op": op})]


def _elementwise(count):
    """`count(node)` element-wise binary ops over the output ("add" kernels)."""

    def kernels(node):
        h, w, c = hwc(out_shape(node))
        return [LayerSpec("add", dict(h=h, w=w, c=c)) for _ in range(count(node))]

    return kernels


def _merge_count(node) -> int:
    return len(node.inputs) - 1 + (1 if isinstance(node.layer, L.Average) else 0)


def _normalization_count(node) -> int:
    """(x - mean) / sqrt(variance): SUB and MUL, or nothing when it is the identity (an
    unadapted Normalization, as in keras.applications built with weights=None)."""
    layer = node.layer
    identity = np.allclose(np.asarray(layer.mean), 0) and np.allclose(np.asarray(layer.variance), 1)
    return 0 if identity else 2


def _rescaling_count(node) -> int:
    cfg = node.layer.get_config()
    return int(np.any(np.asarray(cfg["scale"]) != 1)) + int(np.any(np.asarray(cfg["offset"]) != 0))


def _copy_kernels(node) -> list[LayerSpec]:
    """Padding and cropping copy the tensor into a larger or smaller one: a PAD kernel from the
    smaller shape to the larger (cropping runs as a STRIDED_SLICE, predicted as the pad that
    would undo it: the same bytes moved)."""
    (h, w, c), (oh, ow, _) = hwc(in_shape(node)), hwc(out_shape(node))
    if (h, w) == (oh, ow):
        return []
    dims = dict(h=min(h, oh), w=min(w, ow), c=c, ph=abs(oh - h), pw=abs(ow - w))
    return [LayerSpec("pad", dims)]


def _concat_channels(layer) -> str:
    axis, rank = layer.axis, len(layer.output.shape)
    return "concat" if axis in (-1, rank - 1) else "fixed"


def _concat_kernels(node) -> list[LayerSpec]:
    h, w, c = hwc(out_shape(node))
    return [LayerSpec("concat", dict(h=h, w=w, c=c, n=len(node.inputs)))]


def _norm_kernels(node) -> list[LayerSpec]:
    """A BatchNormalization the converter cannot fold into a conv before it (a pre-activation
    BN in ResNet50V2 and DenseNet121) runs as one MUL: its shift is folded into the convolution
    after it, and a ReLU between them is fused into the MUL (as read off the converted models)."""
    h, w, c = hwc(in_shape(node))
    return [LayerSpec("add", dict(h=h, w=w, c=c))]


def _layer_norm_kernels(node) -> list[LayerSpec]:
    """LayerNormalization over channels, as the converter lowers it: two MEANs over the
    channels (mean, variance), four element-wise ops over the whole tensor (SQUARED_DIFFERENCE,
    MUL, MUL, ADD) and three over one value per position (ADD epsilon, RSQRT, NEG); MEANs are
    predicted as global pools of the channel vectors, the SQUARED_DIFFERENCE as its own kind
    (int8 runs it outside XNNPack: 40x an ADD), the others as element-wise "add"s. int8 runs
    the RSQRT outside XNNPack too (about 60 ns a value on an AMD EPYC VM), but over one value
    per position (4 us on an 8x8 map, where the SQUARED_DIFFERENCE takes 45): it stays an
    "add", since the profiler's random inputs, negative half the time, stop a RSQRT kernel."""
    h, w, c = hwc(in_shape(node))
    mean = LayerSpec("global_pool", dict(h=1, w=h * w, c=c), {"op": "avg"})
    full, per_position = dict(h=h, w=w, c=c), dict(h=h, w=w, c=1)
    return (
        [mean, mean, LayerSpec("squared_difference", full)]
        + [LayerSpec("add", full)] * 3
        + [LayerSpec("add", per_position)] * 3
    )


def _none(node) -> list[LayerSpec]:
    return []


INFERENCE_IDENTITY = (
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.GaussianNoise,
    L.GaussianDropout,
    L.AlphaDropout,
    L.Identity,
    L.ActivityRegularization,
)


def _tensor_rule(gate: str, slice_weights, channels=_conv_channels) -> LayerRule:
    """A convolution/Dense layer: it makes its channels (gated by `gate`), absorbs a following
    BatchNormalization and ReLU/ReLU6 in the converter."""
    return LayerRule(
        channels=channels,
        kernels=_tensor_kernels,
        gate=gate,
        slice_weights=slice_weights,
        absorbs=True,
    )


def _register_builtins() -> None:
    register_layer(L.InputLayer, LayerRule(channels="pass", kernels=_none))
    for cls in INFERENCE_IDENTITY:
        register_layer(cls, LayerRule(channels="pass", kernels=_none, elementwise=True))
    register_layer(L.Dense, _tensor_rule("units", _slice_dense_conv, channels="new"))
    register_layer(L.Conv1D, _tensor_rule("filters", _slice_dense_conv))
    register_layer(L.Conv2D, _tensor_rule("filters", _slice_dense_conv))
    register_layer(L.SeparableConv2D, _tensor_rule("filters", _slice_separable, channels="new"))
    register_layer(
        L.DepthwiseConv2D,
        _tensor_rule("depth_multiplier", _slice_depthwise, channels="depthwise"),
    )
    for cls in (L.GRU, L.LSTM):
        register_layer(
            cls,
            LayerRule(
                channels="new",
                kernels=_recurrent_kernels,
                gate="units",
                slice_weights=_slice_recurrent,
            ),
        )
    for cls in (L.Conv2DTranspose, L.Conv1DTranspose, L.Conv3D, L.SimpleRNN, L.Embedding):
        register_layer(cls, LayerRule(channels="fixed", why="this layer type is not profiled"))
    register_layer(
        L.BatchNormalization,
        LayerRule(
            channels="pass",
            kernels=_norm_kernels,
            slice_weights=_slice_per_channel,
            fuses="norm",
            elementwise=True,
        ),
    )
    act = LayerRule(
        channels=_activation_channels,
        kernels=_activation_kernels,
        fuses=_fused_activation,
        elementwise=True,
    )
    register_layer(L.Activation, act)
    register_layer(L.ReLU, act)
    register_layer(
        L.Softmax,
        LayerRule(
            channels="fixed", kernels=lambda n: [LayerSpec("softmax", {"n": numel(in_shape(n))})]
        ),
    )
    register_layer(L.LayerNormalization, LayerRule(channels="fixed", kernels=_layer_norm_kernels))
    register_layer(
        L.Rescaling,
        LayerRule(channels="pass", kernels=_elementwise(_rescaling_count), elementwise=True),
    )
    # Normalization's mean/variance are per channel but not sliced by strip: it stays whole.
    register_layer(
        L.Normalization,
        LayerRule(channels="pass", kernels=_elementwise(_normalization_count), elementwise=True),
    )
    for cls in (L.MaxPooling1D, L.MaxPooling2D, L.AveragePooling1D, L.AveragePooling2D):
        register_layer(cls, LayerRule(channels="pass", kernels=_pool_kernels))
    for cls in (
        L.GlobalAveragePooling1D,
        L.GlobalAveragePooling2D,
        L.GlobalMaxPooling1D,
        L.GlobalMaxPooling2D,
    ):
        register_layer(cls, LayerRule(channels="pass", kernels=_global_pool_kernels))
    for cls in (L.ZeroPadding1D, L.ZeroPadding2D, L.Cropping1D, L.Cropping2D):
        register_layer(cls, LayerRule(channels="pass", kernels=_copy_kernels))
    for cls in (L.Add, L.Subtract, L.Multiply, L.Maximum, L.Minimum, L.Average):
        register_layer(
            cls, LayerRule(channels="merge", kernels=_elementwise(_merge_count), elementwise=True)
        )
    register_layer(L.Concatenate, LayerRule(channels=_concat_channels, kernels=_concat_kernels))
    register_layer(L.Flatten, LayerRule(channels="flatten", kernels=_none))
    for cls in (L.Reshape, L.Permute):
        register_layer(cls, LayerRule(channels="fixed", kernels=_none))


def _op_elementwise_kernels(node) -> list[LayerSpec]:
    h, w, c = hwc(out_shape(node))
    return [LayerSpec("add", dict(h=h, w=w, c=c))]


def _op_activation(name):
    def kernels(node):
        return activation_specs(node.layer, name, in_shape(node))

    return kernels


def _register_application_layers() -> None:
    """Layers that keras.applications define for themselves (not public classes: by name).
    ConvNeXt's LayerScale multiplies each channel by a learned gamma: one MUL; strip keeps its
    channels (its `projection_dim` is fixed in its config). InceptionResNetV2's
    CustomScaleLayer adds a residual branch times a constant to its shortcut, `x + r * scale`:
    its inputs are coupled like an Add's, and it runs as one ADD, because the converter folds
    the scale into the convolution that ends every such branch."""
    register_operation(
        "LayerScale",
        LayerRule(channels="pass", kernels=_elementwise(lambda n: 1), elementwise=True),
    )
    register_operation(
        "CustomScaleLayer",
        LayerRule(channels="merge", kernels=_elementwise(lambda n: 1), elementwise=True),
    )


def _register_operations() -> None:
    """Keras operations applied to symbolic tensors inside a functional model (MobileNetV3's
    hard sigmoid is `ReLU(6.0)(x + 3.0) * (1.0 / 6.0)`). A binary op with a constant passes
    channels; with two tensors it merges them (see `fdi_keras.prune.structure`)."""
    for name in ("Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum"):
        register_operation(
            name, LayerRule(channels="merge", kernels=_op_elementwise_kernels, elementwise=True)
        )
    for name, fn in (
        ("Relu", "relu"),
        ("Relu6", "relu6"),
        ("Sigmoid", "sigmoid"),
        ("Tanh", "tanh"),
        ("Silu", "silu"),
        ("HardSilu", "hard_silu"),
        ("HardSigmoid", "hard_sigmoid"),
        ("Gelu", "gelu"),
    ):
        register_operation(
            name, LayerRule(channels="pass", kernels=_op_activation(fn), elementwise=True)
        )


_register_builtins()
_register_operations()
_register_application_layers()
