"""The subprocess side of `fdi_keras.qat`: rebuild in tf_keras, quantize with tfmot, fine-tune,
convert to a full-int8 TFLite flatbuffer.

Run by `fdi_keras.qat` as a file (`python -c "runpy.run_path(...)" qat_worker.py DIR`), so
that neither the fdi_keras package nor Keras 3 is imported, with TF_USE_LEGACY_KERAS=1 (read
when TensorFlow is imported: `tf.keras` is tf_keras here). Imports only NumPy, TensorFlow,
tf_keras and tfmot. Reads DIR/spec.json (the model's layers and calls, see
`fdi_keras.qat.describe`), DIR/weights.npz, DIR/data.npz and DIR/options.json; writes
DIR/model.tflite and DIR/result.json. Problems the caller can act on (a layer that cannot be
rebuilt or quantized, a loss or optimizer tf_keras cannot rebuild, a failed int8 conversion)
go to result.json as data; anything else is a traceback on stderr and a non-zero exit.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time

import numpy as np

# Arguments every tf_keras layer takes through **kwargs.
_BASE_KWARGS = {
    "name", "trainable", "dtype", "dynamic", "input_dim", "input_shape", "batch_input_shape",
    "batch_size", "weights", "activity_regularizer", "autocast",
}  # fmt: skip
# Keras 3 config values that mean "off" may be dropped when tf_keras has no such argument.
_NEUTRAL = (None, False, 0, 0.0, [], {})
# Layers that fold into the preceding one when tfmot's layout transforms run.
_FOLDS_INTO = {"Conv2D", "DepthwiseConv2D", "Dense"}
# Appended to every rebuilt layer's name: tfmot's transforms create layers with tf_keras's
# automatic names ("depthwise_conv2d"), which must not collide with the model's own (Keras 3
# names its layers the same way), or the transformer wires the graph wrongly.
_SUFFIX = "_tfk"
# Layers that tfmot's layout transforms rewrite into supported ones (DepthwiseConv2D + Conv2D).
_TRANSFORMED = {"SeparableConv1D", "SeparableConv2D"}


class Problems(Exception):
    """Layers the worker cannot handle: [{"name", "class_name", "why"}], and at which stage."""

    def __init__(self, stage: str, layers: list[dict]):
        super().__init__(stage)
        self.stage, self.layers = stage, layers


def _original(name: str) -> str:
    return name.removesuffix(_SUFFIX)


def _accepted_config(cls, config: dict) -> dict:
    """`config` restricted to the arguments `cls` takes; a dropped argument must be neutral."""
    params = set(_BASE_KWARGS)
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            params |= set(inspect.signature(vars(klass)["__init__"]).parameters)
    kept = {}
    for key, value in config.items():
        if key.endswith("_initializer"):
            continue  # the weights are set afterwards; Keras 3 initializers take other arguments
        if key in params:
            kept[key] = value
        elif value not in _NEUTRAL:
            raise ValueError(f"argument {key}={value!r} has no tf_keras equivalent")
    return kept


def _refs(spec: dict):
    """Every tensor reference [layer, node, tensor] of the spec's calls and outputs."""
    for entry in spec["layers"]:
        for call in entry["calls"]:
            yield from call["inputs"]
    yield from spec["outputs"]


def _batchnorm_into(conv: dict, values: list, bn: dict, bn_values: list):
    config, bn_values = bn["config"], list(bn_values)
    if config.get("axis") not in (-1, 2, [-1], [2]):
        return None
    gamma = bn_values.pop(0) if config.get("scale", True) else 1.0
    beta = bn_values.pop(0) if config.get("center", True) else 0.0
    mean, variance = bn_values
    scale = gamma / np.sqrt(variance + config.get("epsilon", 1e-3))
    kernel = values[0] * scale
    bias = values[1] if conv["config"].get("use_bias", True) else 0.0
    conv = dict(conv, config=dict(conv["config"], use_bias=True), num_weights=2)
    return conv, [kernel, ((bias - mean) * scale + beta).astype(kernel.dtype)]


