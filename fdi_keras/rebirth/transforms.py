"""Build the slimmed graph of a list of merges, with every weight that can be carried over.

BatchNormalization folds exactly; a streamlined convolution starts from the BN-folded kernel
placed in its larger receptive field; a widened branch keeps its own filters and starts its
absorbed ones from Keras's default initializer. Surviving layers keep their names, so a merge
planned on one model applies to the model that the previous steps produced.
"""

from __future__ import annotations

import keras
import numpy as np

from fdi_keras.graph import call_with, clone_layer, copy_weights, trace
from fdi_keras.rebirth.patterns import (
    POOL_2D,
    Merge,
    is_relu,
    merged_kernel_and_stride,
    module_branches,
)

L = keras.layers
KIND_ORDER = ("fold_bn", "streamline", "branch", "reduction")


def folded_weights(layer, bn) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of `layer` with the BatchNormalization `bn` that follows it folded in."""
    weights = layer.get_weights()
    kernel = weights[0]
    bias = weights[1] if layer.use_bias else np.zeros(kernel.shape[-1], kernel.dtype)
    if bn is None:
        return kernel, bias
    cfg = bn.get_config()
    values = dict(zip([v.path.split("/")[-1] for v in bn.weights], bn.get_weights()))
    gamma = values["gamma"] if cfg["scale"] else 1.0
    beta = values["beta"] if cfg["center"] else 0.0
    scale = gamma / np.sqrt(values["moving_variance"] + cfg["epsilon"])
    return kernel * scale, (bias - values["moving_mean"]) * scale + beta


def _fold_bn_layer(layer, bn, inputs):
    new = clone_layer(layer, use_bias=True)
    out = new(inputs)
    new.set_weights(list(folded_weights(layer, bn)))
    return out


def _pooled_kernel(kernel, conv, pool, size):
    """The conv kernel spread over the conv+pool receptive field: averaged over the pool's taps
    for average pooling (exact before any non-linearity), centred for max pooling."""
    out = np.zeros((*size, *kernel.shape[2:]), kernel.dtype)
    (kh, kw), (sh, sw), (ph, pw) = kernel.shape[:2], conv.strides, pool.pool_size
    if isinstance(pool, L.AveragePooling2D):
        for i in range(ph):
            for j in range(pw):
                out[i * sh : i * sh + kh, j * sw : j * sw + kw] += kernel / (ph * pw)
    else:
        i, j = (ph - 1) // 2, (pw - 1) // 2
        out[i * sh : i * sh + kh, j * sw : j * sw + kw] = kernel
    return out


def _streamline_layer(model, merge: Merge, inputs):
    chain = [model.get_layer(n) for n in merge.layers]
    conv = chain[0]
    bn = next((x for x in chain if isinstance(x, L.BatchNormalization)), None)
    pool = next((x for x in chain if isinstance(x, POOL_2D)), None)
    kernel, bias = folded_weights(conv, bn)
    activation = "relu" if any(is_relu(x) for x in chain) else conv.get_config()["activation"]
    overrides = dict(use_bias=True, activation=activation)
    if pool is not None:
        size, strides = merged_kernel_and_stride(conv, pool)
        kernel = _pooled_kernel(kernel, conv, pool, size)
        target = tuple(chain[-1].output.shape[1:])
        for padding in ("same", "valid"):
            candidate = dict(kernel_size=size, strides=strides, padding=padding)
            if (
                tuple(clone_layer(conv, **candidate).compute_output_shape(inputs.shape)[1:])
                == target
            ):
                overrides.update(candidate)
                break
        else:
            raise ValueError(
                f"Cannot streamline {merge.name}: no {size[0]}x{size[1]}/{strides[0]} "
                f"convolution reproduces the output shape {target}"
            )
    new = clone_layer(conv, **overrides)
    out = new(inputs)
    new.set_weights([kernel, bias])
    return out


def _widened(conv, inputs, before: int, after: int):
    """`conv` with `before` new filters in front of its own and `after` behind them."""
    new = clone_layer(conv, filters=conv.filters + before + after, use_bias=True)
    out = new(inputs)
    kernel, bias = new.get_weights()
    own_kernel, own_bias = folded_weights(conv, None)
    kernel[..., before : before + conv.filters] = own_kernel
    bias[:] = 0
    bias[before : before + conv.filters] = own_bias
    new.set_weights([kernel, bias])
    return out


def _reduction_layer(model, merge: Merge, inputs):
    """The kxk convolution applied straight to the reduce's input, starting from the two
    kernels composed (exact without the ReLU between them and with 'valid' padding)."""
    reduce, conv = model.get_layer(merge.layers[0]), model.get_layer(merge.layers[-1])
    w1, b1 = folded_weights(reduce, None)
    w2, b2 = folded_weights(conv, None)
    kernel = np.einsum("ir,hwro->hwio", w1[0, 0], w2)
    bias = b2 + np.einsum("r,hwro->o", b1, w2)
    new = clone_layer(conv, use_bias=True)
    out = new(inputs)
    new.set_weights([kernel, bias])
    return out


def branch_assignment(roles: list[str]) -> list[int]:
    """For each branch, the wide branch that carries its channels: a thin branch joins the
    wide one before it (or the first one, if none is before), so the concatenation order,
    and with it every consumer's input layout, is unchanged."""
    wide = [i for i, r in enumerate(roles) if r == "wide"]
    return [
        i if r == "wide" else max([w for w in wide if w < i], default=wide[0])
        for i, r in enumerate(roles)
    ]


