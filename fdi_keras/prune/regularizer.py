"""LatencyRegularizer: the timing tree as a differentiable penalty on expected alive channels.

Within the leaf a kernel currently falls in, its time is linear in FLOPs, bytes and parameter
bytes, which are (bi)linear in its input and output channel counts. Linearizing at the current
structure, each gate group's channels cost `dt/dchannel` microseconds (its own kernels' output
side plus its consumers' input side), and the penalty added to the loss is

    strength * sum_g (dt/dchannel_g / t_total) * E[alive channels of g]

so `strength` is the loss charged for the whole model's predicted latency (scale-free across
devices). A gated DepthwiseConv2D's channels are its multipliers: one costs its C input
channels' worth of its kernel and of its consumers' inputs. The leaf coefficients are re-read at
every call to `update`, i.e. every epoch.
"""

from __future__ import annotations

import functools
import weakref
from typing import NamedTuple

import keras
import numpy as np

from fdi_keras.features import compute_features, weight_bytes
from fdi_keras.graph import ModelGraph, trace
from fdi_keras.kernels import model_kernels
from fdi_keras.latency import LatencyReport, predict_latency
from fdi_keras.prune.strip import propagate_keep, strip
from fdi_keras.prune.structure import channel_kind, channel_owners
from fdi_keras.prune.wrapper import LatencyAware
from fdi_keras.specs import LayerSpec
from fdi_keras.timing.leaf import design_matrix
from fdi_keras.timing.tree import TimingTree

L = keras.layers
# Which dims of a kernel are channel counts, and which side sets them: the input's channels,
# the output's, the output's elements (channels x positions: the kernels an activation adds,
# such as a swish's sigmoid and multiply, which follow their layer's output), or the gates of
# a DepthwiseConv2D's multiplier.
CHANNEL_DIMS = {
    "activation": {"n": "out_elements"},
    "conv2d": {"cin": "in", "cout": "out"},
    "dense": {"cin": "in", "cout": "out"},
    "depthwise_conv2d": {"cin": "in", "mult": "mult"},
    "pool2d": {"c": "in"},
    "global_pool": {"c": "in"},
    "add": {"c": "out"},  # an element-wise op's output has its inputs' channels
    "concat": {"c": "out"},
    "pad": {"c": "in"},
    "lrn": {"c": "in"},
    "gru": {"cin": "in", "units": "out"},
    "lstm": {"cin": "in", "units": "out"},
}


def wrappers(model) -> list[LatencyAware]:
    return [layer for layer in model.layers if isinstance(layer, LatencyAware)]


def _groups(graph: ModelGraph):
    return channel_owners(
        graph, lambda node: node.layer.name if isinstance(node.layer, LatencyAware) else None
    )[1]


def gate_groups(model, groups=None) -> dict[str, list[LatencyAware]]:
    """Wrappers of each gate group, by group root (a wrapper alone is its own group);
    `groups`: the model's groups when the caller has them already."""
    groups = _groups(trace(model)) if groups is None else groups
    out: dict[str, list] = {}
    for w in wrappers(model):
        out.setdefault(groups.find(w.name), []).append(w)
    return out


class Dependency(NamedTuple):
    """A kernel dim that moves with a gate group: dim = offset + slope * alive channels."""

    dim: str
    root: str
    slope: float
    offset: float

    def value(self, width: int) -> int:
        return int(round(self.offset + self.slope * width))


def channel_slopes(graph: ModelGraph, groups) -> dict[int, dict[str, float]]:
    """For every tensor (by id), d(its channels) / d(alive channels of gate group g) at
    the current structure, by group root (`groups`: the graph's); groups that cannot change
    are left out.

    Channels pass through unchanged (slope 1), are tiled by Flatten (x positions) and by a
    DepthwiseConv2D (x multipliers; a gated one's C * M channels also move with its multiplier
    gates, x C), and add up in a Concatenate.
    """
    node_in, _, _ = propagate_keep(graph)
    slopes = {id(t): {} for t in graph.inputs}
    for node in graph.nodes:
        layer, kind = node.layer, channel_kind(node)
        ins = [slopes[id(t)] for t in node.inputs]
        if isinstance(layer, LatencyAware):
            root = groups.find(layer.name)
            own = {} if groups.is_fixed(root) else {root: 1.0}
            if isinstance(layer.layer, L.DepthwiseConv2D):  # C * M channels
                alive_in = float(node_in[id(node)][0].sum())
                out = _add(_scaled(ins[0], float(layer.mask().sum())), _scaled(own, alive_in))
            else:
                out = own
        elif kind == "depthwise":
            out = _scaled(ins[0], layer.depth_multiplier)
        elif kind == "flatten":
            out = _scaled(ins[0], int(np.prod(node.inputs[0].shape[1:-1])))
        elif kind in ("pass", "merge"):
            out = ins[0]  # an element-wise merge's inputs are one group (or fixed)
        elif kind == "concat":
            out = functools.reduce(_add, ins, {})
        else:
            out = {}
        for t in node.outputs:
            slopes[id(t)] = out
    return slopes


