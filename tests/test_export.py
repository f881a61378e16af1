import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from fdi_keras.errors import UnsupportedLayerError
from fdi_keras.export import measure_latency, to_tflite, with_batch_one


def ops(flatbuffer):
    return [d["op_name"] for d in Interpreter(model_content=flatbuffer)._get_ops_details()]


def gru_model():
    x = keras.Input((16, 3))
    return keras.Model(x, keras.layers.Dense(4)(keras.layers.GRU(8)(x)))


def test_recurrent_models_are_rebuilt_with_batch_one_and_keep_weights(tmp_path):
    model = gru_model()
    fixed = with_batch_one(model)
    assert fixed.inputs[0].shape[0] == 1
    x = np.random.default_rng(0).standard_normal((1, 16, 3)).astype("float32")
    np.testing.assert_allclose(fixed(x), model(x), atol=1e-6)
    path = str(tmp_path / "gru.tflite")
    flatbuffer = to_tflite(model, path)
    assert "WHILE" in ops(flatbuffer)
    with open(path, "rb") as f:
        assert f.read() == flatbuffer
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, model(x), atol=1e-4)


@pytest.mark.parametrize("nesting", ["list of one", "dict", "list of two"])
def test_models_whose_inputs_are_a_list_or_a_dict_keep_that_nesting_at_batch_one(nesting):
    """`keras.Model([x], y)` (a sub-model of a stock one is built that way) and dict inputs
    are rebuilt with the same nesting: clone_model refuses any other."""
    x, z = keras.Input((8,), name="x"), keras.Input((4,), name="z")
    if nesting == "list of two":
        model = keras.Model([x, z], keras.layers.Dense(3)(keras.layers.Concatenate()([x, z])))
        data = [np.ones((1, 8), "float32"), np.ones((1, 4), "float32")]
    else:
        inputs = [x] if nesting == "list of one" else {"x": x}
        model = keras.Model(inputs, keras.layers.Dense(3)(x))
        data = (
            [np.ones((1, 8), "float32")]
            if nesting == "list of one"
            else {"x": np.ones((1, 8), "float32")}
        )
    fixed = with_batch_one(model)
    assert [t.shape[0] for t in fixed.inputs] == [1] * len(model.inputs)
    np.testing.assert_allclose(fixed(data), model(data), atol=1e-6)
    assert "FULLY_CONNECTED" in ops(to_tflite(model))


def test_int8_and_float16():
    x = keras.Input((8, 8, 4))
    model = keras.Model(x, keras.layers.Conv2D(8, 3)(x))
    int8 = ops(to_tflite(model, quantize="int8"))
    assert "CONV_2D" in int8 and "QUANTIZE" in int8
    assert "CONV_2D" in ops(to_tflite(model, quantize="float16"))


def test_int8_of_a_recurrent_layer_is_refused_before_it_crashes_the_converter():
    x = keras.Input((6, 3))
    model = keras.Model(x, keras.layers.GRU(4, name="gru")(x))
    with pytest.raises(UnsupportedLayerError, match="'gru' of class GRU.*crashes.*float16"):
        to_tflite(model, quantize="int8")


def test_measure_latency_one_and_many():
    x = keras.Input((16, 16, 8))
    small = to_tflite(keras.Model(x, keras.layers.Conv2D(8, 3, padding="same")(x)))
    big = to_tflite(keras.Model(x, keras.layers.Conv2D(256, 3, padding="same")(x)))
    one = measure_latency(small, rounds=3)
    assert one.median_ms > 0 and one.spread >= 0 and one.invokes >= 3
    t_small, t_big = measure_latency([small, big], rounds=5)
    assert t_big.median_us > 4 * t_small.median_us  # 32x the work


def test_errors():
    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Dense(2)(x))
    with pytest.raises(ValueError, match="quantize must be one of"):
        to_tflite(model, quantize="int4")
    with pytest.raises(ValueError, match="backend='local'.*profile_device"):
        measure_latency(b"", backend="adb")
