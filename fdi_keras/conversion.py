"""Keras model -> TFLite flatbuffer (batch 1), as the profiler and `fdi_keras.export` need it."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from fdi_keras.atomic import atomic_write_bytes
from fdi_keras.errors import UnsupportedLayerError
from fdi_keras.graph import trace

QUANTIZE_MODES = (None, "float16", "int8")
IO_DTYPES = ("float32", "int8")
# A timing tree's kernel dtype -> the `quantize` mode that converts a model to run it.
QUANTIZE_FOR_DTYPE = {"float32": None, "float16": "float16", "int8": "int8"}


def with_batch_one(model: keras.Model) -> keras.Model:
    """The same model (same weights) with every input's batch fixed to 1.

    LiteRT runs GRU/LSTM only when the batch is static (they become WHILE loops); a fixed batch
    also lets the converter fold every shape. Sequential and functional models only.
    """
    if all(t.shape[0] == 1 for t in model.inputs):
        return model
    # The same nesting as the model's: one tensor, a list of one (`keras.Model([x], y)`), a
    # dict. A Sequential model has one input, and no `model.input` until it is called.
    nesting = model.inputs[0] if isinstance(model, keras.Sequential) else model.input
    inputs = [
        keras.Input(t.shape[1:], batch_size=1, dtype=t.dtype, name=t.name.split(":")[0])
        for t in keras.tree.flatten(nesting)
    ]
    input_tensors = keras.tree.pack_sequence_as(nesting, inputs)
    clone = keras.models.clone_model(model, input_tensors=input_tensors)
    clone.set_weights(model.get_weights())
    return clone


def with_input_shape(model: keras.Model, shape: tuple) -> keras.Model:
    """The same single-input model (same weights) built for inputs of `shape` (no batch axis),
    e.g. a CIFAR-trained convolutional net at 224x224 to time it at ImageNet resolution."""
    config = model.get_config()
    config["layers"][0]["config"]["batch_shape"] = (None, *shape)
    resized = model.__class__.from_config(config)
    resized.set_weights(model.get_weights())
    return resized


def _representative(model: keras.Model, data: Iterable | None) -> Callable:
    if data is not None:
        return lambda: ([np.asarray(x, np.float32)[None]] for x in data)
    rng = np.random.default_rng(0)
    shapes = [tuple(t.shape) for t in model.inputs]
    return lambda: ([rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(8))


def _refuse_recurrent_int8(model) -> None:
    """TF 2.21's int8 calibrator crashes the process (SIGSEGV) on a GRU/LSTM's WHILE loop."""
    for node in trace(model).nodes:
        if isinstance(node.layer, (keras.layers.GRU, keras.layers.LSTM)):
            raise UnsupportedLayerError(
                f"Layer {node.name!r} of class {type(node.layer).__name__}: post-training "
                "int8 quantization of recurrent layers crashes TensorFlow's calibrator "
                "(segmentation fault in TF 2.21). Use quantize=None or 'float16' for this model."
            )


def to_tflite(
    model: keras.Model,
    path: str | None = None,
    quantize: str | None = None,
    representative_data: Iterable | None = None,
    io_dtype: str = "float32",
) -> bytes:
    """Converts a Keras model to a batch-1 TFLite flatbuffer; writes it to `path` if given.

    Args:
        model: a Sequential or functional Keras 3 model.
        path: optional output file (written atomically).
        quantize: None (float32), "float16" (weights), or "int8" (full post-training
            quantization with float input/output).
        representative_data: input samples (without batch axis) for int8 calibration; random
            normal inputs when omitted, which is fine for timing but not for accuracy.
        io_dtype: "float32" (default) or, with quantize="int8", "int8": the model takes and
            returns int8 tensors, without the QUANTIZE and DEQUANTIZE kernels at its ends (what
            a layer inside an int8 model exchanges with its neighbours; the profiler times
            int8 kernels so).

    Returns:
        The TFLite flatbuffer.
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"quantize must be one of {QUANTIZE_MODES}. Received: quantize={quantize!r}"
        )
    if io_dtype not in IO_DTYPES or (io_dtype != "float32" and quantize != "int8"):
        raise ValueError(
            f"io_dtype must be one of {IO_DTYPES}, and 'int8' needs quantize='int8'. "
            f"Received: io_dtype={io_dtype!r}, quantize={quantize!r}"
        )
    if quantize == "int8":
        _refuse_recurrent_int8(model)
    model = with_batch_one(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(model, representative_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype == "int8":
            converter.inference_input_type = converter.inference_output_type = tf.int8
    flatbuffer = converter.convert()
    if path is not None:
        atomic_write_bytes(path, flatbuffer)
    return flatbuffer