def _relu_into(conv: dict, values: list, relu: dict, relu_values: list):
    config = relu["config"]
    plain = relu["class_name"] == "ReLU" and not (
        config.get("max_value") or config.get("negative_slope") or config.get("threshold")
    )
    if not (plain or (relu["class_name"] == "Activation" and config["activation"] == "relu")):
        return None
    return dict(conv, config=dict(conv["config"], activation="relu")), values


def _absorb(spec: dict, weights: list[list], kinds: set, merge) -> tuple[dict, list[list]]:
    """The spec with each layer of `kinds` that alone consumes a linear Conv1D merged into it
    by `merge(conv, conv_weights, layer, layer_weights)` (None: keep the layer)."""
    uses = {}
    for ref in _refs(spec):
        uses[ref[0]] = uses.get(ref[0], 0) + 1
    layers, values, renamed = [], [], {}
    for entry, entry_values in zip(spec["layers"], weights):
        calls = entry["calls"]
        source = calls[0]["inputs"] if len(calls) == 1 else []
        at = next((i for i, e in enumerate(layers) if source and e["name"] == source[0][0]), None)
        merged = None
        if entry["class_name"] in kinds and len(source) == 1 and at is not None:
            conv = layers[at]
            if (
                conv["class_name"] == "Conv1D"
                and conv["config"].get("activation", "linear") == "linear"
                and len(conv["calls"]) == 1
                and uses[conv["name"]] == 1
            ):
                merged = merge(conv, values[at], entry, entry_values)
        if merged is None:
            layers.append(entry)
            values.append(entry_values)
        else:
            layers[at], values[at] = merged
            renamed[entry["name"]] = layers[at]["name"]
    rename = lambda ref: [renamed.get(ref[0], ref[0]), *ref[1:]]  # noqa: E731
    for entry in layers:
        for call in entry["calls"]:
            call["inputs"] = [rename(r) for r in call["inputs"]]
    return dict(spec, layers=layers, outputs=[rename(r) for r in spec["outputs"]]), values


def fold_into_conv1d(spec: dict, weights: list[list]) -> tuple[dict, list[list]]:
    """The spec and weights with each BatchNormalization, then each ReLU, that follows a Conv1D
    merged into it, as the converter merges them after post-training quantization. tfmot does
    so only for Conv2D/DepthwiseConv2D/Dense; left apart, each costs int8 MUL/ADD or RELU ops
    (and RESHAPEs around them, Conv1D being a CONV_2D between two RESHAPEs)."""
    spec, weights = _absorb(spec, weights, {"BatchNormalization"}, _batchnorm_into)
    return _absorb(spec, weights, {"ReLU", "Activation"}, _relu_into)