def _scaled(slopes: dict, factor: float) -> dict:
    return {root: factor * v for root, v in slopes.items()}


def _add(a: dict, b: dict) -> dict:
    return {root: a.get(root, 0.0) + b.get(root, 0.0) for root in {**a, **b}}


def _stripped_names(node) -> list[str]:
    """The names `node`'s layers have in `strip(model)`: a wrapper becomes its layer, then the
    BatchNormalization and activation it holds."""
    layer = node.layer
    if isinstance(layer, LatencyAware):
        suffix = node.name[len(layer.name) :]
        held = (layer.layer, layer.norm, layer.activation_layer)
        return [sub.name + suffix for sub in held if sub is not None]
    return [node.name]


def channel_dependencies(model, tree: TimingTree | None = None):
    """The kernels of `strip(model)` with the gate groups their channel dims depend on; with
    a `tree`, in the numeric type and thread count it was profiled with (`tree.profiled`),
    which is how every prediction on them must see them.

    Returns ([(spec, [Dependency])], {root: wrappers}); a dependency's slope is
    d(dim) / d(alive channels of the group) at the current structure (`channel_slopes`), e.g.
    Flatten -> Dense: h*w; the channels after a Concatenate: 1 for each branch's group.

    A model's kernels are derived by stripping it once (FastDeepIoT asks for them many times
    per epoch); at other widths they are moved along their dependencies (`spec_at`), which is
    exact while every dim is linear in each group. It is not after a DepthwiseConv2D whose
    depth-multiplier gates are a group of their own (C x M channels), so such a model is
    stripped again at every new set of widths.
    """
    graph = trace(model)
    groups = _groups(graph)
    members = gate_groups(model, groups)
    alive = {root: int(ws[0].mask().sum()) for root, ws in members.items()}
    cached = _DEPENDENCIES.get(model)
    if cached is None or cached.graph is not graph or (cached.bilinear and cached.alive != alive):
        kernels = _channel_dependencies(model, graph, groups, members, alive)
        cached = _DEPENDENCIES[model] = _Derived(graph, alive, kernels, not movable(kernels))
    kernels = cached.kernels
    if cached.alive != alive:
        kernels = kernels_at(kernels, alive)
    if tree is not None:
        kernels = [(tree.profiled(spec), deps) for spec, deps in kernels]
    return kernels, members


class _Derived(NamedTuple):
    """A model's kernels as stripped at the widths `alive`, with their dependencies."""

    graph: ModelGraph
    alive: dict
    kernels: list
    bilinear: bool  # some dim is a product of two groups' widths: not movable


_DEPENDENCIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> _Derived


def movable(kernels) -> bool:
    """Whether `spec_at` moves `channel_dependencies`' kernels exactly to any widths: every
    dim linear in each group. A gated DepthwiseConv2D's C x M channels are a product of two
    groups' widths (its multiplier gates are a group of their own), exact only one at a time."""
    return not any(d.dim == "mult" for _, deps in kernels for d in deps)


def spec_at(spec: LayerSpec, deps: list[Dependency], widths: dict[str, int]) -> LayerSpec:
    """`spec` with its channel dims moved to the gate groups' `widths` (alive channels, by
    root). A dim fed by several groups (after a Concatenate) moves with each of them."""
    dims = {}
    for d in deps:
        dims[d.dim] = dims.get(d.dim, spec.dims[d.dim]) + d.value(widths[d.root]) - spec.dims[d.dim]
    return spec.replace(**dims) if dims else spec


def kernels_at(kernels, widths: dict[str, int]) -> list:
    """`channel_dependencies`' kernels moved to the gate groups' `widths` (`spec_at`), with
    their dependencies."""
    return [(spec_at(spec, deps, widths), deps) for spec, deps in kernels]


def predicted_us(tree: TimingTree, kernels, widths: dict[str, int]) -> float:
    """Predicted microseconds of the whole model (invoke overhead included) with each gate
    group at `widths[root]` alive channels, from `channel_dependencies`' kernels: no model is
    rebuilt. A dim fed by several groups (after a Concatenate) moves with each of them."""
    specs = [spec for spec, _ in kernels_at(kernels, widths)]
    model_bytes = weight_bytes(specs)
    return tree.invoke_overhead() + sum(tree.kernel_in_model(s, "min", model_bytes) for s in specs)