def _branch_actions(model, merge: Merge) -> dict:
    concat = merge.layers[-1]
    branches = module_branches(model, concat)
    carrier = branch_assignment([b.role for b in branches])
    actions = {}
    for i, branch in enumerate(branches):
        if carrier[i] != i:
            actions.update({x.name: "absorb" for x in branch.layers})
            continue
        width = lambda j: branches[j].last_conv.filters  # noqa: E731
        before = sum(width(j) for j in range(i) if carrier[j] == i)
        after = sum(width(j) for j in range(i + 1, len(branches)) if carrier[j] == i)
        last = branch.last_conv
        actions[last.name] = lambda ins, last=last, b=before, a=after: _widened(last, ins[0], b, a)
    kept = [i for i in range(len(branches)) if carrier[i] == i]
    layer = model.get_layer(concat)
    actions[concat] = lambda ins: (
        clone_layer(layer)([ins[i] for i in kept]) if len(kept) > 1 else ins[kept[0]]
    )
    return actions


def block_output(model: keras.Model, merge: Merge) -> str:
    """The layer of the slimmed model whose output replaces the output of `merge`'s block
    (`model` is the model the merge is applied to)."""
    if merge.kind == "reduction":
        return merge.layers[-1]  # the kxk convolution, now on the reduce's input
    if merge.kind != "branch":
        return merge.layers[0]
    branches = module_branches(model, merge.layers[-1])
    carrier = branch_assignment([b.role for b in branches])
    kept = [b for i, b in enumerate(branches) if carrier[i] == i]
    return merge.layers[-1] if len(kept) > 1 else kept[0].layers[-1].name


def apply_merges(model: keras.Model, merges: list[Merge]) -> keras.Model:
    """A new model with `merges` applied (by kind: BN folds, then streamlines, then branches)."""
    for kind in KIND_ORDER:
        chosen = [m for m in merges if m.kind == kind]
        if chosen:
            model = _apply_kind(model, kind, chosen)
    return model


def _apply_kind(model, kind, merges):
    actions: dict = {}
    for merge in merges:
        if kind == "branch":
            actions.update(_branch_actions(model, merge))
            continue
        head = merge.layers[0]
        if kind == "reduction":
            actions[head] = lambda ins, m=merge: _reduction_layer(model, m, ins[0])
        elif kind == "fold_bn":
            bn = model.get_layer(merge.layers[1])
            conv = model.get_layer(head)
            actions[head] = lambda ins, conv=conv, bn=bn: _fold_bn_layer(conv, bn, ins[0])
        else:
            actions[head] = lambda ins, m=merge: _streamline_layer(model, m, ins[0])
        actions.update({name: "absorb" for name in merge.layers[1:]})

    copies: dict[int, keras.layers.Layer] = {}  # a shared layer stays shared

    def transform(node, inputs):
        layer = node.layer
        action = actions.get(layer.name)
        if action == "absorb":
            return None
        if action is not None:
            return action(inputs)
        if id(layer) in copies:
            return call_with(node, copies[id(layer)], inputs)
        new = copies[id(layer)] = clone_layer(layer)
        out = call_with(node, new, inputs)
        copy_weights(new, layer)
        return out

    return trace(model).rebuild(transform)
