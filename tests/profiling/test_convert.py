"""The profiler times exactly the kernel a layer runs inside a model, in the spec's dtype."""

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from fdi_keras.conversion import to_tflite
from fdi_keras.profiling.convert import convert_spec
from fdi_keras.specs import LayerSpec

CONV = dict(h=12, w=12, cin=16, cout=24, kh=3, kw=3, sh=1, sw=1)


def ops_and_input(flatbuffer):
    interpreter = Interpreter(model_content=flatbuffer)
    ops = [d["op_name"] for d in interpreter._get_ops_details() if d["op_name"] != "DELEGATE"]
    return ops, [d["dtype"] for d in interpreter.get_input_details()]


@pytest.mark.parametrize(
    "spec, op",
    [
        (LayerSpec("conv2d", CONV, dtype="int8"), "CONV_2D"),
        (LayerSpec("add", dict(h=8, w=8, c=16), dtype="int8"), "ADD"),
        (LayerSpec("squared_difference", dict(h=8, w=8, c=16), dtype="int8"), "SQUARED_DIFFERENCE"),
        (LayerSpec("squared_difference", dict(h=8, w=8, c=16)), "SQUARED_DIFFERENCE"),
        (LayerSpec("conv2d", CONV), "CONV_2D"),
    ],
)
def test_a_kernel_is_timed_without_quantize_or_dequantize_around_it(spec, op):
    # With float input and output an int8 kernel ran between a QUANTIZE and a DEQUANTIZE,
    # which inside an int8 model it never does; the profile charged them to every kernel.
    ops, inputs = ops_and_input(convert_spec(spec))
    assert ops == [op]
    expected = np.int8 if spec.dtype == "int8" else np.float32
    assert inputs and all(dtype == expected for dtype in inputs)


def test_int8_io_needs_int8_quantization():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="io_dtype"):
        to_tflite(model, io_dtype="int8")
    with pytest.raises(ValueError, match="io_dtype"):
        to_tflite(model, quantize="int8", io_dtype="uint16")


def test_conversion_prints_nothing(capfd):
    # The int8 converter prints a line per model from C++, past contextlib.redirect_stderr.
    convert_spec(LayerSpec("conv2d", CONV, dtype="int8"))
    printed = capfd.readouterr()
    assert "fully_quantize" not in printed.out + printed.err