def _channel_dependencies(model, graph, groups, members, alive) -> list:
    """`channel_dependencies`' kernels, from stripping `model` at its current widths."""
    root_of = {id(w): root for root, ws in members.items() for w in ws}
    slopes = channel_slopes(graph, groups)
    sides = {}
    for node in graph.nodes:
        out = slopes[id(node.output)]
        multiplier = isinstance(node.layer, LatencyAware) and isinstance(
            node.layer.layer, L.DepthwiseConv2D
        )
        own = root_of.get(id(node.layer))
        side = {
            "in": slopes[id(node.inputs[0])] if node.inputs else {},
            "out": out,
            "out_elements": _scaled(out, int(np.prod(node.output.shape[1:-1]))),
            "mult": {own: 1.0} if multiplier and own in out else {},
        }
        layer, *held = _stripped_names(node)
        sides[layer] = side
        for name in held:  # a held BN or activation sees the gated channels on both sides
            sides[name] = {**side, "in": out, "mult": {}}
    out = []
    for kernel in model_kernels(strip(model)):
        side = sides.get(kernel.layers[0], {})
        deps = [
            Dependency(dim, root, slope, kernel.spec.dims[dim] - slope * alive[root])
            for dim, which in CHANNEL_DIMS.get(kernel.spec.kind, {}).items()
            for root, slope in side.get(which, {}).items()
        ]
        out.append((kernel.spec, deps))
    return out


def _slope(tree: TimingTree, spec: LayerSpec, dim: str, model_bytes: float) -> float:
    """dt/d(dim) in us inside a model of `model_bytes` weight bytes, from the leaf `spec` is in
    with unpadded features (a smooth slope), through the tree's composition term."""
    _, w, _ = tree.leaf(spec)
    wider = spec.replace(**{dim: spec.dims[dim] + 1})
    x0 = design_matrix([compute_features(tree.timed_spec(spec))])[0]  # the leaf's kernel's features
    x1 = design_matrix([compute_features(tree.timed_spec(wider))])[0]
    return tree.in_model_slope(float((x1 - x0) @ w), spec, wider, model_bytes)


class LatencyRegularizer:
    """Turns a TimingTree into per-channel latency costs on a gated (`latency_aware`) model.

    Args:
        tree: the device's `TimingTree`.
        strength: loss charged for the model's whole predicted latency (lambda); the callback
            adapts it towards a latency target.

    Example:
        >>> reg = LatencyRegularizer(tree, strength=0.5)
        >>> latency_us = reg.update(gated_model)   # sets every LatencyAware's channel cost
    """

    def __init__(self, tree: TimingTree, strength: float = 0.1):
        if strength < 0:
            raise ValueError(f"strength must be >= 0. Received: strength={strength}")
        self.tree = tree
        self.strength = float(strength)

    def predict(self, model) -> LatencyReport:
        """Predicted latency of the model as it would be stripped now (hard structure), kernel
        by kernel (`predict_latency` of the stripped model)."""
        return predict_latency(model, self.tree)

    def predict_us(self, model) -> float:
        """`predict(model).total_us`, from the model's kernels at the widths `strip` keeps
        (`predicted_us`), without stripping the model: what FastDeepIoT asks every epoch."""
        kernels, members = channel_dependencies(model, self.tree)
        widths = {root: int(ws[0].mask().sum()) for root, ws in members.items()}
        return predicted_us(self.tree, kernels, widths)

    def channel_costs(self, model) -> dict[str, float]:
        """Microseconds per alive channel of each gate group (by group root name)."""
        costs: dict[str, float] = {}
        kernels = channel_dependencies(model, self.tree)[0]
        model_bytes = weight_bytes(spec for spec, _ in kernels)
        for spec, deps in kernels:
            for dep in deps:
                slope = max(0.0, _slope(self.tree, spec, dep.dim, model_bytes)) * dep.slope
                costs[dep.root] = costs.get(dep.root, 0.0) + slope
        return costs

    def update(self, model, latency_us: float | None = None) -> float:
        """Re-reads the leaves at the current structure and sets each wrapper's cost/strength;
        returns the structure's predicted microseconds (`latency_us`, when the caller already
        has them)."""
        latency_us = self.predict_us(model) if latency_us is None else latency_us
        costs = self.channel_costs(model)
        for root, members in gate_groups(model).items():
            for w in members:
                cost = costs.get(root, 0.0) / len(members) / max(latency_us, 1e-9)
                w.channel_cost.assign(cost)
                w.penalty_scale.assign(self.strength)
        return latency_us

    def get_config(self) -> dict:
        return {"tree": self.tree.to_dict(), "strength": self.strength}

    @classmethod
    def from_config(cls, config: dict) -> LatencyRegularizer:
        return cls(TimingTree.from_dict(config["tree"]), config["strength"])
