"""Map a Keras model to the kernels the TFLite runtime executes (with the converter's fusions).

The converter folds BatchNormalization into the preceding convolution/dense layer, fuses
ReLU/ReLU6 into it, folds a ZeroPadding2D into a following 'valid' convolution, and drops
Dropout/Reshape/Flatten; pooling, LRN, Add, Concatenate, other activations and softmax stay
ops of their own. `model_kernels` reproduces that, so predicted totals match measured ones.
"""

from __future__ import annotations

import dataclasses

import keras

from fdi_keras.errors import UnsupportedLayerError
from fdi_keras.layers import LocalResponseNormalization
from fdi_keras.specs import LayerSpec

L = keras.layers
# Layers that compute nothing at inference (the converter drops them).
INFERENCE_IDENTITY = (
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.GaussianNoise,
    L.Identity,
    L.ActivityRegularization,
)
FREE = (L.InputLayer, L.Reshape, L.Flatten, L.Permute, *INFERENCE_IDENTITY)
FUSABLE_ACTIVATIONS = ("relu", "relu6", "linear")
POOLING = (L.MaxPooling1D, L.MaxPooling2D, L.AveragePooling1D, L.AveragePooling2D)
GLOBAL_POOLING = (
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
)
TENSOR_LAYERS = (L.Conv1D, L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D, L.Dense)
SUPPORTED = (
    TENSOR_LAYERS
    + FREE
    + (
        L.BatchNormalization,
        L.ReLU,
        L.Activation,
        L.Softmax,
        L.ZeroPadding2D,
        *POOLING,
        *GLOBAL_POOLING,
        L.Add,
        L.Multiply,
        L.Subtract,
        L.Concatenate,
        L.GRU,
        L.LSTM,
        LocalResponseNormalization,
    )
)


@dataclasses.dataclass
class Kernel:
    """One runtime kernel and the Keras layers it executes (several when fused)."""

    spec: LayerSpec
    layers: list[str]


def _shape(tensor):
    return tuple(tensor.shape[1:])


def _hw(shape):
    """(h, w, c) of a channels-last 1-D or 2-D feature map (1-D maps have h = 1)."""
    return (1, *shape) if len(shape) == 2 else shape


def _graph(model):
    """producer and consumers of every layer, from public symbolic tensors."""
    producer = {id(layer.output): layer for layer in model.layers}
    consumers = {id(layer): [] for layer in model.layers}
    for layer in model.layers:
        if isinstance(layer, L.InputLayer):
            continue
        inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        for t in inputs:
            if id(t) in producer:
                consumers[id(producer[id(t)])].append(layer)
    return consumers


def _activation_name(layer):
    if isinstance(layer, L.ReLU):
        cfg = layer.get_config()
        if cfg.get("negative_slope", 0) == 0 and cfg.get("threshold", 0) == 0:
            return (
                "relu6"
                if cfg.get("max_value") == 6
                else ("relu" if cfg.get("max_value") is None else None)
            )
        return None
    if isinstance(layer, L.Activation) or hasattr(layer, "activation"):
        name = keras.activations.serialize(layer.activation)
        return name if isinstance(name, str) else None
    return None


def _sole_consumer(layer, consumers, model_outputs):
    users = consumers[id(layer)]
    if len(users) == 1 and id(layer.output) not in model_outputs:
        return users[0]
    return None


