import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from fdi_keras import qat, qat_worker
from fdi_keras.errors import UnsupportedLayerError

L = keras.layers
needs_extra = pytest.mark.skipif(
    qat.missing_extra() is not None,
    reason="the qat extra (tensorflow-model-optimization, tf_keras) is not installed: "
    "pip install -e '.[qat]'",
)


def blobs(n, seed=0):
    """8x8 noise images with a bright 3x3 blob in one of four quadrants: the class."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (n, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 4, n)
    for i, c in enumerate(y):
        r, col = 4 * (c // 2) + rng.integers(0, 2), 4 * (c % 2) + rng.integers(0, 2)
        x[i, r : r + 3, col : col + 3] += 2.0
    return x, y


def tiny_cnn():
    x = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", use_bias=False)(x)
    h = L.MaxPooling2D()(L.ReLU()(L.BatchNormalization()(h)))
    h = L.Conv2D(8, 3, padding="same", activation="relu")(h)
    return keras.Model(x, L.Dense(4, activation="softmax")(L.Flatten()(h)), name="tiny_cnn")


def trained(model, x, y, epochs=8):
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def op_names(interpreter):
    return [d["op_name"] for d in interpreter._get_ops_details()]


def conv_filter_dtype(interpreter):
    conv = next(o for o in interpreter._get_ops_details() if o["op_name"] == "CONV_2D")
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    return tensors[conv["inputs"][1]]["dtype"]


def test_a_missing_extra_names_the_pip_extra(monkeypatch):
    monkeypatch.setattr(qat.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install fdi_keras\[qat\]"):
        qat.quantize_aware_tflite(tiny_cnn(), *blobs(8))


def test_describe_chains_a_sequential_and_keeps_the_weights():
    model = keras.Sequential([keras.Input((6,)), L.Dense(5), L.Dense(3)], name="seq")
    spec, weights = qat.describe(model)
    assert [i["shape"] for i in spec["inputs"]] == [[6]]
    assert [e["class_name"] for e in spec["layers"]] == ["Dense", "Dense"]
    first = spec["inputs"][0]["name"]
    assert spec["layers"][0]["calls"] == [{"inputs": [[first, 0, 0]], "list": False}]
    assert spec["outputs"] == [[spec["layers"][1]["name"], 0, 0]]
    np.testing.assert_array_equal(weights["1/0"], model.layers[1].get_weights()[0])
    assert "module" not in spec["layers"][0]["config"]["kernel_initializer"]


def test_describe_records_merges_as_list_calls():
    x = keras.Input((4,))
    model = keras.Model(x, L.Add()([L.Dense(4)(x), x]))
    spec, _ = qat.describe(model)
    add = spec["layers"][-1]
    assert add["class_name"] == "Add" and add["calls"][0]["list"]
    assert len(add["calls"][0]["inputs"]) == 2


@keras.saving.register_keras_serializable(package="fdi_keras_tests")
class Doubler(L.Layer):
    def call(self, x):
        return 2 * x


def test_a_custom_layer_is_named_with_the_fallback():
    x = keras.Input((4,))
    model = keras.Model(x, L.Dense(2)(Doubler(name="twice")(x)), name="custom")
    with pytest.raises(UnsupportedLayerError) as info:
        qat.describe(model)
    message = str(info.value)
    assert "'twice' (Doubler)" in message and "not a built-in Keras layer" in message
    assert "to_tflite(model, quantize='int8', representative_data=" in message


def test_batchnorm_and_relu_after_conv1d_fold_into_it():
    inputs = keras.Input((16, 3))
    conv = L.Conv1D(4, 3, padding="same", use_bias=False)
    bn = L.BatchNormalization(epsilon=0.01)
    model = keras.Model(inputs, L.ReLU()(bn(conv(inputs))))
    rng = np.random.default_rng(0)
    bn.set_weights(
        [rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4)]
    )
    spec, arrays = qat.describe(model)
    weights = [
        [arrays[f"{i}/{j}"] for j in range(e["num_weights"])] for i, e in enumerate(spec["layers"])
    ]
    folded, values = qat_worker.fold_into_conv1d(spec, weights)
    assert [e["class_name"] for e in folded["layers"]] == ["Conv1D"]
    assert folded["outputs"] == [[conv.name, 0, 0]]
    twin = L.Conv1D(4, 3, padding="same", activation="relu")
    twin.build((None, 16, 3))
    twin.set_weights(values[0])
    x = rng.normal(size=(2, 16, 3)).astype("float32")
    np.testing.assert_allclose(twin(x), model(x), atol=1e-5)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_a_subclassed_model_is_refused():
    with pytest.raises(TypeError, match="rebuilds Sequential and functional Keras models"):
        qat.describe(Subclassed())


def test_argument_errors():
    model, (x, y) = tiny_cnn(), blobs(8)
    with pytest.raises(ValueError, match="io_dtype must be one of"):
        qat.quantize_aware_tflite(model, x, y, io_dtype="int16")
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        qat.quantize_aware_tflite(model, x, y, epochs=0)
    with pytest.raises(ValueError, match="same, non-zero number of samples"):
        qat.quantize_aware_tflite(model, x, y[:4])


@needs_extra
@pytest.mark.slow
def test_qat_of_a_cnn_is_full_int8_and_agrees_with_keras(tmp_path):
    x, y = blobs(512)
    x_test, y_test = blobs(200, seed=1)
    model = trained(tiny_cnn(), x, y)
    keras_pred = model.predict(x_test, verbose=0).argmax(-1)
    assert (keras_pred == y_test).mean() > 0.9
    before = [w.copy() for w in model.get_weights()]
    path = str(tmp_path / "int8.tflite")
    flatbuffer = qat.quantize_aware_tflite(
        model, x, y, optimizer=keras.optimizers.Adam(1e-3), epochs=2, io_dtype="int8", path=path
    )
    with open(path, "rb") as f:
        assert f.read() == flatbuffer
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # the Keras model is untouched
    interpreter = Interpreter(model_content=flatbuffer)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    assert {d["dtype"] for d in interpreter.get_tensor_details()} <= {np.int8, np.int32}
    assert "CONV_2D" in op_names(interpreter) and "DEQUANTIZE" not in op_names(interpreter)
    assert conv_filter_dtype(interpreter) == np.int8
    int8_pred = qat.predict_tflite(flatbuffer, x_test).argmax(-1)
    assert (int8_pred == keras_pred).mean() > 0.85
    assert (int8_pred == y_test).mean() > 0.85


@needs_extra
@pytest.mark.slow
def test_qat_covers_conv1d_batchnorm_and_pooling1d_with_float_io():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 32, 3)).astype("float32")
    y = (x[:, :, 0].mean(1) > 0).astype("int64")
    inputs = keras.Input((32, 3))
    h = L.Conv1D(8, 5, padding="same", use_bias=False)(inputs)
    h = L.MaxPooling1D(2)(L.ReLU()(L.BatchNormalization()(h)))
    h = L.GlobalAveragePooling1D()(h)
    model = trained(keras.Model(inputs, L.Dense(2, activation="softmax")(h)), x, y, epochs=5)
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=8)
    flatbuffer = qat.quantize_aware_tflite(model, x, y, optimizer=keras.optimizers.Adam(schedule))
    interpreter = Interpreter(model_content=flatbuffer)
    assert interpreter.get_input_details()[0]["dtype"] == np.float32  # the default io_dtype
    names = op_names(interpreter)
    assert names[0] == "QUANTIZE" and names[-1] == "DEQUANTIZE" and "CONV_2D" in names
    assert "MUL" not in names and "RELU" not in names  # BN and ReLU merged into the Conv1D
    assert conv_filter_dtype(interpreter) == np.int8
    agree = qat.predict_tflite(flatbuffer, x).argmax(-1) == model.predict(x, verbose=0).argmax(-1)
    assert agree.mean() > 0.85


@needs_extra
@pytest.mark.slow
def test_a_layer_tfmot_cannot_quantize_is_named_with_the_fallback():
    x = keras.Input((16, 3))
    model = keras.Model(x, L.Dense(2)(L.GRU(4, name="recurrent")(x)), name="har_like")
    data = np.zeros((8, 16, 3), "float32"), np.zeros(8, "int64")
    with pytest.raises(UnsupportedLayerError) as info:
        qat.quantize_aware_tflite(model, *data)
    message = str(info.value)
    assert "'recurrent' (GRU)" in message and "GRUCell" in message
    assert "fdi_keras.export.to_tflite(model, quantize='int8'" in message


@needs_extra
@pytest.mark.slow
def test_a_loss_tf_keras_lacks_is_named():
    x = keras.Input((4,))
    model = keras.Model(x, L.Dense(2, activation="sigmoid")(x))
    data = np.zeros((8, 4), "float32"), np.zeros((8, 2), "float32")
    with pytest.raises(ValueError, match="tf_keras cannot rebuild the loss or optimizer.*Dice"):
        qat.quantize_aware_tflite(model, *data, loss=keras.losses.Dice())


@needs_extra
@pytest.mark.slow
def test_the_example_goes_from_training_to_a_measured_int8_model(tmp_path):
    from fdi_keras import datasets

    if datasets.find("uci_har") is None:
        pytest.skip("uci_har.npz not found: set FDI_DATA or place it in ../shared/data")
    from examples import qat_int8

    results = qat_int8.run(dataset="har", epochs=1, max_train=600, out_dir=str(tmp_path))
    assert list(results) == ["fp32", "int8 PTQ", "int8 QAT"]
    assert all(0 < accuracy <= 1 and timing.min_ms > 0 for accuracy, timing in results.values())
    assert (tmp_path / "qat_int8.tflite").stat().st_size > 0
