"""Find DeepRebirth's slimmable patterns in a functional Keras graph.

Four kinds, each a `Merge` naming the layers it replaces:
- `fold_bn` (exact): Conv/Dense with a linear output followed by BatchNormalization;
- `streamline` (learned): a convolution followed by non-tensor layers, [BN] [ReLU] and LRN
  and/or one pooling layer, which become one convolution (the pool's stride moves into it);
- `branch` (learned): an Inception-style module (a Concatenate of parallel branches from one
  tensor) whose thin 1x1 and pool->1x1 branches are dropped into the adjacent wide branches;
- `reduction` (learned): a 1x1 "reduce" convolution folded into the kxk convolution after it.

Whatever looks like a pattern but cannot be merged is returned as a `Skip` with the reason.
"""

from __future__ import annotations

import dataclasses

import keras

from fdi_keras.graph import trace
from fdi_keras.layers import LocalResponseNormalization

L = keras.layers
POOL_2D = (L.MaxPooling2D, L.AveragePooling2D)


@dataclasses.dataclass
class Merge:
    """One slimming step: `layers` (names, graph order) become `kind`'s replacement."""

    kind: str  # "fold_bn" | "streamline" | "branch" | "reduction"
    layers: list[str]
    detail: str
    exact: bool
    predicted_saving_ms: float | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.layers[0]}..{self.layers[-1]}"


@dataclasses.dataclass
class Skip:
    """A near-pattern that was not merged, and why."""

    layers: list[str]
    reason: str


def is_relu(layer) -> bool:
    if isinstance(layer, L.ReLU):
        cfg = layer.get_config()
        return cfg["max_value"] is None and not cfg["negative_slope"] and not cfg["threshold"]
    return isinstance(layer, L.Activation) and layer.get_config()["activation"] == "relu"


def activation_of(layer) -> str:
    return keras.activations.serialize(layer.activation) if hasattr(layer, "activation") else ""


class Graph:
    """Producer/consumer lookups between the layers of a model (from `fdi_keras.graph.trace`).

    DeepRebirth merges layers, so it reads the graph layer by layer: a layer called more than
    once (shared) has no sole consumer, so no merge goes through it.
    """

    def __init__(self, model: keras.Model):
        self.graph = trace(model)
        self.model = model

    def users(self, layer) -> list:
        calls = self.graph.calls(layer)
        return [n.layer for c in calls for n in self.graph.consumers(c)]

    def sole_user(self, layer):
        calls = self.graph.calls(layer)
        if len(calls) != 1:
            return None
        nxt = self.graph.sole_consumer(calls[0])
        return None if nxt is None or self.graph.is_shared(nxt.layer) else nxt.layer

    def parents(self, layer) -> list:
        """The layers producing `layer`'s inputs (a model input stands for itself)."""
        tensors = self.graph.calls(layer)[0].inputs
        return [self.graph.producer(t).layer if self.graph.producer(t) else t for t in tensors]

    def inputs(self, layer) -> list:
        return self.graph.calls(layer)[0].inputs


def _chain_after(graph: Graph, tensor_layer):
    """The non-tensor layers that follow `tensor_layer` in a single-consumer chain, and a Skip
    when the chain stops at a pool or LRN that could not be taken."""
    chain, seen, skip = [], set(), None
    current = tensor_layer
    while True:
        users = graph.users(current)
        nxt = graph.sole_user(current)
        if nxt is None:
            if len(users) > 1 and any(
                isinstance(u, (*POOL_2D, LocalResponseNormalization)) for u in users
            ):
                names = ", ".join(u.name for u in users)
                skip = Skip(
                    [current.name],
                    f"{current.name!r} feeds {len(users)} consumers "
                    f"({names}); merging a pool/LRN behind it would change their inputs",
                )
            break
        if isinstance(nxt, L.BatchNormalization) and not seen:
            kind = "bn"
        elif is_relu(nxt) and "relu" not in seen and "pool" not in seen:
            kind = "relu"
        elif isinstance(nxt, LocalResponseNormalization) and "lrn" not in seen:
            kind = "lrn"
        elif isinstance(nxt, POOL_2D) and "pool" not in seen:
            if graph.sole_user(nxt) is None and len(graph.users(nxt)) > 1:
                names = ", ".join(u.name for u in graph.users(nxt))
                skip = Skip(
                    [current.name, nxt.name],
                    f"pool {nxt.name!r} feeds "
                    f"{len(graph.users(nxt))} consumers ({names}); it stays",
                )
                break
            kind = "pool"
        else:
            break
        chain.append(nxt)
        seen.add(kind)
        current = nxt
    return chain, skip