def build(spec: dict, weights: list[list], batch_size: int | None):
    """The tf_keras functional model of `spec`, with its weights (one list per layer)."""
    import tensorflow as tf
    import tf_keras

    tensors = {
        (i["name"], 0, 0): tf_keras.Input(
            i["shape"], batch_size=batch_size, dtype=i["dtype"], name=i["name"] + _SUFFIX
        )
        for i in spec["inputs"]
    }
    layers, problems = {}, []
    for entry in spec["layers"]:
        cls = getattr(tf_keras.layers, entry["class_name"], None)
        name = entry["config"].get("name", entry["name"])
        why = None if cls is not None else "tf_keras.layers has no class of this name"
        if why is None:
            try:
                config = _accepted_config(cls, dict(entry["config"], name=name + _SUFFIX))
                layers[name] = cls.from_config(config)
            except (TypeError, ValueError) as e:
                reason = str(e).strip().splitlines()[-1].removeprefix("Exception encountered: ")
                why = f"tf_keras cannot build it from its Keras 3 config: {reason}"
        if why is not None:
            problems.append({"name": name, "class_name": entry["class_name"], "why": why})
            continue
        for n, call in enumerate(entry["calls"]):
            refs = [tuple(r) for r in call["inputs"]]
            if not all(r in tensors for r in refs):
                continue  # downstream of a layer that already failed
            args = [tensors[r] for r in refs]
            out = layers[name](args if call["list"] else args[0])
            for t, tensor in enumerate(tf.nest.flatten(out)):
                tensors[(name, n, t)] = tensor
    if problems:
        raise Problems("rebuild", problems)
    inputs = [tensors[(i["name"], 0, 0)] for i in spec["inputs"]]
    outputs = [tensors[tuple(r)] for r in spec["outputs"]]
    model = tf_keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=spec["name"])
    for index, entry in enumerate(spec["layers"]):
        layer = layers[entry["config"].get("name", entry["name"])]
        try:
            layer.set_weights(weights[index])
        except ValueError as e:
            why = f"its Keras 3 weights do not fit the tf_keras layer: {e}"
            problems.append(
                {"name": _original(layer.name), "class_name": entry["class_name"], "why": why}
            )
    if problems:
        raise Problems("rebuild", problems)
    return model


def _extra_configs():
    """QuantizeConfigs for standard layers that tfmot's default 8-bit registry leaves out but
    that convert to int8 kernels: Conv1D (lowered to CONV_2D), MaxPooling1D (range-preserving),
    and a BatchNormalization that no preceding layer absorbs (quantized at its output)."""
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs as configs,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry,
    )

    return {
        "Conv1D": lambda: registry.Default8BitQuantizeConfig(["kernel"], ["activation"], False),
        "MaxPooling1D": configs.NoOpQuantizeConfig,
        "BatchNormalization": configs.Default8BitOutputQuantizeConfig,
    }, (registry.Default8BitQuantizeConfig, configs.NoOpQuantizeConfig,
        configs.Default8BitOutputQuantizeConfig)  # fmt: skip


def _folds(spec: dict, name: str) -> bool:
    """Whether the BatchNormalization `name` follows a layer tfmot's transforms fold it into."""
    entries = {e["config"].get("name", e["name"]): e for e in spec["layers"]}
    calls = entries[name]["calls"]
    if len(calls) != 1 or len(calls[0]["inputs"]) != 1:
        return False
    producer = entries.get(calls[0]["inputs"][0][0])
    return (
        producer is not None
        and producer["class_name"] in _FOLDS_INTO
        and producer["config"].get("activation", "linear") == "linear"
    )


