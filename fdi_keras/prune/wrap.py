"""latency_aware(model): wrap every prunable Dense/Conv block of a model in LatencyAware."""

from __future__ import annotations

import keras

from fdi_keras.prune.graph import check_rebuildable, consumers, rebuild
from fdi_keras.prune.structure import channel_owners, mixes_channels
from fdi_keras.prune.wrapper import GATEABLE, RECURRENT, LatencyAware

L = keras.layers


def _clone(layer):
    return type(layer).from_config(layer.get_config())


def _fusable_activation(layer) -> bool:
    if isinstance(layer, L.ReLU):
        return True
    return (
        isinstance(layer, L.Activation)
        and not mixes_channels(layer.activation)
        and layer.activation is not keras.activations.linear
    )


def _blocks(model) -> dict[int, list]:
    """Gateable layer id -> [layer, (BN), (activation)]: the chain the runtime fuses."""
    users = consumers(model)
    outputs = {id(t) for t in model.outputs}
    blocks = {}
    for layer in model.layers:
        if not isinstance(layer, GATEABLE) or isinstance(layer, LatencyAware):
            continue
        if isinstance(layer, L.DepthwiseConv2D) and layer.depth_multiplier == 1:
            continue  # no multiplier to gate: its channels are its input's
        if mixes_channels(getattr(layer, "activation", None)):
            continue  # a softmax over channels: removing one changes the others
        chain = [layer]
        fusable = () if isinstance(layer, RECURRENT) else (L.BatchNormalization, "activation")
        for kind in fusable:
            last = chain[-1]
            nxt = users[id(last)]
            if len(nxt) != 1 or id(last.output) in outputs:
                break
            ok = _fusable_activation(nxt[0]) if kind == "activation" else isinstance(nxt[0], kind)
            if ok:
                chain.append(nxt[0])
        blocks[id(layer)] = chain
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
    stay unwrapped; blocks joined by `Add` share a gate group. Weights are copied; the input
    model is untouched. Layers named in `exclude` are left as they are.

    Example:
        >>> gated = fdi_keras.latency_aware(model)
        >>> gated.compile(...); gated.fit(..., callbacks=[fdi_keras.FastDeepIoTCallback(tree)])
    """
    check_rebuildable(model)
    blocks = {k: v for k, v in _blocks(model).items() if v[0].name not in set(exclude)}
    _, groups = channel_owners(model, lambda layer: layer.name if id(layer) in blocks else None)
    members: dict[str, list[str]] = {}
    for chain in blocks.values():
        members.setdefault(groups.find(chain[0].name), []).append(chain[0].name)
    gated = {k: v for k, v in blocks.items() if not groups.is_fixed(v[0].name)}
    absorbed = {id(layer) for chain in gated.values() for layer in chain[1:]}

    def transform(layer, ins):
        if id(layer) in absorbed:
            return None
        if id(layer) in gated:
            chain = gated[id(layer)]
            root = groups.find(layer.name)
            group = root if len(members[root]) > 1 else None
            wrapper = LatencyAware(
                _clone(layer),
                *[x and _clone(x) for x in _split(chain)],
                gate=gate,
                group=group,
                min_channels=min_channels,
                name=f"latency_aware_{layer.name}",
            )
            out = wrapper(*ins)
            wrapper.layer.set_weights(layer.get_weights())
            if wrapper.norm is not None:
                wrapper.norm.set_weights(_split(chain)[0].get_weights())
            return out
        new = _clone(layer)
        out = new(ins if len(ins) > 1 else ins[0])
        new.set_weights(layer.get_weights())
        return out

    return rebuild(model, transform)


def _split(chain):
    """(norm or None, activation or None) of a block chain."""
    norm = next((x for x in chain[1:] if isinstance(x, L.BatchNormalization)), None)
    act = next((x for x in chain[1:] if not isinstance(x, L.BatchNormalization)), None)
    return norm, act
