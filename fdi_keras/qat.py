"""Quantization-aware fine-tuning of a Keras 3 model into a full-int8 TFLite model.

Phones run int8. `fdi_keras.export.to_tflite(model, quantize="int8", representative_data=x)`
quantizes after training (post-training quantization, PTQ); this module fine-tunes with the
quantization simulated first (quantization-aware training, QAT), which can recover accuracy
that PTQ loses. Keras 3 has no QAT that converts to a full-integer graph; tensorflow-model-
optimization (tfmot) has one for tf_keras (Keras 2), installed with `pip install
fdi_keras[qat]`. Since TensorFlow binds `tf.keras` to one Keras when it is imported, the QAT
runs in a subprocess (`fdi_keras/qat_worker.py`) that rebuilds the model in tf_keras from a plain
description (`describe`: layer configs and calls as JSON, weights as arrays).

Example:
    flatbuffer = fdi_keras.qat.quantize_aware_tflite(
        model, x_train, y_train, epochs=1, path="model_int8.tflite")
    accuracy = (fdi_keras.qat.predict_tflite(flatbuffer, x_test).argmax(-1) == y_test).mean()
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import keras
import numpy as np

from fdi_keras.atomic import atomic_write_bytes
from fdi_keras.errors import UnsupportedLayerError

IO_DTYPES = ("float32", "int8", "uint8")
_RUN_WORKER = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
_EXTRA = ("tensorflow_model_optimization", "tf_keras")
_FALLBACK = (
    "Fallback: post-training int8 with fdi_keras.export.to_tflite(model, quantize='int8', "
    "representative_data=x[:200])."
)


def missing_extra() -> str | None:
    """None when the `qat` extra is installed, else the message saying how to install it."""
    missing = [m for m in _EXTRA if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (
        f"Quantization-aware training needs {' and '.join(missing)}, which are not installed. "
        "Install them with `pip install fdi_keras[qat]` (tensorflow-model-optimization and "
        "tf_keras matching your TensorFlow)."
    )


def _plain(value, where: str):
    """A Keras 3 serialized value with Keras 3's module names dropped, which tf_keras reads."""
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        module = value.get("module") or "keras"
        if value.get("registered_name") or not module.startswith("keras"):
            raise ValueError(f"{where} uses the custom object {value['class_name']}")
        if value["class_name"] == "DTypePolicy":
            return value["config"]["name"]
        return {"class_name": value["class_name"], "config": _plain(value["config"], where)}
    if isinstance(value, dict):
        return {k: _plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    return value


def _refs(arg) -> list:
    if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
        return [list(arg["config"]["keras_history"])]
    if isinstance(arg, (list, tuple)):
        return [r for a in arg for r in _refs(a)]
    raise ValueError(f"a call argument that is not a tensor: {arg!r}")


def _calls(nodes: list) -> list[dict]:
    calls = []
    for node in nodes:
        kwargs = {k: v for k, v in node["kwargs"].items() if v is not None and k != "training"}
        if len(node["args"]) != 1 or kwargs:
            raise ValueError(f"a call with arguments other than one input: {node!r}")
        arg = node["args"][0]
        calls.append({"inputs": _refs(arg), "list": isinstance(arg, (list, tuple))})
    return calls


def _layer_problem(entry: dict) -> str | None:
    if entry["class_name"] in ("Functional", "Sequential", "Model"):
        return "a nested model; build the model flat"
    if entry.get("registered_name") or not entry.get("module", "").startswith("keras.layers"):
        return "not a built-in Keras layer, so tf_keras has no equivalent"
    return None


def describe(model: keras.Model) -> tuple[dict, dict[str, np.ndarray]]:
    """The plain description of a Sequential or functional Keras 3 model that the worker
    rebuilds in tf_keras: a JSON-able spec (inputs, layers with their configs and calls,
    outputs) and the weights as arrays keyed "layer_index/weight_index".

    Raises:
        UnsupportedLayerError: naming every layer that cannot be described (custom or nested).
        TypeError: for a subclassed model, which has no layer graph to rebuild.
    """
    try:
        config = model.get_config() if isinstance(model, keras.Model) else {}
    except NotImplementedError:  # a subclassed model without get_config
        config = {}
    if not (isinstance(model, keras.Sequential) or "input_layers" in config):
        raise TypeError(
            "Quantization-aware training rebuilds Sequential and functional Keras models. "
            f"Received: model={type(model).__name__}"
        )
    entries = config["layers"]
    if isinstance(model, keras.Sequential):
        entries, outputs = _chain(model, entries)
    else:
        outputs = config["output_layers"]
        outputs = outputs if isinstance(outputs[0], list) else [outputs]
    spec = {"name": model.name, "inputs": [], "layers": [], "outputs": outputs}
    weights, problems = {}, []
    for entry in entries:
        name = entry["config"].get("name", entry.get("name"))
        if entry["class_name"] == "InputLayer":
            batch_shape = entry["config"]["batch_shape"]
            spec["inputs"].append(
                {"name": name, "shape": list(batch_shape[1:]), "dtype": entry["config"]["dtype"]}
            )
            continue
        why = _layer_problem(entry)
        try:
            layer_config = _plain(entry["config"], f"layer {name}") if why is None else None
            calls = _calls(entry["inbound_nodes"]) if why is None else None
        except ValueError as e:
            why = str(e)
        if why is not None:
            problems.append(f"{name!r} ({entry['class_name']}): {why}")
            continue
        index = len(spec["layers"])
        values = model.get_layer(name).get_weights()
        weights.update({f"{index}/{j}": w for j, w in enumerate(values)})
        spec["layers"].append(
            {
                "name": name,
                "class_name": entry["class_name"],
                "config": layer_config,
                "calls": calls,
                "num_weights": len(values),
            }
        )
    if problems:
        raise UnsupportedLayerError(_problems_message(model.name, "rebuild", problems))
    return spec, weights


def _chain(model: keras.Sequential, entries: list) -> tuple[list, list]:
    """A Sequential's layer entries, each called on the previous one's output."""
    if entries and entries[0]["class_name"] == "InputLayer":
        head, entries = entries[0], entries[1:]
    else:
        inputs = model.inputs[0]
        head = {
            "class_name": "InputLayer",
            "config": {
                "name": f"{model.name}_input",
                "batch_shape": [None, *inputs.shape[1:]],
                "dtype": str(inputs.dtype),
            },
        }
    chained = [dict(head, inbound_nodes=[])]
    previous = [head["config"]["name"], 0, 0]
    for entry in entries:
        tensor = {"class_name": "__keras_tensor__", "config": {"keras_history": previous}}
        chained.append(dict(entry, inbound_nodes=[{"args": [tensor], "kwargs": {}}]))
        previous = [entry["config"]["name"], 0, 0]
    return chained, [previous]


def _problems_message(model_name: str, stage: str, problems: list[str]) -> str:
    doing = {
        "rebuild": "rebuild in tf_keras",
        "quantize": "quantize with tfmot",
    }[stage]
    return (
        f"Quantization-aware training cannot {doing} {len(problems)} layer(s) of model "
        f"{model_name!r}: " + "; ".join(problems) + f". {_FALLBACK}"
    )


def _serialized(value, kind: str):
    if isinstance(value, str):
        return value
    if kind == "loss" and not isinstance(value, keras.losses.Loss) and callable(value):
        return value.__name__
    serialize = keras.losses.serialize if kind == "loss" else keras.optimizers.serialize
    try:
        return _plain(serialize(value), kind)
    except ValueError as e:
        raise ValueError(
            f"The {kind} cannot be passed to tf_keras: {e}. Received: {value!r}"
        ) from e


def _check_arguments(model, x, y, io_dtype, epochs) -> None:
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"io_dtype must be one of {IO_DTYPES}. Received: io_dtype={io_dtype!r}")
    if len(model.inputs) != 1:
        raise ValueError(
            "quantize_aware_tflite supports single-input models. "
            f"Received: a model with {len(model.inputs)} inputs"
        )
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"x and y must hold the same, non-zero number of samples. Received: {len(x)} "
            f"and {len(y)}"
        )
    if epochs < 1:
        # The quantizers learn their ranges while training; without it they keep tfmot's
        # initial ranges and the int8 model is useless.
        raise ValueError(f"epochs must be >= 1. Received: epochs={epochs}")


