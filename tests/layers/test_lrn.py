import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from fdi_keras.export import to_tflite
from fdi_keras.layers import LocalResponseNormalization


def reference_lrn(x, radius, bias, alpha, beta):
    c = x.shape[-1]
    out = np.empty_like(x)
    for i in range(c):
        lo, hi = max(0, i - radius), min(c, i + radius + 1)
        out[..., i] = x[..., i] / (bias + alpha * np.sum(x[..., lo:hi] ** 2, axis=-1)) ** beta
    return out


def test_matches_the_formula():
    x = np.random.default_rng(0).standard_normal((1, 4, 4, 12)).astype("float32")
    layer = LocalResponseNormalization(depth_radius=2, bias=2.0, alpha=1e-2, beta=0.75)
    np.testing.assert_allclose(layer(x), reference_lrn(x, 2, 2.0, 1e-2, 0.75), rtol=1e-5)


def test_converts_to_the_tflite_lrn_op():
    x = keras.Input((8, 8, 16))
    model = keras.Model(x, LocalResponseNormalization(2, alpha=1e-4, beta=0.75)(x))
    ops = [d["op_name"] for d in Interpreter(model_content=to_tflite(model))._get_ops_details()]
    assert ops == ["LOCAL_RESPONSE_NORMALIZATION"]


def test_keras_round_trip(tmp_path):
    x = keras.Input((4, 4, 8))
    model = keras.Model(x, LocalResponseNormalization(3, bias=1.5, alpha=0.1, beta=0.6)(x))
    path = str(tmp_path / "lrn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.layers[-1]
    assert isinstance(layer, LocalResponseNormalization)
    assert (layer.depth_radius, layer.bias, layer.alpha, layer.beta) == (3, 1.5, 0.1, 0.6)
    data = np.ones((1, 4, 4, 8), "float32")
    np.testing.assert_allclose(loaded(data), model(data))


def test_rejects_a_bad_radius():
    with pytest.raises(ValueError, match="depth_radius must be a non-negative integer"):
        LocalResponseNormalization(depth_radius=1.5)
