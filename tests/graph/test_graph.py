"""trace() and the layer registry: nested and shared models, Keras operations, user layers."""

import keras
import numpy as np
import pytest

import fdi_keras as fdi
from fdi_keras.graph import LayerRule, register_layer, rule_for, trace
from fdi_keras.kernels import model_kernels
from fdi_keras.specs import LayerSpec

L = keras.layers


def nested_model():
    base_in = keras.Input((8, 8, 3))
    h = L.BatchNormalization(name="base_bn")(L.Conv2D(6, 3, name="base_conv")(base_in))
    base = keras.Model(base_in, L.ReLU(name="base_relu")(h), name="base")
    x = keras.Input((8, 8, 3))
    y = L.GlobalAveragePooling2D(name="gap")(base(x, training=False))
    return keras.Model(x, L.Dense(4, name="head")(y))


def test_nested_models_are_inlined_with_their_training_argument():
    model = nested_model()
    graph = trace(model)
    assert [n.name for n in graph.nodes] == ["base_conv", "base_bn", "base_relu", "gap", "head"]
    assert graph.node("base_bn").kwargs["training"] is False
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(graph.model(x), model(x), atol=1e-6)
    assert [k.layers for k in model_kernels(model)][0] == ["base_conv", "base_bn", "base_relu"]


def test_a_model_is_traced_once_and_again_when_its_layers_change():
    model = keras.Sequential([keras.Input((8,)), L.Dense(4, name="d1")])
    model.compile("adam", "mse")  # tracing a compiled model leaves it compiled
    graph = trace(model)
    assert trace(model) is graph and model.compiled
    model.add(L.Dense(2, name="d2"))
    assert [n.name for n in trace(model).nodes] == ["d1", "d2"]
    outer = keras.Sequential([keras.Input((8,)), model])
    before = trace(outer)
    model.pop()  # a nested model's change is seen through the outer one
    assert trace(outer) is not before
    assert [n.name for n in trace(outer).nodes] == ["d1"]


def test_a_shared_layer_is_one_node_per_call():
    x = keras.Input((8, 8, 4))
    shared = L.Conv2D(4, 3, padding="same", name="shared")
    y = L.Add()([shared(x), shared(L.ReLU()(x))])
    model = keras.Model(x, y)
    graph = trace(model)
    assert [n.name for n in graph.calls(shared)] == ["shared", "shared@1"]
    convs = [k for k in model_kernels(model) if k.spec.kind == "conv2d"]
    assert [k.layers[0] for k in convs] == ["shared", "shared@1"]


def test_keras_operations_on_symbolic_tensors_are_nodes_with_rules():
    x = keras.Input((4, 4, 8))
    y = L.ReLU(6.0)(L.Conv2D(8, 1, name="conv")(x) + 3.0) * (1.0 / 6.0)  # a hard sigmoid
    model = keras.Model(x, y)
    kinds = [k.spec.kind for k in model_kernels(model)]
    # the converter folds `+ 3` and the ReLU6 into the conv; the scale stays a MUL
    assert kinds == ["conv2d", "add"]
    assert rule_for(trace(model).nodes[1].layer).channel_kind(None) == "merge"


class ScaledTanh(L.Layer):
    """2 tanh(x): element-wise, the docs' example of a user's own layer."""

    def call(self, x):
        return 2.0 * keras.ops.tanh(x)


def _scaled_tanh_kernels(node):
    n = int(np.prod(node.inputs[0].shape[1:]))
    return [
        LayerSpec("activation", {"n": n}, {"fn": "tanh"}),
        LayerSpec("add", {"h": 1, "w": 1, "c": n}),
    ]


def scaled_tanh_model():
    x = keras.Input((6, 6, 3))
    h = ScaledTanh(name="scaled_tanh")(L.Conv2D(8, 3, name="conv")(x))
    h = L.GlobalAveragePooling2D()(L.Conv2D(6, 1, name="conv2")(h))
    return keras.Model(x, L.Dense(2)(h))


def test_an_unregistered_layer_names_itself_for_prediction_and_stays_whole_for_pruning():
    model = scaled_tanh_model()
    with pytest.raises(fdi.UnsupportedLayerError, match="'scaled_tanh' of class ScaledTanh.*"):
        model_kernels(model)
    with pytest.raises(fdi.UnsupportedLayerError, match=r"register_layer\(ScaledTanh"):
        model_kernels(model)
    gated = fdi.latency_aware(model)
    names = [layer.name for layer in gated.layers]
    assert "latency_aware_conv" not in names  # its channels go into a layer of unknown kind
    assert "latency_aware_conv2" in names


def test_a_registered_user_layer_is_predicted_and_stripped_through():
    register_layer(
        ScaledTanh, LayerRule(channels="pass", kernels=_scaled_tanh_kernels, elementwise=True)
    )
    try:
        model = scaled_tanh_model()
        kinds = [k.spec.kind for k in model_kernels(model)]
        assert kinds.count("activation") == 1 and kinds.count("add") == 1
        gated = fdi.latency_aware(model)
        conv = gated.get_layer("latency_aware_conv")
        conv.set_gate_logits(np.where(np.arange(8) % 2 == 0, 5.0, -5.0))
        small = fdi.strip(gated)
        x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
        np.testing.assert_allclose(small(x), gated(x, training=False), atol=1e-5)
        assert small.get_layer("conv").filters == 4
    finally:
        register_layer(ScaledTanh, LayerRule())  # back to "fixed", no kernels


def test_register_layer_rejects_what_is_not_a_class_or_a_rule():
    with pytest.raises(TypeError, match="layer_class must be a class"):
        register_layer("Dense", LayerRule())
    with pytest.raises(TypeError, match="rule must be a fdi_keras.graph.LayerRule"):
        register_layer(L.Dense, {"channels": "new"})
    with pytest.raises(ValueError, match="channels must be one of"):
        LayerRule(channels="sideways")


def test_trace_rejects_a_subclassed_model():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="functional or Sequential keras.Model"):
        trace(Net())