def quantize(model, spec: dict):
    """tfmot's quantization-aware model of `model` (default 8-bit scheme plus `_extra_configs`)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry_module,
    )

    qk = tfmot.quantization.keras
    registry = registry_module.Default8BitQuantizeRegistry()
    extras, config_classes = _extra_configs()
    problems = []

    def annotate(layer):
        kind, name = layer.__class__.__name__, _original(layer.name)
        if (
            registry.supports(layer)
            or kind in _TRANSFORMED
            or (kind == "BatchNormalization" and _folds(spec, name))
        ):
            return qk.quantize_annotate_layer(layer)
        if kind in extras:
            return qk.quantize_annotate_layer(layer, extras[kind]())
        if kind in ("GRU", "LSTM", "SimpleRNN", "RNN"):
            cells = getattr(layer.cell, "cells", [layer.cell])
            why = (
                "tfmot's default 8-bit scheme does not quantize recurrent cells "
                f"({', '.join(c.__class__.__name__ for c in cells)})"
            )
        else:
            why = "tfmot's default 8-bit scheme has no quantization for this layer class"
        problems.append({"name": name, "class_name": kind, "why": why})
        return layer

    annotated = tf_keras.models.clone_model(model, clone_function=annotate)
    if problems:
        raise Problems("quantize", problems)
    scope = {c.__name__: c for c in config_classes}
    with qk.quantize_scope(scope):
        try:
            return qk.quantize_apply(annotated)
        except (RuntimeError, ValueError) as e:
            why = str(e).replace(_SUFFIX, "")
            raise Problems("quantize", [{"name": "?", "class_name": "?", "why": why}]) from e


def _get(module, identifier):
    """A tf_keras loss or optimizer from a name or a {"class_name", "config"} dict."""
    if isinstance(identifier, dict):
        cls = getattr(module, identifier["class_name"], None)
        if cls is None:
            raise ValueError(f"{module.__name__} has no {identifier['class_name']}")
        config = dict(identifier["config"])
        if isinstance(config.get("learning_rate"), dict):
            schedule = config["learning_rate"]
            config["learning_rate"] = module.schedules.deserialize(schedule)
        return cls(**_accepted_config(cls, config))
    return module.get(identifier)


def compile_arguments(options: dict) -> tuple:
    """The tf_keras optimizer and loss of `options`."""
    import tf_keras

    try:
        optimizer = _get(tf_keras.optimizers, options["optimizer"])
        return optimizer, _get(tf_keras.losses, options["loss"])
    except (TypeError, ValueError) as e:
        raise Problems("compile", [{"name": "?", "class_name": "?", "why": str(e)}]) from e


def finetune(qmodel, data, options: dict, optimizer, loss):
    qmodel.compile(optimizer=optimizer, loss=loss)
    history = qmodel.fit(
        data["x"],
        data["y"],
        epochs=options["epochs"],
        batch_size=options["batch_size"],
        verbose=options["verbose"],
        shuffle=True,
    )
    return {k: [float(v) for v in vs] for k, vs in history.history.items()}


def convert(qmodel, spec: dict, weights, data, options: dict) -> bytes:
    """The batch-1 full-int8 flatbuffer of the fine-tuned `qmodel`."""
    import tensorflow as tf

    # Rebuilt with a static batch of 1, like fdi_keras.export.to_tflite (GRU/LSTM need it).
    fixed = quantize(build(spec, weights, batch_size=1), spec)
    fixed.set_weights(qmodel.get_weights())
    converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in data["calibration"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if options["io_dtype"] != "float32":
        converter.inference_input_type = tf.as_dtype(options["io_dtype"])
        converter.inference_output_type = tf.as_dtype(options["io_dtype"])
    return converter.convert()


def run(work: str) -> dict:
    import tf_keras

    start = time.time()
    with open(os.path.join(work, "spec.json")) as f:
        spec = json.load(f)
    with open(os.path.join(work, "options.json")) as f:
        options = json.load(f)
    arrays = np.load(os.path.join(work, "weights.npz"))
    weights = [
        [arrays[f"{i}/{j}"] for j in range(e["num_weights"])] for i, e in enumerate(spec["layers"])
    ]
    spec, weights = fold_into_conv1d(spec, weights)
    data = dict(np.load(os.path.join(work, "data.npz")))
    tf_keras.utils.set_random_seed(options["seed"])
    try:
        optimizer, loss = compile_arguments(options)
        qmodel = quantize(build(spec, weights, batch_size=None), spec)
    except Problems as p:
        return {"error": {"stage": p.stage, "layers": p.layers}}
    history = finetune(qmodel, data, options, optimizer, loss)
    try:
        flatbuffer = convert(qmodel, spec, weights, data, options)
    except Exception as e:  # the converter raises several types (ConverterError, RuntimeError...)
        return {"error": {"stage": "convert", "message": f"{type(e).__name__}: {e}"}}
    with open(os.path.join(work, "model.tflite"), "wb") as f:
        f.write(flatbuffer)
    return {"history": history, "seconds": time.time() - start}


def main(argv: list[str]) -> int:
    result = run(argv[-1])
    with open(os.path.join(argv[-1], "result.json"), "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
