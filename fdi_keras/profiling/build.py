"""Build the smallest Keras model whose TFLite graph is exactly one kernel of a LayerSpec."""

from __future__ import annotations

import keras

from fdi_keras.layers import LocalResponseNormalization
from fdi_keras.profiling.networks import network_of
from fdi_keras.specs import NETWORK, LayerSpec


def _image(d, channels):
    return keras.Input((d["h"], d["w"], channels), batch_size=1)


def _conv2d(d, a):
    x = _image(d, d["cin"])
    return x, keras.layers.Conv2D(d["cout"], (d["kh"], d["kw"]), (d["sh"], d["sw"]), a["padding"])(
        x
    )


def _depthwise(d, a):
    x = _image(d, d["cin"])
    layer = keras.layers.DepthwiseConv2D(
        (d["kh"], d["kw"]), (d["sh"], d["sw"]), a["padding"], depth_multiplier=d["mult"]
    )
    return x, layer(x)


def _dense(d, a):
    x = keras.Input((d["cin"],) if d["m"] == 1 else (d["m"], d["cin"]), batch_size=1)
    return x, keras.layers.Dense(d["cout"])(x)


def _pool(d, a):
    x = _image(d, d["c"])
    cls = keras.layers.MaxPooling2D if a["op"] == "max" else keras.layers.AveragePooling2D
    return x, cls((d["kh"], d["kw"]), (d["sh"], d["sw"]), a["padding"])(x)


def _global_pool(d, a):
    x = _image(d, d["c"])
    cls = (
        keras.layers.GlobalMaxPooling2D if a["op"] == "max" else keras.layers.GlobalAveragePooling2D
    )
    return x, cls()(x)


def _add(d, a):
    xs = [_image(d, d["c"]) for _ in range(2)]
    return xs, keras.layers.Add()(xs)


def _squared_difference(d, a):
    xs = [_image(d, d["c"]) for _ in range(2)]
    return xs, keras.ops.square(keras.ops.subtract(*xs))  # one SQUARED_DIFFERENCE op


def _concat(d, a):
    widths = [d["c"] // d["n"] + (i < d["c"] % d["n"]) for i in range(d["n"])]
    xs = [_image(d, c) for c in widths]
    return xs, keras.layers.Concatenate()(xs)


def _pad(d, a):
    x = _image(d, d["c"])
    pads = ((d["ph"] // 2, d["ph"] - d["ph"] // 2), (d["pw"] // 2, d["pw"] - d["pw"] // 2))
    return x, keras.layers.ZeroPadding2D(pads)(x)


def _lrn(d, a):
    x = _image(d, d["c"])
    return x, LocalResponseNormalization(d["radius"], alpha=1e-4, beta=0.75)(x)


def _activation(d, a):
    x = keras.Input((d["n"],), batch_size=1)
    return x, keras.layers.Activation(a["fn"])(x)


def _softmax(d, a):
    x = keras.Input((d["n"],), batch_size=1)
    return x, keras.layers.Softmax()(x)


def _recurrent(cls):
    def build(d, a):
        x = keras.Input((d["t"], d["cin"]), batch_size=1)
        return x, cls(d["units"])(x)

    return build


_BUILDERS = {
    "conv2d": _conv2d,
    "depthwise_conv2d": _depthwise,
    "dense": _dense,
    "pool2d": _pool,
    "global_pool": _global_pool,
    "add": _add,
    "squared_difference": _squared_difference,
    "concat": _concat,
    "pad": _pad,
    "lrn": _lrn,
    "activation": _activation,
    "softmax": _softmax,
    "gru": _recurrent(keras.layers.GRU),
    "lstm": _recurrent(keras.layers.LSTM),
}


def build_kernel_model(spec: LayerSpec) -> keras.Model:
    """A batch-1 functional model containing only `spec`'s kernel, randomly initialised
    (for a `network` spec, the whole random network of its seed)."""
    if spec.kind == NETWORK:
        return network_of(spec)
    inputs, outputs = _BUILDERS[spec.kind](spec.dims, spec.attrs)
    return keras.Model(inputs, outputs, name=f"{spec.kind}_kernel")
