"""slim(model, x, y, plan): apply a slimming plan, learning the merged layers layer by layer."""

from __future__ import annotations

import dataclasses
import time
import typing

import keras
import numpy as np

from fdi_keras.rebirth import layerwise
from fdi_keras.rebirth.patterns import Skip
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
    the output of an earlier `slim`. `plan` defaults to `fdi_keras.rebirth.plan(model, tree)`.

    Example:
        >>> p = fdi_keras.rebirth.plan(model, tree).select(min_saving_ms=0.0)
        >>> small, history, skipped = fdi_keras.rebirth.slim(model, x, y, p)
    """
    teacher = teacher or model
    plan = make_plan(model, tree) if plan is None else plan
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