def find_streamlines(model: keras.Model) -> tuple[list[Merge], list[Skip]]:
    """fold_bn and streamline merges, one per tensor layer, and the near-misses."""
    graph, merges, skips = Graph(model), [], []
    for layer in model.layers:
        if not isinstance(layer, (L.Conv2D, L.Dense)) or isinstance(
            layer, (L.DepthwiseConv2D, L.SeparableConv2D, L.Conv2DTranspose)
        ):
            continue
        chain, skip = _chain_after(graph, layer)
        if skip:
            skips.append(skip)
        has_bn = any(isinstance(x, L.BatchNormalization) for x in chain)
        nontensor = [x for x in chain if isinstance(x, (*POOL_2D, LocalResponseNormalization))]
        linear = activation_of(layer) == "linear"
        if has_bn and not linear:
            skips.append(
                Skip(
                    [layer.name, chain[0].name],
                    f"BatchNormalization after "
                    f"{layer.name!r}'s {activation_of(layer)} activation cannot be "
                    "folded into it exactly",
                )
            )
            continue
        dilated = isinstance(layer, L.Conv2D) and tuple(layer.dilation_rate) != (1, 1)
        if nontensor and dilated and any(isinstance(x, POOL_2D) for x in chain):
            skips.append(
                Skip(
                    [layer.name] + [x.name for x in chain],
                    f"{layer.name!r} is dilated: a pool's stride cannot move into it",
                )
            )
            continue
        if nontensor and isinstance(layer, L.Conv2D):
            while chain and not isinstance(chain[-1], (*POOL_2D, LocalResponseNormalization)):
                chain.pop()  # a trailing ReLU after the pool stays its own layer
            merges.append(
                Merge(
                    "streamline",
                    [layer.name] + [x.name for x in chain],
                    _describe(layer, chain),
                    exact=False,
                )
            )
        elif has_bn:
            bn = next(x for x in chain if isinstance(x, L.BatchNormalization))
            merges.append(
                Merge(
                    "fold_bn",
                    [layer.name, bn.name],
                    f"fold {bn.name} into {layer.name}",
                    exact=True,
                )
            )
    return merges, skips


def _describe(conv, chain) -> str:
    parts = [type(x).__name__ for x in chain]
    pool = next((x for x in chain if isinstance(x, POOL_2D)), None)
    what = f"{conv.name} + {' + '.join(parts)} -> one Conv2D"
    if pool is not None:
        k, s = merged_kernel_and_stride(conv, pool)
        what += f" {k[0]}x{k[1]}/{s[0]}"
    return what


def merged_kernel_and_stride(conv, pool):
    """A conv (k, s) then a pool (kp, sp) see k + (kp - 1) * s pixels with stride s * sp."""
    k, s = conv.kernel_size, conv.strides
    kp, sp = pool.pool_size, pool.strides
    kernel = tuple(k[i] + (kp[i] - 1) * s[i] for i in range(2))
    return kernel, tuple(s[i] * sp[i] for i in range(2))


@dataclasses.dataclass
class Branch:
    """One parallel path of a module: its layers from the module input to the Concatenate."""

    layers: list
    role: str  # "1x1" | "pool_proj" | "wide"

    @property
    def last_conv(self):
        return [x for x in self.layers if isinstance(x, L.Conv2D)][-1]


def _branch(graph: Graph, end):
    """Walk back from a Concatenate input to the module input through single-consumer layers."""
    layers, current = [], end
    while current is not None and graph.sole_user(current) is not None:
        if (
            not isinstance(
                current, (L.Conv2D, L.BatchNormalization, L.ReLU, L.Activation, *POOL_2D)
            )
            or len(graph.inputs(current)) != 1
        ):
            return None, None
        layers.insert(0, current)
        current = graph.parents(current)[0]
    return layers, current


