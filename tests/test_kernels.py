import collections

import keras
import pytest
from tflite_ops import runtime_kinds

from fdi_keras.errors import UnsupportedLayerError
from fdi_keras.kernels import model_kernels
from fdi_keras.layers import LocalResponseNormalization

L = keras.layers


def predicted_kinds(model):
    return collections.Counter(k.spec.kind for k in model_kernels(model))


@pytest.mark.parametrize(
    "build",
    [
        lambda: keras.applications.MobileNet((96, 96, 3), alpha=0.25, weights=None),
        lambda: keras.applications.MobileNetV2((96, 96, 3), alpha=0.35, weights=None),
    ],
)
def test_mobilenets_map_to_the_ops_the_converter_emits(build):
    model = build()
    assert predicted_kinds(model) == runtime_kinds(model)


def inception_like():
    x = keras.Input((16, 16, 8))
    y = L.Conv2D(16, 3, padding="same", use_bias=False)(x)
    y = L.BatchNormalization()(y)
    y = L.ReLU()(y)
    y = LocalResponseNormalization(2)(y)
    y = L.MaxPooling2D(3, 2, padding="same")(y)
    a = L.Conv2D(8, 1, activation="relu")(y)
    b = L.SeparableConv2D(8, 3, padding="same")(y)
    c = L.AveragePooling2D(3, 1, padding="same")(y)
    c = L.ZeroPadding2D(1)(c)  # not followed by a valid conv: a PAD op of its own
    c = L.Conv2D(8, 3, activation="sigmoid")(c)
    y = L.Concatenate()([a, b, c])
    y = L.Add()([y, y])
    y = L.GlobalAveragePooling2D()(y)
    y = L.Dropout(0.5)(y)
    return keras.Model(x, L.Dense(10, activation="softmax")(y))


def test_fusion_and_every_op_kind_on_a_mixed_model():
    model = inception_like()
    kernels = model_kernels(model)
    assert kernels[0].layers[:3] == [
        model.layers[1].name,
        model.layers[2].name,
        model.layers[3].name,
    ]
    assert predicted_kinds(model) == runtime_kinds(model)


def test_recurrent_and_conv1d():
    x = keras.Input((32, 6))
    y = L.Conv1D(16, 5, padding="same", activation="relu")(x)
    y = L.MaxPooling1D(2)(y)
    y = L.GRU(12)(y)
    model = keras.Model(x, L.Dense(3)(y))
    kernels = model_kernels(model)
    assert [k.spec.kind for k in kernels] == ["conv2d", "pool2d", "gru", "dense"]
    assert kernels[0].spec.dims == dict(h=1, w=32, cin=6, cout=16, kh=1, kw=5, sh=1, sw=1)
    assert kernels[2].spec.dims == dict(t=16, cin=16, units=12)


def test_grouped_convs_one_group_per_channel_run_as_depthwise():
    x = keras.Input((8, 8, 16))
    per_channel = L.Conv2D(32, 7, padding="same", groups=16)(x)  # like ConvNeXt's 7x7, multiplier 2
    model = keras.Model(x, L.Conv2D(32, 3, padding="same", groups=4)(per_channel))
    first, second = model_kernels(model)
    assert first.spec.kind == "depthwise_conv2d"
    assert first.spec.dims == dict(h=8, w=8, cin=16, mult=2, kh=7, kw=7, sh=1, sw=1)
    # Four groups of 8 input channels: one conv over 8 input channels (the same FLOPs).
    assert second.spec.kind == "conv2d" and second.spec.dims["cin"] == 8
    assert predicted_kinds(model) == runtime_kinds(model)


def test_layer_normalization_runs_a_squared_difference_of_its_own_kind():
    # int8 runs SQUARED_DIFFERENCE outside XNNPack (40x an ADD): it is not predicted as one.
    x = keras.Input((8, 8, 32))
    y = L.LayerNormalization(epsilon=1e-6)(L.Conv2D(32, 1)(x))
    model = keras.Model(x, L.Conv2D(16, 1)(y))
    kinds = predicted_kinds(model)
    assert kinds["squared_difference"] == 1
    assert kinds["squared_difference"] == runtime_kinds(model)["squared_difference"]
    (spec,) = [k.spec for k in model_kernels(model) if k.spec.kind == "squared_difference"]
    assert spec.dims == dict(h=8, w=8, c=32)


def test_unsupported_layer_names_itself_why_and_the_fix():
    x = keras.Input((8, 8, 3))
    model = keras.Model(x, L.Conv2DTranspose(4, 3, name="upsample")(x))
    with pytest.raises(
        UnsupportedLayerError,
        match=r"'upsample' of class Conv2DTranspose.*not profiled.*"
        r"register_layer\(Conv2DTranspose",
    ):
        model_kernels(model)


def test_rejects_non_models():
    with pytest.raises(TypeError, match="keras.Model"):
        model_kernels(L.Dense(3))
