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


_MEMORY_PROBE = r"""
import json, resource, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter

def status(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024.0

before = status("VmRSS")
try:  # reset the peak so that the imports' own peak does not count (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
interpreter = Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[2]))
interpreter.allocate_tensors()
for d in interpreter.get_input_details():
    interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
for _ in range(int(sys.argv[3])):
    interpreter.invoke()
peak = status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"peak_mb": peak - before, "baseline_mb": before}))
"""


def measure_memory(tflite: bytes | str, threads: int = 1, invokes: int = 3) -> float:
    """Peak resident memory (MB) that loading and running the model adds to a fresh process:
    the interpreter's weights, packed kernels and tensor arena, above the Python runtime.

    Runs in a subprocess so that nothing else this process holds is counted.
    """
    import json
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as f:
        f.write(_load(tflite))
    try:
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, f.name, str(threads), str(invokes)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        os.unlink(f.name)
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]
