"""Every call of every layer of a Keras model, nested models inlined: the graph fdi_keras reads.

Keras shows a layer's first call through `layer.input` / `layer.output`; a layer called twice
(a shared layer) has more. `keras.models.clone_model(..., call_function=...)` is the public way
to see each call with its actual tensors: `trace` runs the model's graph through it, keeping
the original layer objects, so it records one `Node` per call. A nested functional or
Sequential model (transfer learning: `base(inputs, training=False)`) is not a node: its own
graph is run in place on the caller's tensors (what tfmot's `collect_prunable_layers` does by
recursion), and a `training` argument given to the nested call is passed on to its layers.

The traced graph is itself a functional model (`ModelGraph.model`) over the same layer objects,
so it computes exactly what the input model computes; `ModelGraph.rebuild` makes a new model
node by node, which is how latency_aware, strip and slimming rewrite graphs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import weakref
from collections.abc import Callable

import keras


@dataclasses.dataclass(eq=False)
class Node:
    """One call of a layer: its input and output tensors (in the traced graph) and arguments.

    `name` is the layer's name for its first call and `name@k` for its k-th further call.
    """

    layer: keras.layers.Layer
    name: str
    args: tuple
    kwargs: dict
    outputs: list

    @property
    def inputs(self) -> list:
        """The node's input tensors, flattened in argument order."""
        return [t for t in keras.tree.flatten((self.args, self.kwargs)) if _is_tensor(t)]

    @property
    def output(self):
        """The node's (first) output tensor."""
        return self.outputs[0]

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {type(self.layer).__name__})"


def _is_tensor(x) -> bool:
    return isinstance(x, keras.KerasTensor)


def _accepts_training(layer) -> bool:
    accepted = _call_parameters(layer)
    return accepted is None or "training" in accepted


class ModelGraph:
    """The call graph of a model: nodes in topological order, producers and consumers.

    Build it with `trace(model)`.

    Attributes:
        model: a functional model over the same layer objects with nested models inlined.
        nodes: every call of every layer, in an order where producers come first.
        inputs, outputs: the traced model's input and output tensors (flat lists).
    """

    def __init__(self, model, nodes, input_structure, output_structure):
        self.model = model
        self.nodes: list[Node] = nodes
        self.input_structure = input_structure
        self.output_structure = output_structure
        self.inputs = keras.tree.flatten(input_structure)
        self.outputs = keras.tree.flatten(output_structure)
        self._producer = {id(t): n for n in nodes for t in n.outputs}
        self._consumers: dict[int, list[Node]] = {id(n): [] for n in nodes}
        self._by_layer: dict[int, list[Node]] = {}
        for n in nodes:
            self._by_layer.setdefault(id(n.layer), []).append(n)
            for t in n.inputs:
                if id(t) in self._producer:
                    users = self._consumers[id(self._producer[id(t)])]
                    if n not in users:
                        users.append(n)
        self._output_ids = {id(t) for t in self.outputs}

    def producer(self, tensor) -> Node | None:
        """The node that computes `tensor` (None for a model input)."""
        return self._producer.get(id(tensor))

    def consumers(self, node: Node) -> list[Node]:
        """The nodes that read `node`'s outputs (model outputs not included)."""
        return self._consumers[id(node)]

    def is_output(self, tensor) -> bool:
        return id(tensor) in self._output_ids

    def sole_consumer(self, node: Node) -> Node | None:
        """The one node reading `node`'s output, when it has one and is not a model output."""
        users = self._consumers[id(node)]
        if len(users) == 1 and not any(self.is_output(t) for t in node.outputs):
            return users[0]
        return None

    def calls(self, layer) -> list[Node]:
        """Every node of `layer` (more than one for a shared layer)."""
        return self._by_layer.get(id(layer), [])

    def is_shared(self, layer) -> bool:
        return len(self.calls(layer)) > 1

    @property
    def layers(self) -> list:
        """The distinct layers, in the order of their first call."""
        return [ns[0].layer for ns in self._by_layer.values()]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise ValueError(
            f"No call named {name!r} in model {self.model.name!r} (a shared layer's k-th "
            f"further call is named 'layer@k'). Received: name={name!r}"
        )

    def rebuild(self, transform: Callable, name: str | None = None) -> keras.Model:
        """A new model made node by node: `transform(node, new_inputs)` returns the new output
        tensor of that call (a structure when the layer returns several), or None when the
        node is absorbed by another (its output becomes its first input's new tensor).

        `new_inputs` are the node's input tensors in the new graph, in `node.inputs` order.
        Model inputs keep their names and structure (dicts stay dicts).
        """
        new_structure = keras.tree.map_structure(
            lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=_input_name(t)),
            self.input_structure,
        )
        tensors = {id(old): new for old, new in zip(self.inputs, keras.tree.flatten(new_structure))}
        for node in self.nodes:
            ins = [tensors[id(t)] for t in node.inputs]
            out = transform(node, ins)
            outs = [ins[0]] if out is None else keras.tree.flatten(out)
            for old, new in zip(node.outputs, outs):
                tensors[id(old)] = new
        outputs = keras.tree.map_structure(lambda t: tensors[id(t)], self.output_structure)
        return keras.Model(new_structure, outputs, name=name or self.model.name)