def _role(layers) -> str | None:
    convs = [x for x in layers if isinstance(x, L.Conv2D)]
    pools = [x for x in layers if isinstance(x, POOL_2D)]
    if not convs or type(convs[-1]) is not L.Conv2D or convs[-1].strides != (1, 1):
        return None
    if pools:
        ok = len(pools) == 1 and layers[0] is pools[0] and pools[0].strides == (1, 1)
        return "pool_proj" if ok and len(convs) == 1 and convs[0].kernel_size == (1, 1) else None
    if len(convs) == 1 and convs[0].kernel_size == (1, 1):
        return "1x1"
    return "wide"


def find_branches(model: keras.Model) -> tuple[list[Merge], list[Skip]]:
    """branch merges (Inception-style modules) and the modules that cannot be merged."""
    graph, merges, skips = Graph(model), [], []
    for concat in model.layers:
        if not isinstance(concat, L.Concatenate):
            continue
        ends = graph.parents(concat)
        walked = [_branch(graph, end) for end in ends]
        roots = {id(root) for _, root in walked if root is not None}
        if any(layers is None for layers, _ in walked) or len(roots) != 1 or len(ends) < 2:
            skips.append(
                Skip(
                    [concat.name],
                    f"{concat.name!r} does not join parallel chains of "
                    "Conv2D/BN/ReLU/pooling from one common input",
                )
            )
            continue
        roles = [_role(layers) for layers, _ in walked]
        if None in roles or "wide" not in roles:
            skips.append(
                Skip(
                    [concat.name],
                    f"module at {concat.name!r} has no wide (kxk) "
                    "branch to absorb its thin branches, or a branch of another shape",
                )
            )
            continue
        if not any(r != "wide" for r in roles):
            continue
        if any(isinstance(x, L.BatchNormalization) for layers, _ in walked for x in layers):
            skips.append(
                Skip(
                    [concat.name],
                    f"module at {concat.name!r} still has "
                    "BatchNormalization layers; fold them first (fold_bn)",
                )
            )
            continue
        layers = [x.name for ls, _ in walked for x in ls] + [concat.name]
        thin = sum(r != "wide" for r in roles)
        merges.append(
            Merge(
                "branch",
                layers,
                f"{concat.name}: {len(roles)} branches -> "
                f"{len(roles) - thin} (thin 1x1 / pool branches absorbed)",
                exact=False,
            )
        )
    return merges, skips


def module_branches(model: keras.Model, concat_name: str) -> list[Branch]:
    """The branches of the module ending at `concat_name`, in concatenation order."""
    graph = Graph(model)
    concat = model.get_layer(concat_name)
    out = []
    for end in graph.parents(concat):
        layers, _ = _branch(graph, end)
        out.append(Branch(layers, _role(layers)))
    return out


def find_reductions(model: keras.Model) -> list[Merge]:
    """reduction merges: a 1x1 convolution (an Inception "reduce") whose only consumer, after
    an optional ReLU, is a kxk convolution; the pair becomes one kxk convolution on the wider
    input, which has fewer ops but more FLOPs, so only a timing tree can say when it pays."""
    graph, merges = Graph(model), []
    for reduce in model.layers:
        if type(reduce) is not L.Conv2D or reduce.kernel_size != (1, 1) or reduce.strides != (1, 1):
            continue
        chain, nxt = [reduce], graph.sole_user(reduce)
        if nxt is not None and is_relu(nxt):
            chain.append(nxt)
            nxt = graph.sole_user(nxt)
        if (
            type(nxt) is L.Conv2D
            and nxt.kernel_size != (1, 1)
            and nxt.dilation_rate == (1, 1)
            and nxt.groups == 1
        ):
            k = "x".join(map(str, nxt.kernel_size))
            merges.append(
                Merge(
                    "reduction",
                    [x.name for x in chain] + [nxt.name],
                    f"{reduce.name} (1x1 -> {reduce.filters}) + {nxt.name} ({k}) "
                    f"-> one {k} Conv2D on {reduce.input.shape[-1]} channels",
                    exact=False,
                )
            )
    return merges