def _conv_specs(layer, in_shape, padding_override=None):
    h, w, cin = _hw(in_shape)
    cfg = layer.get_config()
    ks, st = cfg["kernel_size"], cfg["strides"]
    kh, kw = (1, ks[0]) if len(ks) == 1 else ks
    sh, sw = (1, st[0]) if len(st) == 1 else st
    padding = padding_override or cfg["padding"]
    if padding not in ("same", "valid"):
        raise UnsupportedLayerError(
            f"Layer {layer.name!r} ({type(layer).__name__}) uses "
            f"padding={padding!r}; supported: 'same', 'valid'."
        )
    conv = dict(h=h, w=w, cin=cin, kh=kh, kw=kw, sh=sh, sw=sw)
    if isinstance(layer, (L.DepthwiseConv2D, L.SeparableConv2D)):
        mult = cfg["depth_multiplier"]
        specs = [LayerSpec("depthwise_conv2d", {**conv, "mult": mult}, {"padding": padding})]
        if isinstance(layer, L.SeparableConv2D):
            oh, ow, _ = _hw(_shape(layer.output))
            specs.append(
                LayerSpec(
                    "conv2d",
                    dict(h=oh, w=ow, cin=cin * mult, cout=cfg["filters"], kh=1, kw=1, sh=1, sw=1),
                )
            )
        return specs
    return [LayerSpec("conv2d", {**conv, "cout": cfg["filters"]}, {"padding": padding})]


def _tensor_specs(layer, in_shape, padding_override=None):
    if isinstance(layer, L.Dense):
        m = 1
        for d in in_shape[:-1]:
            m *= d
        return [LayerSpec("dense", dict(m=m, cin=in_shape[-1], cout=layer.units))]
    return _conv_specs(layer, in_shape, padding_override)


def _pool_spec(layer, in_shape):
    h, w, c = _hw(in_shape)
    cfg = layer.get_config()
    ps, st = cfg["pool_size"], cfg["strides"] or cfg["pool_size"]
    kh, kw = (1, ps[0]) if len(ps) == 1 else ps
    sh, sw = (1, st[0]) if len(st) == 1 else st
    op = "max" if isinstance(layer, (L.MaxPooling1D, L.MaxPooling2D)) else "avg"
    return LayerSpec(
        "pool2d",
        dict(h=h, w=w, c=c, kh=kh, kw=kw, sh=sh, sw=sw),
        {"op": op, "padding": cfg["padding"]},
    )


def _elementwise_specs(layer):
    inputs = layer.input
    h, w, c = (
        _hw(_shape(layer.output))
        if len(_shape(layer.output)) >= 2
        else (1, 1, _shape(layer.output)[0])
    )
    return [LayerSpec("add", dict(h=h, w=w, c=c)) for _ in range(len(inputs) - 1)]


def _activation_spec(layer, name, in_shape):
    n = 1
    for d in in_shape:
        n *= d
    if name == "softmax":
        return [LayerSpec("softmax", dict(n=n))]
    if name == "linear":
        return []
    if name == "swish":
        return [
            LayerSpec("activation", dict(n=n), {"fn": "sigmoid"}),
            LayerSpec("add", dict(h=1, w=1, c=n)),
        ]  # x * sigmoid(x): LOGISTIC then MUL
    fn = {"hard_silu": "hard_swish", "hard_swish": "hard_swish"}.get(name, name)
    try:
        return [LayerSpec("activation", dict(n=n), {"fn": fn})]
    except ValueError as e:
        raise UnsupportedLayerError(
            f"Layer {layer.name!r} uses activation {name!r}, which has no kernel model. {e}"
        ) from e


def _unsupported(layer):
    names = sorted({c.__name__ for c in SUPPORTED})
    return UnsupportedLayerError(
        f"Layer {layer.name!r} of class {type(layer).__name__} has no runtime-kernel mapping. "
        f"Supported layer classes: {', '.join(names)}."
    )


def model_kernels(model: keras.Model) -> list[Kernel]:
    """The kernels TFLite runs for `model` (batch 1), in graph order, fusions applied."""
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs") or model.inputs is None:
        raise TypeError(
            "model_kernels needs a built functional or Sequential keras.Model. "
            f"Received: {type(model).__name__}"
        )
    consumers = _graph(model)
    outputs = {id(t) for t in model.outputs}
    absorbed: set[int] = set()
    kernels: list[Kernel] = []
    for layer in model.layers:
        if id(layer) in absorbed or isinstance(layer, FREE):
            continue
        if not isinstance(layer, SUPPORTED):
            raise _unsupported(layer)
        kernels.extend(_layer_kernels(layer, consumers, outputs, absorbed))
    return kernels


