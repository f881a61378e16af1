"""Who owns the channels of each tensor: the gate groups of a model (Torch-Pruning's idea).

A tensor's channels are *owned* by the gated block that produced them; layers whose registry
channel kind is "pass", "depthwise" or "flatten" (BatchNormalization, element-wise activations,
pooling, padding, dropout, DepthwiseConv2D, Flatten) pass ownership on; an element-wise merge
(`Add`, `Multiply`) couples the owners of its inputs into one group. A group that meets a
model output, a model input, a layer that creates its own channels without a gate, a layer that
mixes channels (softmax: a removed channel's exp(0) is in every other channel's denominator),
an element-wise merge of flattened or broadcast tensors, or a consumer strip cannot adjust is
*fixed*: its channels cannot be removed.

A DepthwiseConv2D's output channel c * M + m belongs to input channel c and multiplier m, so its
channels have two owners: its input's and its multiplier gate's (a fixed one when the multiplier
is not gated and M > 1). Owners are therefore tuples of names, usually of one. An element-wise
merge couples single owners only; tensors owned by several (and their partners) are fixed unless
they have the same owners.
"""

from __future__ import annotations

import keras

from fdi_keras.graph import ModelGraph, rule_for

L = keras.layers


def channel_kind(node) -> str:
    """The node's registry channel kind (see `fdi_keras.graph.registry`)."""
    return rule_for(node.layer).channel_kind(node.layer)


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


def channel_owners(graph: ModelGraph, block_of) -> tuple[dict, Groups]:
    """owners (a tuple of names) of every tensor of the traced graph (by id) and the groups.

    `block_of(node)` returns the name of the gated block `node` starts (a `LatencyAware`
    wrapper, or the first layer of a chain one will wrap), or None. The inputs of a layer
    called more than once (a shared layer with weights) are coupled like an Add's: its
    weights are sliced once for all of its calls.
    """
    groups = Groups()
    owner = {}
    flattened = set()  # ids of tensors laid out as (position, channel) by a Flatten
    concat_parts: dict[str, list] = {}  # a Concatenate's output owner: its inputs' owners
    for t in graph.inputs:
        owner[id(t)] = (f"input:{t.name}",)
        groups.fix(owner[id(t)][0])
    for node in graph.nodes:
        tensors = node.inputs
        ins = [owner[id(t)] for t in tensors]
        block = block_of(node)
        kind = channel_kind(node)
        reads_flattened = bool(flattened.intersection(map(id, tensors)))
        broadcasts = len({t.shape[-1] for t in tensors}) > 1  # e.g. a (h, w, 1) attention map
        unmergeable = kind == "merge" and (reads_flattened or broadcasts)
        inner = node.layer.layer if isinstance(node.layer, L.Wrapper) else node.layer
        if block is not None:
            out = (*ins[0], block) if isinstance(inner, L.DepthwiseConv2D) else (block,)
        elif kind == "depthwise" and node.layer.depth_multiplier > 1:
            out = (*ins[0], f"fixed:{node.name}")
            groups.fix(out[-1])
        elif kind in ("pass", "flatten", "depthwise"):
            out = ins[0]  # Flatten keeps ownership: its units are channel x spatial position
        elif kind == "merge" and not unmergeable:
            out = _merge(groups, ins)
        elif kind == "concat":
            out = (f"concat:{node.name}",)
            concat_parts[out[0]] = ins
        else:
            out = (f"fixed:{node.name}",)
            groups.fix(out[0])
        adjustable = rule_for(node.layer).can_slice_inputs(node.layer)
        if block is None and (unmergeable or not adjustable):
            for o in ins:
                _fix(groups, o)
        if kind == "flatten" or (kind == "pass" and reads_flattened):
            flattened.update(map(id, node.outputs))
        for t in node.outputs:
            owner[id(t)] = out
        for name in out:
            groups.find(name)
    for layer in graph.layers:
        calls = graph.calls(layer)
        if len(calls) > 1 and getattr(layer, "weights", None):
            _merge(groups, [owner[id(n.inputs[0])] for n in calls])
    for t in graph.outputs:
        _fix(groups, owner[id(t)])
    _fix_concatenated(groups, concat_parts)
    return owner, groups


def _fix_concatenated(groups: Groups, concat_parts: dict) -> None:
    """A Concatenate's channels are its inputs' side by side: when they must all stay (they
    meet a model output, a layer strip cannot adjust, an element-wise merge), so must its
    inputs' (through nested concatenations too)."""
    changed = True
    while changed:
        changed = False
        for name, parts in concat_parts.items():
            if groups.is_fixed(name):
                for o in parts:
                    if not all(groups.is_fixed(n) for n in o):
                        _fix(groups, o)
                        changed = True


def _fix(groups: Groups, owners: tuple) -> None:
    for name in owners:
        groups.fix(name)


def _merge(groups: Groups, ins: list[tuple]) -> tuple:
    """Owners of an element-wise merge's output: its inputs' owners coupled into one group.

    A concatenation's channels come from several groups and cannot be tied one to one to
    another tensor's: merged, both sides keep every channel."""
    if any(n.startswith("concat:") for o in ins for n in o):
        for o in ins:
            _fix(groups, o)
    elif all(len(o) == 1 for o in ins):
        for other in ins[1:]:
            groups.union(ins[0][0], other[0])
    elif any(o != ins[0] for o in ins[1:]):
        for o in ins:
            _fix(groups, o)
    return ins[0]
