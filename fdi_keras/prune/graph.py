"""Rebuild a functional/Sequential Keras graph layer by layer, letting a callback replace layers.

`keras.models.clone_model` maps one layer to one layer; merging a Conv+BN+ReLU chain into one
wrapper (and expanding it back) needs a rebuild at the tensor level, which is this module.
"""

from __future__ import annotations

from collections.abc import Callable

import keras


def layer_inputs(layer) -> list:
    return list(layer.input) if isinstance(layer.input, (list, tuple)) else [layer.input]


def consumers(model: keras.Model) -> dict[int, list]:
    """Layers consuming each layer's output, by id(layer) (model outputs not included)."""
    producer = {id(layer.output): layer for layer in model.layers}
    users: dict[int, list] = {id(layer): [] for layer in model.layers}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for t in layer_inputs(layer):
            if id(t) in producer:
                users[id(producer[id(t)])].append(layer)
    return users


def check_rebuildable(model) -> None:
    if not isinstance(model, keras.Model) or getattr(model, "inputs", None) is None:
        raise TypeError(
            "Expected a built functional or Sequential keras.Model (shared layers "
            f"are not supported). Received: {type(model).__name__}"
        )


def rebuild(model: keras.Model, transform: Callable, name: str | None = None) -> keras.Model:
    """A new model whose layers are `transform(layer, new_inputs) -> new output tensor`.

    `transform` returns None to skip a layer that another layer absorbed: its output maps to
    its (single) input's new tensor.
    """
    check_rebuildable(model)
    new_inputs = [
        keras.Input(t.shape[1:], batch_size=t.shape[0], dtype=t.dtype) for t in model.inputs
    ]
    tensors = {id(old): new for old, new in zip(model.inputs, new_inputs)}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        ins = [tensors[id(t)] for t in layer_inputs(layer)]
        out = transform(layer, ins)
        tensors[id(layer.output)] = ins[0] if out is None else out
    outputs = [tensors[id(t)] for t in model.outputs]
    return keras.Model(
        new_inputs if len(new_inputs) > 1 else new_inputs[0],
        outputs if len(outputs) > 1 else outputs[0],
        name=name or model.name,
    )