def _fuse_tail(layer, consumers, outputs, absorbed):
    """Names of BN / ReLU layers the converter folds into tensor `layer`, and the final act."""
    names, act = [layer.name], _activation_name(layer)
    current = layer
    nxt = _sole_consumer(current, consumers, outputs)
    if act == "linear" and isinstance(nxt, L.BatchNormalization):
        absorbed.add(id(nxt))
        names.append(nxt.name)
        current, nxt = nxt, _sole_consumer(nxt, consumers, outputs)
    if (
        act == "linear"
        and nxt is not None
        and _activation_name(nxt) in ("relu", "relu6")
        and isinstance(nxt, (L.ReLU, L.Activation))
    ):
        absorbed.add(id(nxt))
        names.append(nxt.name)
    return names, act


def _layer_kernels(layer, consumers, outputs, absorbed) -> list[Kernel]:
    in_shape = _shape(layer.input) if not isinstance(layer.input, (list, tuple)) else None
    if isinstance(layer, L.ZeroPadding2D):
        nxt = _sole_consumer(layer, consumers, outputs)
        if (
            isinstance(nxt, (L.Conv2D, L.DepthwiseConv2D))
            and nxt.get_config()["padding"] == "valid"
        ):
            return []  # folded into the convolution, which sees the padded input
        h, w, c = in_shape
        oh, ow, _ = _shape(layer.output)
        return [Kernel(LayerSpec("pad", dict(h=h, w=w, c=c, ph=oh - h, pw=ow - w)), [layer.name])]
    if isinstance(layer, TENSOR_LAYERS):
        names, act = _fuse_tail(layer, consumers, outputs, absorbed)
        kernels = [Kernel(s, names) for s in _tensor_specs(layer, in_shape)]
        if act not in FUSABLE_ACTIVATIONS:
            kernels += [
                Kernel(s, [layer.name]) for s in _activation_spec(layer, act, _shape(layer.output))
            ]
        return kernels
    if isinstance(layer, L.BatchNormalization):  # not after a tensor layer: MUL + ADD
        h, w, c = _hw(in_shape) if len(in_shape) >= 2 else (1, 1, in_shape[0])
        return [Kernel(LayerSpec("add", dict(h=h, w=w, c=c)), [layer.name])] * 2
    if isinstance(layer, (L.ReLU, L.Activation)):
        name = _activation_name(layer)
        if name is None:
            raise _unsupported(layer)
        return [Kernel(s, [layer.name]) for s in _activation_spec(layer, name, in_shape)]
    if isinstance(layer, L.Softmax):
        return [Kernel(s, [layer.name]) for s in _activation_spec(layer, "softmax", in_shape)]
    if isinstance(layer, POOLING):
        return [Kernel(_pool_spec(layer, in_shape), [layer.name])]
    if isinstance(layer, GLOBAL_POOLING):
        h, w, c = _hw(in_shape)
        op = "max" if isinstance(layer, (L.GlobalMaxPooling1D, L.GlobalMaxPooling2D)) else "avg"
        return [Kernel(LayerSpec("global_pool", dict(h=h, w=w, c=c), {"op": op}), [layer.name])]
    if isinstance(layer, (L.Add, L.Multiply, L.Subtract)):
        return [Kernel(s, [layer.name]) for s in _elementwise_specs(layer)]
    if isinstance(layer, L.Concatenate):
        h, w, c = _hw(_shape(layer.output))
        n = len(layer.input)
        return [Kernel(LayerSpec("concat", dict(h=h, w=w, c=c, n=n)), [layer.name])]
    if isinstance(layer, LocalResponseNormalization):
        h, w, c = in_shape
        return [
            Kernel(LayerSpec("lrn", dict(h=h, w=w, c=c, radius=layer.depth_radius)), [layer.name])
        ]
    if isinstance(layer, (L.GRU, L.LSTM)):
        t, cin = in_shape
        kind = "gru" if isinstance(layer, L.GRU) else "lstm"
        return [Kernel(LayerSpec(kind, dict(t=t, cin=cin, units=layer.units)), [layer.name])]
    raise _unsupported(layer)
