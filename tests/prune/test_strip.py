"""strip equivalence: the stripped model computes exactly what the gated model computes."""

import warnings

import keras
import numpy as np
import pytest
from prune_helpers import depthwise_net

from fdi_keras.errors import UnsupportedLayerError
from fdi_keras.prune import LatencyAware, latency_aware, strip

L = keras.layers


def close_random_gates(model, seed=0):
    """Closes about 40% of every group's gates (the same ones within a group) and randomizes
    BN statistics, so that stripping has real work to do."""
    rng = np.random.default_rng(seed)
    group_logits = {}
    for layer in model.layers:
        if not isinstance(layer, LatencyAware):
            continue
        logits = group_logits.setdefault(
            layer.group or layer.name, rng.choice([-6.0, 3.0], layer.channels, p=[0.4, 0.6])
        )
        layer.set_gate_logits(logits)
        if layer.norm is not None:
            layer.norm.set_weights(
                [rng.uniform(0.5, 1.5, w.shape) for w in layer.norm.get_weights()]
            )


def assert_strip_equivalent(model, shape):
    gated = latency_aware(model)
    close_random_gates(gated)
    stripped = strip(gated)
    assert not any(isinstance(layer, LatencyAware) for layer in stripped.layers)
    x = np.random.default_rng(1).standard_normal((3, *shape)).astype("float32")
    np.testing.assert_allclose(stripped(x), gated(x, training=False), atol=1e-5)
    assert stripped.count_params() < gated.count_params()
    assert all(h["kept"] <= h["channels"] for h in stripped.strip_history)
    return gated, stripped


def test_sequential_with_flatten_dense():
    model = keras.Sequential(
        [
            keras.Input((12, 12, 2)),
            L.Conv2D(8, 3, activation="relu"),
            L.BatchNormalization(),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dense(16, activation="tanh"),
            L.Dense(4),
        ]
    )
    assert_strip_equivalent(model, (12, 12, 2))


def test_functional_residual_add():
    x = keras.Input((8, 8, 3))
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(x)))
    for _ in range(2):
        r = L.ReLU()(L.BatchNormalization()(L.Conv2D(12, 3, padding="same")(h)))
        r = L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(r))
        h = L.ReLU()(L.Add()([h, r]))
    model = keras.Model(x, L.Dense(3)(L.GlobalAveragePooling2D()(h)))
    gated, _ = assert_strip_equivalent(model, (8, 8, 3))
    groups = {layer.group for layer in gated.layers if isinstance(layer, LatencyAware)}
    assert len(groups - {None}) == 1


def test_concatenate_and_depthwise_separable():
    x = keras.Input((10, 10, 3))
    a = L.Conv2D(6, 1, activation="relu")(x)
    b = L.SeparableConv2D(5, 3, padding="same", activation="relu")(x)
    c = L.Conv2D(4, 3, padding="same")(x)
    h = L.Concatenate()([a, b, c])
    h = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(h)
    h = L.SeparableConv2D(7, 3, activation="relu")(h)
    model = keras.Model(x, L.Dense(2)(L.GlobalMaxPooling2D()(h)))
    assert_strip_equivalent(model, (10, 10, 3))


@pytest.mark.parametrize("rnn", [L.GRU, L.LSTM])
def test_conv1d_into_recurrent(rnn):
    x = keras.Input((20, 6))
    h = L.Conv1D(16, 3, padding="same", activation="relu")(x)
    h = L.MaxPooling1D()(h)
    h = rnn(8)(h)
    model = keras.Model(x, L.Dense(3)(h))
    assert_strip_equivalent(model, (20, 6))


def test_depthwise_multipliers_and_upstream_channels_are_removed_together():
    gated = latency_aware(depthwise_net(multiplier=3))
    close_random_gates(gated)  # also randomizes the BN fused into the depthwise block
    conv, depthwise = gated.layers[1], gated.layers[2]
    assert isinstance(depthwise.layer, L.DepthwiseConv2D) and depthwise.channels == 3
    conv.set_gate_logits([3, -6, 3, 3, -6, 3])
    depthwise.set_gate_logits([-6, 3, 3])
    stripped = strip(gated)
    x = np.random.default_rng(1).standard_normal((3, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(stripped(x), gated(x, training=False), atol=1e-5)
    small = next(la for la in stripped.layers if isinstance(la, L.DepthwiseConv2D))
    assert small.depth_multiplier == 2 and small.kernel.shape == (3, 3, 4, 2)
    assert small.bias.shape == (8,) and small.output.shape[-1] == 8
    assert stripped.strip_history[1] == {
        "layer": depthwise.layer.name,
        "channels": 3,
        "kept": 2,
        "kept_indices": [1, 2],
    }


@pytest.mark.parametrize(
    "consumer",
    [
        lambda: L.Conv2D(5, 1, use_bias=False),
        lambda: L.SeparableConv2D(5, 3, depth_multiplier=2, use_bias=False),
        lambda: L.GlobalAveragePooling2D(),  # then the Dense
    ],
)
def test_closed_channels_turned_into_constants_are_folded_into_the_consumer(consumer):
    """MobileNet's pattern: the depthwise bias and the BN shift make a removed channel a
    constant that the consumer still adds up; strip folds it into the consumer's bias."""
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(6, 1, activation="relu")(x)
    h = L.DepthwiseConv2D(3, padding="same", use_bias=True, bias_initializer="ones")(h)
    h = L.ReLU(max_value=6.0)(L.BatchNormalization(beta_initializer="ones")(h))
    h = L.Flatten()(consumer()(h))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "strip cannot")  # every fold is exact
        assert_strip_equivalent(keras.Model(x, L.Dense(2)(h)), (8, 8, 3))


def test_a_constant_that_cannot_be_folded_exactly_warns():
    x = keras.Input((8, 8, 3))
    h = LatencyAware(L.Conv2D(4, 1))(x)
    h = L.BatchNormalization(beta_initializer="ones")(h)
    model = keras.Model(x, L.Conv2D(2, 3, padding="same", name="head")(h))
    model.layers[1].set_gate_logits([5, -5, 5, 5])
    with pytest.warns(UserWarning, match="exactly at layer 'head'.*windows cover padding"):
        strip(model)


def test_unequal_masks_across_an_add_are_explained():
    x = keras.Input((4,))
    a = LatencyAware(L.Dense(3))(x)
    b = LatencyAware(L.Dense(3))(x)
    model = keras.Model(x, L.Add()([a, b]))
    a_layer, b_layer = model.layers[1], model.layers[2]
    a_layer.set_gate_logits([5, -5, 5])
    b_layer.set_gate_logits([5, 5, 5])
    with pytest.raises(ValueError, match="must share one gate group.*latency_aware"):
        strip(model)


def test_unsupported_consumer_names_itself():
    x = keras.Input((4,))
    a = LatencyAware(L.Dense(6))(x)
    model = keras.Model(x, L.Reshape((2, 3), name="reshape_it")(a))
    model.layers[1].set_gate_logits([5, -5, 5, 5, 5, 5])
    with pytest.raises(UnsupportedLayerError, match="'reshape_it' of class Reshape"):
        strip(model)


def test_strip_leaves_its_input_untouched():
    model = keras.Sequential([keras.Input((4,)), L.Dense(8, activation="relu"), L.Dense(2)])
    gated = latency_aware(model)
    close_random_gates(gated)
    before = [w.copy() for w in gated.get_weights()]
    strip(gated)
    for a, b in zip(before, gated.get_weights()):
        np.testing.assert_array_equal(a, b)
