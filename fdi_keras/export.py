"""TFLite export and on-device latency measurement (the measured side of every prediction)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from fdi_keras.atomic import atomic_write_bytes
from fdi_keras.profiling.timer import Timing, time_models

QUANTIZE_MODES = (None, "float16", "int8")


def with_batch_one(model: keras.Model) -> keras.Model:
    """The same model (same weights) with every input's batch fixed to 1.

    LiteRT runs GRU/LSTM only when the batch is static (they become WHILE loops); a fixed batch
    also lets the converter fold every shape. Sequential and functional models only.
    """
    if all(t.shape[0] == 1 for t in model.inputs):
        return model
    inputs = [
        keras.Input(t.shape[1:], batch_size=1, dtype=t.dtype, name=t.name.split(":")[0])
        for t in model.inputs
    ]
    clone = keras.models.clone_model(model, input_tensors=inputs if len(inputs) > 1 else inputs[0])
    clone.set_weights(model.get_weights())
    return clone


def _representative(model: keras.Model, data: Iterable | None) -> Callable:
    if data is not None:
        return lambda: ([np.asarray(x, np.float32)[None]] for x in data)
    rng = np.random.default_rng(0)
    shapes = [tuple(t.shape) for t in model.inputs]
    return lambda: ([rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(8))


def to_tflite(
    model: keras.Model,
    path: str | None = None,
    quantize: str | None = None,
    representative_data: Iterable | None = None,
) -> bytes:
    """Converts a Keras model to a batch-1 TFLite flatbuffer; writes it to `path` if given.

    Args:
        model: a Sequential or functional Keras 3 model.
        path: optional output file (written atomically).
        quantize: None (float32), "float16" (weights), or "int8" (full post-training
            quantization with float input/output).
        representative_data: input samples (without batch axis) for int8 calibration; random
            normal inputs when omitted, which is fine for timing but not for accuracy.

    Returns:
        The TFLite flatbuffer.
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"quantize must be one of {QUANTIZE_MODES}. Received: quantize={quantize!r}"
        )
    model = with_batch_one(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(model, representative_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    flatbuffer = converter.convert()
    if path is not None:
        atomic_write_bytes(path, flatbuffer)
    return flatbuffer


def _load(model: bytes | str) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    with open(model, "rb") as f:
        return f.read()


def measure_latency(
    tflite: bytes | str | list, backend: str = "local", threads: int = 1, **protocol
) -> Timing | list[Timing]:
    """Measures TFLite model(s) with the profiler's protocol: `.median_ms` with its `.spread`,
    and `.min_ms`, the uncontended time that timing trees are fitted on and predict.

    Args:
        tflite: a flatbuffer, a path, or a list of them (timed side by side, interleaved).
        backend: only "local" (this machine, LiteRT) is measured here; remote devices are
            profiled with `tools/profile_device.py`.
        threads: interpreter threads.
        **protocol: passed to `fdi_keras.profiling.timer.time_models` (rounds, max_spread...).
    """
    if backend != "local":
        raise ValueError(
            f"measure_latency supports backend='local'. Received: backend={backend!r}. "
            "Use tools/profile_device.py --backend=adb|ssh to time models on remote devices."
        )
    many = isinstance(tflite, list)
    timings = time_models([_load(m) for m in (tflite if many else [tflite])], threads, **protocol)
    return timings if many else timings[0]