def call_with(node: Node, layer, new_inputs: list):
    """Calls `layer` with `node`'s arguments, its input tensors replaced by `new_inputs`.

    Keyword arguments that `layer.call` does not take are dropped (a wrapper replacing a GRU
    takes no `mask`), as are those that are None.
    """
    replacements = iter(new_inputs)
    args, kwargs = keras.tree.map_structure(
        lambda x: next(replacements) if _is_tensor(x) else x, (node.args, node.kwargs)
    )
    accepted = _call_parameters(layer)
    kwargs = {
        k: v for k, v in kwargs.items() if v is not None and (accepted is None or k in accepted)
    }
    return layer(*args, **kwargs)


def _call_parameters(layer) -> set | None:
    """The keyword arguments `layer.call` takes, or None when it takes any (**kwargs)."""
    try:
        params = inspect.signature(layer.call).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def clone_layer(layer, **config_overrides):
    """A new layer of `layer`'s class and config (updated by `config_overrides`), unbuilt;
    a Keras operation that is not a layer (`x + 3.0`) has no state and is returned as is."""
    if not isinstance(layer, keras.layers.Layer):
        return layer
    return type(layer).from_config({**layer.get_config(), **config_overrides})


def copy_weights(new, old) -> None:
    """Copies `old`'s weights into `new` (nothing for a weightless operation)."""
    if getattr(old, "weights", None):
        new.set_weights(old.get_weights())


def _input_name(tensor) -> str | None:
    name = getattr(tensor, "name", None)
    return name.split(":")[0] if isinstance(name, str) else None


@contextlib.contextmanager
def _seen_uncompiled(model: keras.Model):
    """`clone_model` compiles its clone when the model is compiled: a new optimizer with a
    slot variable per weight, which the trace (it keeps only the graph) throws away. During
    `fit`, where FastDeepIoT traces the model every epoch, that was most of the time a trace
    took; the model is shown to `clone_model` as uncompiled."""
    compiled = model.compiled
    model.compiled = False
    try:
        yield
    finally:
        model.compiled = compiled


def trace(model: keras.Model) -> ModelGraph:
    """The call graph of a built functional or Sequential model, nested models inlined.

    A model's graph is traced once and kept while the model lives (and its layers, nested
    ones included, stay the same objects): the graph reads only the model's structure, and
    FastDeepIoT's callback asks for it several times every epoch.

    Raises:
        TypeError: `model` is not a built functional or Sequential `keras.Model` (a subclassed
            model has no graph to read).

    Example:
        >>> graph = fdi_keras.graph.trace(model)
        >>> [(n.name, type(n.layer).__name__) for n in graph.nodes][:3]
    """
    if not isinstance(model, keras.Model) or getattr(model, "inputs", None) is None:
        raise TypeError(
            "fdi_keras needs a built functional or Sequential keras.Model (a subclassed model "
            "has no graph to read: build it with the functional API, or call it once on "
            f"keras.Input). Received: {type(model).__name__}"
        )
    layers = _layer_ids(model)
    cached = _TRACES.get(model)
    if cached is not None and cached[0] == layers:
        return cached[1]
    graph = _trace(model)
    _TRACES[model] = (layers, graph)
    return graph


# model -> (its layer ids, its graph); an entry goes with its model.
_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _layer_ids(model) -> tuple:
    """The ids of `model`'s layers, nested models' layers included, in order."""
    return tuple(
        (id(layer), _layer_ids(layer) if isinstance(layer, keras.Model) else ())
        for layer in model.layers
    )


def _trace(model: keras.Model) -> ModelGraph:
    """Traces `model` (see `trace`), uncached."""
    nodes: list[Node] = []
    counts: dict[int, int] = {}
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=_input_name(t)),
        model.inputs[0] if isinstance(model, keras.Sequential) else model.input,
    )

    def record(layer, args, kwargs, training):
        if training is not None and _accepts_training(layer):
            kwargs = {**kwargs, "training": training}
        outputs = layer(*args, **kwargs)
        k = counts.get(id(layer), 0)
        counts[id(layer)] = k + 1
        name = layer.name if k == 0 else f"{layer.name}@{k}"
        nodes.append(Node(layer, name, args, kwargs, keras.tree.flatten(outputs)))
        return outputs

    def run(submodel, tensors, training):
        def call(layer, *args, **kwargs):
            inner = kwargs.get("training", training)
            if isinstance(layer, keras.Model):
                return run(layer, args[0], inner)
            return record(layer, args, kwargs, training)

        if isinstance(submodel, keras.Sequential):
            x = tensors
            for layer in submodel.layers:
                x = call(layer, x)
            return x
        with _seen_uncompiled(submodel):
            clone = keras.models.clone_model(
                submodel,
                input_tensors=tensors,
                clone_function=lambda layer: layer,
                call_function=call,
            )
        return clone.output

    outputs = run(model, inputs, None)
    traced = keras.Model(inputs, outputs, name=model.name)
    return ModelGraph(traced, nodes, inputs, outputs)
