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

import keras

from fdi_keras.features import compute_features
from fdi_keras.kernels import model_kernels
from fdi_keras.latency import LatencyReport, predict_latency
from fdi_keras.prune.graph import layer_inputs
from fdi_keras.prune.strip import strip
from fdi_keras.prune.structure import channel_owners
from fdi_keras.prune.wrapper import LatencyAware
from fdi_keras.specs import LayerSpec
from fdi_keras.timing.leaf import design_matrix
from fdi_keras.timing.tree import TimingTree

# Which dims of a kernel are channel counts, and which side sets them: the input's owners,
# the output's owners, or the gates of a DepthwiseConv2D's multiplier.
CHANNEL_DIMS = {
    "conv2d": {"cin": "in", "cout": "out"},
    "dense": {"cin": "in", "cout": "out"},
    "depthwise_conv2d": {"cin": "in", "mult": "mult"},
    "pool2d": {"c": "in"},
    "global_pool": {"c": "in"},
    "add": {"c": "in"},
    "pad": {"c": "in"},
    "lrn": {"c": "in"},
    "gru": {"cin": "in", "units": "out"},
    "lstm": {"cin": "in", "units": "out"},
}


def wrappers(model) -> list[LatencyAware]:
    return [layer for layer in model.layers if isinstance(layer, LatencyAware)]


def gate_groups(model) -> dict[str, list[LatencyAware]]:
    """Wrappers of each gate group, by group root (a wrapper alone is its own group)."""
    gated = {id(w): w.name for w in wrappers(model)}
    _, groups = channel_owners(model, lambda layer: gated.get(id(layer)))
    out: dict[str, list] = {}
    for w in wrappers(model):
        out.setdefault(groups.find(w.name), []).append(w)
    return out


def channel_dependencies(model):
    """The kernels of `strip(model)` with the gate groups their channel dims depend on.

    Returns ([(spec, [(dim, group root, multiplier)])], {root: wrappers}), where the dim's
    value is `multiplier * alive channels of the group` (e.g. Flatten -> Dense: h*w*c). A dim set
    by several groups (the C * M channels after a gated DepthwiseConv2D) depends on each, with
    the others' current widths in its multiplier: the linearization at the current structure.
    """
    members = gate_groups(model)
    gated = {id(w): w.name for w in wrappers(model)}
    owner, groups = channel_owners(model, lambda layer: gated.get(id(layer)))
    sides = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        wrapped = isinstance(layer, LatencyAware)
        multiplier = wrapped and isinstance(layer.layer, keras.layers.DepthwiseConv2D)
        sides[layer.layer.name if wrapped else layer.name] = {
            "in": owner[id(layer_inputs(layer)[0])],
            "out": owner[id(layer.output)],
            "mult": (layer.name,) if multiplier else (),
        }
    width = {root: int(ws[0].mask().sum()) for root, ws in members.items()}
    out = []
    for kernel in model_kernels(strip(model)):
        side = sides.get(kernel.layers[0], {})
        deps = []
        for dim, which in CHANNEL_DIMS.get(kernel.spec.kind, {}).items():
            for own in side.get(which, ()):
                root = groups.find(own)
                if groups.is_fixed(own) or root not in width:
                    continue
                deps.append((dim, root, kernel.spec.dims[dim] // max(width[root], 1)))
        out.append((kernel.spec, deps))
    return out, members


def _slope(tree: TimingTree, spec: LayerSpec, dim: str) -> float:
    """dt/d(dim) in us from the leaf `spec` is in, with unpadded features (a smooth slope)."""
    _, w, _ = tree.leaf(spec)
    x0 = design_matrix([compute_features(spec)])[0]
    x1 = design_matrix([compute_features(spec.replace(**{dim: spec.dims[dim] + 1}))])[0]
    return float((x1 - x0) @ w)


class LatencyRegularizer:
    """Turns a TimingTree into per-channel latency costs on a gated (`latency_aware`) model.

    Args:
        tree: the device's `TimingTree`.
        strength: loss charged for the model's whole predicted latency (lambda); the callback
            adapts it towards a latency target.

    Example:
        >>> reg = LatencyRegularizer(tree, strength=0.5)
        >>> report = reg.update(gated_model)   # sets every LatencyAware's channel cost
    """

    def __init__(self, tree: TimingTree, strength: float = 0.1):
        if strength < 0:
            raise ValueError(f"strength must be >= 0. Received: strength={strength}")
        self.tree = tree
        self.strength = float(strength)

    def predict(self, model) -> LatencyReport:
        """Predicted latency of the model as it would be stripped now (hard structure)."""
        return predict_latency(model, self.tree)

    def channel_costs(self, model) -> dict[str, float]:
        """Microseconds per alive channel of each gate group (by group root name)."""
        costs: dict[str, float] = {}
        for spec, deps in channel_dependencies(model)[0]:
            for dim, root, multiplier in deps:
                slope = max(0.0, _slope(self.tree, spec, dim)) * multiplier
                costs[root] = costs.get(root, 0.0) + slope
        return costs

    def update(self, model, report: LatencyReport | None = None) -> LatencyReport:
        """Re-reads the leaves at the current structure and sets each wrapper's cost/strength
        (`report`: this structure's prediction, when the caller already has it)."""
        report = report or self.predict(model)
        costs = self.channel_costs(model)
        for root, members in gate_groups(model).items():
            for w in members:
                cost = costs.get(root, 0.0) / len(members) / max(report.total_us, 1e-9)
                w.channel_cost.assign(cost)
                w.penalty_scale.assign(self.strength)
        return report

    def get_config(self) -> dict:
        return {"tree": self.tree.to_dict(), "strength": self.strength}

    @classmethod
    def from_config(cls, config: dict) -> LatencyRegularizer:
        return cls(TimingTree.from_dict(config["tree"]), config["strength"])