def _error(model_name: str, error: dict) -> Exception:
    if error["stage"] == "convert":
        message = error["message"]
        if len(message) > 1500:
            message = message[:1500] + " [...]"
        return ValueError(
            f"The quantization-aware fine-tuned {model_name!r} did not convert to a full-int8 "
            f"TFLite model: {message}. {_FALLBACK}"
        )
    if error["stage"] == "compile":
        return ValueError(
            f"tf_keras cannot rebuild the loss or optimizer: {error['layers'][0]['why']}. Pass "
            "a name ('adam', 'sparse_categorical_crossentropy') or a built-in Keras object."
        )
    problems = [f"{p['name']!r} ({p['class_name']}): {p['why']}" for p in error["layers"]]
    return UnsupportedLayerError(_problems_message(model_name, error["stage"], problems))


def _run_worker(work: str, verbose: int, timeout: float | None) -> dict:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The worker file runs on its own: importing the fdi_keras package would import Keras 3
    # (slow, and nothing it needs).
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qat_worker.py")
    process = subprocess.run(
        [sys.executable, "-c", _RUN_WORKER, worker, work],
        env=env,
        capture_output=not verbose,
        text=True,
        timeout=timeout,
    )
    result = os.path.join(work, "result.json")
    if process.returncode != 0 or not os.path.exists(result):
        tail = (process.stderr or "")[-3000:]
        raise RuntimeError(
            f"The quantization-aware training subprocess failed (exit {process.returncode})."
            + (f" Its stderr ends with:\n{tail}" if tail else " See its output above.")
        )
    with open(result) as f:
        return json.load(f)


