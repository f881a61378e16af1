"""latency_aware(model): wrap every prunable Dense/Conv block of a model in LatencyAware."""

from __future__ import annotations

import keras

from fdi_keras.graph import ModelGraph, call_with, clone_layer, copy_weights, rule_for, trace
from fdi_keras.graph.keras_layers import CHANNEL_MIXING, activation_name
from fdi_keras.prune.structure import channel_owners
from fdi_keras.prune.wrapper import LatencyAware, gateable, link_gate_groups

L = keras.layers


def _joins_block(node, step: str) -> bool:
    """Whether `node` can be the BatchNormalization ("norm") or the element-wise activation
    ("activation") of a gated block: the gate then multiplies after it, so a closed channel is
    exactly zero whatever f(0) is."""
    layer = node.layer
    if step == "norm":
        return isinstance(layer, L.BatchNormalization)
    name = activation_name(layer)
    return (
        isinstance(layer, (L.ReLU, L.Activation))
        and name not in (None, "linear", *CHANNEL_MIXING)
        and rule_for(layer).channel_kind(layer) == "pass"
    )


def _blocks(graph: ModelGraph) -> dict[int, list]:
    """id(node) of each gateable call -> [node, (BN node), (activation node)]: its block."""
    blocks = {}
    for node in graph.nodes:
        layer = node.layer
        if not gateable(layer) or isinstance(layer, LatencyAware):
            continue
        if activation_name(layer) in CHANNEL_MIXING:
            continue  # a softmax over channels: removing one changes the others
        chain = [node]
        if not graph.is_shared(layer) and not isinstance(layer, (L.GRU, L.LSTM)):
            for step in ("norm", "activation"):
                nxt = graph.sole_consumer(chain[-1])
                if nxt is not None and not graph.is_shared(nxt.layer) and _joins_block(nxt, step):
                    chain.append(nxt)
        blocks[id(node)] = chain
    return blocks


def latency_aware(
    model: keras.Model, gate: str = "hard_concrete", min_channels: int = 1, exclude=()
) -> keras.Model:
    """A new model with every prunable Dense/Conv block wrapped in `LatencyAware`.

    A block is a Dense/Conv1D/Conv2D/SeparableConv2D layer with the BatchNormalization and the
    activation layer that follow it, likewise a DepthwiseConv2D with `depth_multiplier > 1` (its
    multipliers are gated; with 1 it passes its input's channels through), or a GRU/LSTM layer
    (its units). Blocks whose channels cannot be removed (they reach a model output, or a
    consumer `strip` cannot adjust, or are merged by `Add` with an input or an unwrapped layer)
    stay unwrapped; blocks joined by `Add`/`Multiply` form a gate group, which has one gate
    (`LatencyAware.share_gates_with`): its members cannot drift apart. Nested models are
    inlined (the result is one flat functional model); a layer called several times (shared)
    becomes one wrapper called as often, its calls' inputs coupled. Weights are copied; the
    input model is untouched. Layers named in `exclude` are left as they are.

    Example:
        >>> gated = fdi_keras.latency_aware(model)
        >>> gated.compile(...); gated.fit(..., callbacks=[fdi_keras.FastDeepIoTCallback(tree)])
    """
    graph = trace(model)
    excluded = set(exclude)
    blocks = {k: v for k, v in _blocks(graph).items() if v[0].layer.name not in excluded}
    _, groups = channel_owners(graph, lambda node: node.layer.name if id(node) in blocks else None)
    members: dict[str, set] = {}
    for chain in blocks.values():
        members.setdefault(groups.find(chain[0].layer.name), set()).add(chain[0].layer.name)
    gated = {k: v for k, v in blocks.items() if not groups.is_fixed(v[0].layer.name)}
    absorbed = {id(node) for chain in gated.values() for node in chain[1:]}
    new_layers: dict[int, keras.layers.Layer] = {}  # one new layer per old one, calls shared

    def wrapper_of(chain):
        layer = chain[0].layer
        root = groups.find(layer.name)
        norm, act = _split(chain)
        wrapper = LatencyAware(
            clone_layer(layer),
            norm and clone_layer(norm.layer),
            act and clone_layer(act.layer),
            gate=gate,
            group=root if len(members[root]) > 1 else None,
            min_channels=min_channels,
            name=f"latency_aware_{layer.name}",
        )
        return wrapper, [layer, norm and norm.layer]

    def transform(node, ins):
        if id(node) in absorbed:
            return None
        key = id(node.layer)
        if key not in new_layers:
            if id(node) in gated:
                new_layers[key], sources = wrapper_of(gated[id(node)])
            else:
                new_layers[key], sources = clone_layer(node.layer), [node.layer]
            out = call_with(node, new_layers[key], ins)
            _copy_weights(new_layers[key], sources)
            return out
        return call_with(node, new_layers[key], ins)

    gated_model = graph.rebuild(transform)
    link_gate_groups(gated_model.layers)
    return gated_model


def _copy_weights(new, sources) -> None:
    if isinstance(new, LatencyAware):
        new.layer.set_weights(sources[0].get_weights())
        if new.norm is not None:
            new.norm.set_weights(sources[1].get_weights())
    else:
        copy_weights(new, sources[0])


def _split(chain):
    """(norm node or None, activation node or None) of a block chain."""
    norm = next((x for x in chain[1:] if isinstance(x.layer, L.BatchNormalization)), None)
    act = next((x for x in chain[1:] if not isinstance(x.layer, L.BatchNormalization)), None)
    return norm, act
