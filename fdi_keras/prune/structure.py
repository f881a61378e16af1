"""Who owns the channels of each tensor: the gate groups of a model (Torch-Pruning's idea).

A tensor's channels are *owned* by the gated block that produced them; layers that keep the
channel layout (BatchNormalization, element-wise activations, pooling, padding, dropout,
DepthwiseConv2D, Flatten) pass ownership on; an element-wise merge (`Add`) couples the owners of
its inputs into one group. A group that meets a model output, a model input, a layer that
creates its own channels without a gate, a layer that mixes channels (softmax: a removed
channel's exp(0) is in every other channel's denominator), an element-wise merge of flattened
tensors, or a consumer strip cannot adjust is *fixed*: its channels cannot be removed.

A DepthwiseConv2D's output channel c * M + m belongs to input channel c and multiplier m, so its
channels have two owners: its input's and its multiplier gate's (a fixed one when the multiplier
is not gated and M > 1). Owners are therefore tuples of names, usually of one. An element-wise
merge couples single owners only; tensors owned by several (and their partners) are fixed unless
they have the same owners.
"""

from __future__ import annotations

import keras

from fdi_keras.kernels import GLOBAL_POOLING, INFERENCE_IDENTITY, POOLING
from fdi_keras.prune.graph import layer_inputs

L = keras.layers
CHANNEL_PRESERVING = (
    L.BatchNormalization,
    L.Activation,
    L.ReLU,
    *INFERENCE_IDENTITY,
    *POOLING,
    *GLOBAL_POOLING,
    L.ZeroPadding1D,
    L.ZeroPadding2D,
)
# Activations whose output channel depends on the other channels.
CHANNEL_MIXING_ACTIVATIONS = (keras.activations.softmax, keras.activations.log_softmax)
ELEMENTWISE = (L.Add, L.Multiply, L.Subtract, L.Average, L.Maximum, L.Minimum)
# Besides the layers that pass channels on, consumers whose input dimension strip can slice.
ADJUSTABLE = (
    ELEMENTWISE
    + (L.DepthwiseConv2D,)
    + (L.Dense, L.Conv1D, L.Conv2D, L.SeparableConv2D, L.GRU, L.LSTM, L.Flatten, L.Concatenate)
)


def mixes_channels(activation) -> bool:
    """Whether an activation function's output channel depends on other channels (softmax)."""
    return any(activation is f for f in CHANNEL_MIXING_ACTIVATIONS)


def passes_channels(layer) -> bool:
    """Whether each output channel of `layer` depends on the same input channel alone."""
    if isinstance(layer, L.Activation):
        return not mixes_channels(layer.activation)
    return isinstance(layer, CHANNEL_PRESERVING)


class Groups:
    """Union-find over channel owners; owner ids are layer names, 'fixed' marks groups that
    must keep all their channels."""

    def __init__(self):
        self.parent: dict[str, str] = {}
        self.fixed: set[str] = set()

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> str:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            if rb in self.fixed:
                self.fixed.add(ra)
        return ra

    def fix(self, a: str) -> None:
        self.fixed.add(self.find(a))

    def is_fixed(self, a: str) -> bool:
        return self.find(a) in self.fixed


def channel_owners(model, block_of) -> tuple[dict, Groups]:
    """owners (a tuple of names) of every layer output (by id(tensor)) and the groups.

    `block_of(layer)` returns the name of the gated block `layer` starts (a `LatencyAware`
    wrapper, or the first layer of a chain one will wrap), or None.
    """
    groups = Groups()
    owner = {}
    flattened = set()  # ids of tensors laid out as (position, channel) by a Flatten
    for t in model.inputs:
        owner[id(t)] = (f"input:{t.name}",)
        groups.fix(owner[id(t)][0])
    for layer in model.layers:
        if isinstance(layer, L.InputLayer):
            continue
        tensors = layer_inputs(layer)
        ins = [owner[id(t)] for t in tensors]
        block = block_of(layer)
        passes = passes_channels(layer)
        reads_flattened = bool(flattened.intersection(map(id, tensors)))
        merges_flattened = isinstance(layer, ELEMENTWISE) and reads_flattened
        inner = layer.layer if isinstance(layer, L.Wrapper) else layer
        if block is not None:
            out = (*ins[0], block) if isinstance(inner, L.DepthwiseConv2D) else (block,)
        elif isinstance(layer, L.DepthwiseConv2D) and layer.depth_multiplier > 1:
            out = (*ins[0], f"fixed:{layer.name}")
            groups.fix(out[-1])
        elif passes or isinstance(layer, (L.DepthwiseConv2D, L.Flatten)):
            out = ins[0]  # Flatten keeps ownership: its units are channel x spatial position
        elif isinstance(layer, ELEMENTWISE) and not merges_flattened:
            out = _merge(groups, ins)
        else:
            out = (f"fixed:{layer.name}",)
            groups.fix(out[0])
        if block is None and (merges_flattened or not (passes or isinstance(layer, ADJUSTABLE))):
            for o in ins:
                _fix(groups, o)
        if isinstance(layer, L.Flatten) or (passes and reads_flattened):
            flattened.add(id(layer.output))
        owner[id(layer.output)] = out
        for name in out:
            groups.find(name)
    for t in model.outputs:
        _fix(groups, owner[id(t)])
    return owner, groups


def _fix(groups: Groups, owners: tuple) -> None:
    for name in owners:
        groups.fix(name)


def _merge(groups: Groups, ins: list[tuple]) -> tuple:
    """Owners of an element-wise merge's output: its inputs' owners coupled into one group."""
    if all(len(o) == 1 for o in ins):
        for other in ins[1:]:
            groups.union(ins[0][0], other[0])
    elif any(o != ins[0] for o in ins[1:]):
        for o in ins:
            _fix(groups, o)
    return ins[0]