def quantize_aware_tflite(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    loss="sparse_categorical_crossentropy",
    optimizer="adam",
    epochs: int = 1,
    batch_size: int = 32,
    io_dtype: str = "float32",
    representative_samples: int = 200,
    path: str | None = None,
    seed: int = 0,
    verbose: int = 0,
    timeout: float | None = None,
) -> bytes:
    """Fine-tunes `model` with simulated int8 quantization (tfmot's default 8-bit scheme) and
    converts it to a batch-1, full-int8 TFLite flatbuffer; `model` itself is not changed.

    Every weight and activation is int8 (weights per channel for Conv2D/DepthwiseConv2D) and
    every op an int8 kernel (`TFLITE_BUILTINS_INT8`). By default the input and output stay
    float32 (quantized and dequantized at the graph's edges), so the flatbuffer is a drop-in
    for `fdi_keras.export.to_tflite(model)` and its post-training
    `to_tflite(model, quantize="int8", representative_data=x)`, which it is compared with;
    `io_dtype="int8"` makes them int8 too (feed `round(x / scale + zero_point)`; see
    `predict_tflite`).

    Supported: Sequential and functional models of built-in layers that tfmot quantizes
    (Conv2D, DepthwiseConv2D, SeparableConv2D, Dense, BatchNormalization, ReLU/Activation,
    pooling, Add, Concatenate, Flatten, Dropout, Reshape...) and, added here, Conv1D,
    MaxPooling1D and a BatchNormalization that follows no Conv2D/Dense. Not: GRU/LSTM
    (tfmot does not quantize recurrent cells), custom layers, nested models.

    Args:
        model: a single-input Sequential or functional Keras 3 model (e.g. a stripped one).
        x, y: fine-tuning data; a seeded sample of `x` also calibrates the conversion.
        loss, optimizer: a name or a built-in Keras 3 loss/optimizer object (rebuilt in
            tf_keras from its config; a learning-rate schedule too).
        epochs, batch_size: of the fine-tuning (epochs >= 1: the quantizers learn their
            ranges while training).
        io_dtype: "float32" (default), "int8" or "uint8" for the model's input and output.
        representative_samples: how many samples of `x` calibrate the converter.
        path: optional output file, written atomically.
        seed: seeds tf_keras in the subprocess (initial quantizer ranges, shuffling).
        verbose: 0 silences the subprocess; 1 or 2 show its training log and TF messages.
        timeout: seconds before the subprocess is killed (subprocess.TimeoutExpired).

    Returns:
        The TFLite flatbuffer.

    Raises:
        ImportError: without the `qat` extra (`pip install fdi_keras[qat]`).
        UnsupportedLayerError: naming each layer that cannot be rebuilt or quantized, why,
            and the post-training fallback.
        ValueError: for bad arguments, or when the converter cannot produce a full-int8 graph.
        RuntimeError: when the subprocess itself fails (with the end of its stderr).
    """
    message = missing_extra()
    if message:
        raise ImportError(message)
    _check_arguments(model, x, y, io_dtype, epochs)
    spec, weights = describe(model)
    x = np.asarray(x, np.float32)
    rng = np.random.default_rng(seed)
    calibration = x[rng.choice(len(x), min(representative_samples, len(x)), replace=False)]
    options = {
        "loss": _serialized(loss, "loss"),
        "optimizer": _serialized(optimizer, "optimizer"),
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "io_dtype": io_dtype,
        "seed": int(seed),
        "verbose": int(verbose),
    }
    with tempfile.TemporaryDirectory(prefix="fdi_qat_") as work:
        np.savez(os.path.join(work, "weights.npz"), **weights)
        np.savez(os.path.join(work, "data.npz"), x=x, y=np.asarray(y), calibration=calibration)
        for name, value in (("spec", spec), ("options", options)):
            with open(os.path.join(work, f"{name}.json"), "w") as f:
                json.dump(value, f)
        result = _run_worker(work, verbose, timeout)
        if "error" in result:
            raise _error(model.name, result["error"])
        with open(os.path.join(work, "model.tflite"), "rb") as f:
            flatbuffer = f.read()
    if path is not None:
        atomic_write_bytes(path, flatbuffer)
    return flatbuffer


def predict_tflite(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    """Runs a single-input, single-output TFLite model on each sample of `x` (float), with
    int8/uint8 inputs quantized and outputs dequantized by the tensors' own scales.

    Example:
        accuracy = (predict_tflite(flatbuffer, x_test).argmax(-1) == y_test).mean()
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    results = []
    for sample in np.asarray(x, np.float32):
        value = sample[None]
        if np.issubdtype(inp["dtype"], np.integer):
            info = np.iinfo(inp["dtype"])
            value = np.clip(np.round(value / in_scale + in_zero), info.min, info.max)
        interpreter.set_tensor(inp["index"], value.astype(inp["dtype"]))
        interpreter.invoke()
        result = interpreter.get_tensor(out["index"])[0]
        if np.issubdtype(out["dtype"], np.integer):
            result = (result.astype(np.float32) - out_zero) * out_scale
        results.append(result)
    return np.stack(results).astype(np.float32)
