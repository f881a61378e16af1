"""slim(model, x, y, plan): apply a slimming plan, learning the merged layers layer by layer."""

from __future__ import annotations

import dataclasses
import time
import typing

import keras
import numpy as np

from fdi_keras.graph import trace
from fdi_keras.rebirth import layerwise
from fdi_keras.rebirth.patterns import POOL_2D, Skip, merged_kernel_and_stride
from fdi_keras.rebirth.plan import Plan
from fdi_keras.rebirth.plan import plan as make_plan
from fdi_keras.rebirth.transforms import KIND_ORDER, apply_merges, block_output


@dataclasses.dataclass
class SlimStep:
    """What one step did: the merge (or "fine-tune"), and the block's reconstruction error on
    held-out inputs before and after its layer-wise training (None for exact steps). When
    training did not improve on the carried-over weights, they are kept (after == before)."""

    name: str
    kind: str
    exact: bool
    error_before: float | None = None
    error_after: float | None = None
    seconds: float = 0.0


class SlimResult(typing.NamedTuple):
    """The slimmed model, what each step did, and the merges not applied (with the reason)."""

    model: keras.Model
    history: list[SlimStep]
    skipped: list[Skip]


def cannot_slow_down(model, merge) -> bool:
    """Whether `merge` removes work without adding any, whatever the device: a BN fold, an LRN
    dropped, or a pool's stride moved into a convolution whose merged kernel costs no more
    FLOPs than the original (k + (kp - 1) * s)^2 / (s_p)^2 <= k^2 per output position)."""
    if merge.kind == "fold_bn":
        return True
    if merge.kind != "streamline":
        return False
    conv = model.get_layer(merge.layers[0])
    pools = [model.get_layer(n) for n in merge.layers[1:]]
    pools = [p for p in pools if isinstance(p, POOL_2D)]
    if not pools:
        return True
    kernel, _ = merged_kernel_and_stride(conv, pools[0])
    reduction = pools[0].strides[0] * pools[0].strides[1]
    return kernel[0] * kernel[1] <= conv.kernel_size[0] * conv.kernel_size[1] * reduction


def safe_without_tree(model, plan: Plan) -> Plan:
    """The merges of `plan` that cannot make `model` slower (`cannot_slow_down`); the others
    (branch and reduction merges, pool merges that grow the kernel) become Skips, since only a
    timing tree of the device can say whether they pay."""
    keep = [m for m in plan.merges if cannot_slow_down(model, m)]
    skipped = [
        Skip(m.layers, f"{m.name} needs a timing tree (tree=...) to show it is faster here")
        for m in plan.merges
        if m not in keep
    ]
    return Plan(keep, plan.skipped + skipped)


def _new_layers(model, merge):
    if merge.kind == "streamline":
        return [model.get_layer(merge.layers[0])]
    names = set(merge.layers)
    return [layer for layer in model.layers if layer.name in names and layer.weights]


def slim(
    model: keras.Model,
    x,
    y=None,
    plan: Plan | None = None,
    *,
    teacher: keras.Model | None = None,
    tree=None,
    layerwise_epochs: int = 1,
    finetune_epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-4,
    lr_multiplier: float = 10.0,
    validation_size: int = 512,
) -> SlimResult:
    """A slimmed copy of `model` (the input is untouched) and its step-by-step history.

    Exact merges (BN folds) are applied as they are. Each learned merge (streamline, branch,
    reduction), in that order, is trained layer-wise: the network up to the new block is fitted to
    reproduce the `teacher`'s activations at the block's output (MSE), the new layers at
    `lr * lr_multiplier`, the layers before them at `lr`. Then, if `y` is given and
    `finetune_epochs > 0`, the whole network is fine-tuned on the labels plus distillation
    from the teacher. `teacher` defaults to `model`; pass the original when `model` is itself
    the output of an earlier `slim`. `plan` defaults to `fdi_keras.rebirth.plan(model, tree)`;
    without a tree, only the merges that cannot make the model slower (`cannot_slow_down`: BN
    folds, LRN removal, a pool's stride moved into a conv without growing its FLOPs). Outputs
    may be probabilities or logits (detected from the graph).

    Example:
        >>> p = fdi_keras.rebirth.plan(model, tree).select(min_saving_ms=0.0)
        >>> small, history, skipped = fdi_keras.rebirth.slim(model, x, y, p)
    """
    model = trace(model).model  # nested models inlined
    teacher = teacher or model
    if plan is None:
        plan = make_plan(model, tree)
        if tree is None:
            plan = safe_without_tree(model, plan)
    history: list[SlimStep] = []
    skipped = list(plan.skipped)
    x_fit, x_val = x[validation_size:], x[:validation_size]
    merges = sorted(plan.merges, key=lambda m: KIND_ORDER.index(m.kind))
    exact = [m for m in merges if m.exact]
    learned = [m for m in merges if not m.exact]
    current = model
    if exact:
        start = time.time()
        current = apply_merges(current, exact)
        history += [
            SlimStep(m.name, m.kind, True, seconds=(time.time() - start) / len(exact))
            for m in exact
        ]
    applied = []
    for merge in learned:
        start = time.time()
        try:
            candidate = apply_merges(current, [merge])
        except (ValueError, KeyError) as e:
            skipped.append(Skip(merge.layers, f"{merge.name} not applied: {e}"))
            continue
        student_block, teacher_block = layerwise.block_models(
            candidate, teacher, block_output(current, merge), merge.layers[-1]
        )
        before = layerwise.reconstruction_error(student_block, teacher_block, x_val)
        initial = student_block.get_weights()
        layerwise.fit_block(
            student_block,
            teacher_block,
            _new_layers(candidate, merge),
            x_fit,
            epochs=layerwise_epochs,
            batch_size=batch_size,
            lr=lr,
            lr_multiplier=lr_multiplier,
            desc=merge.name,
        )
        after = layerwise.reconstruction_error(student_block, teacher_block, x_val)
        if after > before:  # e.g. a near-identity LRN dropped: the carried weights were better
            student_block.set_weights(initial)
            after = before
        history.append(SlimStep(merge.name, merge.kind, False, before, after, time.time() - start))
        current = candidate
        applied.append(merge)
    if current is model:
        current = keras.models.clone_model(model)
        current.set_weights(model.get_weights())
    if y is not None and finetune_epochs > 0 and applied:
        start = time.time()
        layerwise.finetune(
            current, teacher, np.asarray(x), np.asarray(y), finetune_epochs, batch_size, lr
        )
        history.append(SlimStep("fine-tune", "fine-tune", False, seconds=time.time() - start))
    return SlimResult(current, history, skipped)
