"""Expansion to local minima: widen a layer while the tree predicts it gets no slower.

Execution time is a staircase in channel counts: inside a stair, more channels are free. After
the gates decide a layer's width, FastDeepIoT moves it to the top of its stair (the widest
nearby width predicted to be no slower), which keeps more accuracy for the same latency.
"""

from __future__ import annotations

import numpy as np

from fdi_keras.features import weight_bytes
from fdi_keras.prune.gates import get_gate
from fdi_keras.prune.regularizer import (
    channel_dependencies,
    gate_groups,
    kernels_at,
    movable,
    predicted_us,
)
from fdi_keras.prune.regularizer import wrappers as regularizer_wrappers
from fdi_keras.timing.tree import TimingTree

# The fewest channels a gate group keeps, as a fraction of its original channels (as
# Torch-Pruning's `max_pruning_ratio` of 0.9): a layer of one or two channels starves the
# network, so a target reachable only that way is one the model cannot meet; pruning stops at
# this floor instead (the callback warns when it starts).
MIN_WIDTH_FRACTION = 0.1


def width_floor(
    group, min_width_fraction: float = MIN_WIDTH_FRACTION, channels: int | None = None
) -> int:
    """The fewest alive channels a gate group (its wrappers) may keep: `min_width_fraction` of
    its original channels, and at least each wrapper's `min_channels`. `channels`: what
    "original" counts when the group's layers are themselves a pruned model's (a floor above
    the channels the group has is lowered to them)."""
    fraction = int(np.ceil(min_width_fraction * (channels or group[0].channels)))
    return min(group[0].channels, max(fraction, *(w.min_channels for w in group)))


def group_time(
    tree: TimingTree, kernels, root: str, width: int, model_bytes: float | None = None
) -> float:
    """Predicted microseconds of the kernels depending on group `root` at `width` channels,
    inside a model of `model_bytes` weight bytes (default: the model `kernels` make now)."""
    if model_bytes is None:
        model_bytes = weight_bytes(spec for spec, _ in kernels)
    total = 0.0
    for spec, deps in kernels:
        changes = {d.dim: d.value(width) for d in deps if d.root == root}
        if changes:
            total += tree.kernel_in_model(spec.replace(**changes), "min", model_bytes)
    return total


def best_width(
    tree: TimingTree,
    kernels,
    root: str,
    width: int,
    limit: int,
    tolerance: float = 0.02,
    model_bytes: float | None = None,
) -> int:
    """The widest width in [width, limit] predicted no slower than `width`, give or take
    `tolerance` (relative): within a stair of its own kernel, a layer's consumers still grow
    slightly with its width, which must not hide the stair. Whether the model's weights stay
    in cache is judged at `width` (the composition term's step is not a stair to climb);
    `model_bytes`: the model's weight bytes now, when the caller has them."""
    if model_bytes is None:
        model_bytes = weight_bytes(spec for spec, _ in kernels)
    now = group_time(tree, kernels, root, width, model_bytes)
    best = width
    for candidate in range(width + 1, limit + 1):
        if group_time(tree, kernels, root, candidate, model_bytes) <= now * (1 + tolerance):
            best = candidate
    return best


def expand_to_local_minima(
    model, tree: TimingTree, window: float = 0.25, tolerance: float = 0.02
) -> dict[str, tuple]:
    """Widens every gate group to the top of its stair; returns {root: (old, new width)}."""
    kernels, members = channel_dependencies(model, tree)
    model_bytes = weight_bytes(spec for spec, _ in kernels)
    changes = {}
    for root, group in members.items():
        alive = group[0].alive.numpy()
        width = int(alive.sum())
        limit = min(len(alive), width + max(8, int(np.ceil(window * width))))
        target = best_width(tree, kernels, root, width, limit, tolerance, model_bytes)
        if target == width:
            continue
        _revive(group, target - width)
        changes[root] = (width, target)
    return changes


def revive_to_target(
    model, tree: TimingTree, target_us: float, total_us: float, step: float = 0.1
) -> dict[str, tuple]:
    """Gates close in bursts within an epoch, so pruning can overshoot a latency target. Gives
    channels back, cheapest predicted time per channel first, while the model stays predicted
    under `target_us`; returns {root: (old, new width)}. A group's step is `step` of its width,
    halved down to one channel when the full step does not fit: a wide layer's full step can
    cross two stairs where the budget pays for one (640 units at 288: the step of 29 ends past
    304, the top of the next stair of 16).

    Every epoch of a fit near its target runs this, so the kernels are derived once and moved
    to each new set of widths (`kernels_at`), not derived again per revived step, and each
    group's gates change once, at the end (every revived channel then gets the revival logit
    of the group as it was); only a model whose kernels do not move exactly (`movable`) is
    revived and derived again after each step."""
    kernels, members = channel_dependencies(model, tree)
    exact_moves = movable(kernels)
    widths = {root: int(group[0].alive.numpy().sum()) for root, group in members.items()}
    channels = {root: group[0].channels for root, group in members.items()}
    changes = {}
    while True:
        now = kernels_at(kernels, widths)
        model_bytes = weight_bytes(spec for spec, _ in now)
        best = None
        for root, width in widths.items():
            dead = channels[root] - width
            if not dead:
                continue
            here = group_time(tree, now, root, width, model_bytes)
            more = min(dead, max(1, int(np.ceil(step * width))))
            while more:
                cost = group_time(tree, now, root, width + more, model_bytes) - here
                if total_us + cost <= target_us:
                    if best is None or cost / more < best[0]:
                        best = (cost / more, root, more, cost)
                    break
                more //= 2
        if best is None:
            break
        _, root, more, cost = best
        changes[root] = (changes.get(root, (widths[root],))[0], widths[root] + more)
        widths[root] += more
        total_us += cost
        if not exact_moves:
            _revive(members[root], more)
            kernels, members = channel_dependencies(model, tree)
    if exact_moves:
        for root, (old, new) in changes.items():
            _revive(members[root], new - old)
    return changes


def prune_to_target(
    model, tree: TimingTree, target_us: float, min_width_fraction: float = MIN_WIDTH_FRACTION
) -> dict[str, tuple]:
    """Closes what the gates have not closed yet when the model is predicted over `target_us`:
    every group keeps the same fraction of its alive channels (at least its `width_floor`),
    those with the highest gate logits, the largest fraction (bisection) predicted within
    the target. Uniform, because after a short gated training the logits rank channels
    within a layer better than they compare layers (gates pushed to decide alone cut a
    residual net's streams, its costliest channels, to the floor: docs/pruning.md); expansion
    and `revive_to_target` then move each layer along the tree's staircase. Returns
    {root: (old, new width)}."""
    kernels, members = channel_dependencies(model, tree)
    widths = {root: int(group[0].alive.numpy().sum()) for root, group in members.items()}
    floor = {root: width_floor(group, min_width_fraction) for root, group in members.items()}

    def kept(fraction):
        return {r: min(n, max(floor[r], int(np.ceil(fraction * n)))) for r, n in widths.items()}

    if predicted_us(tree, kernels, widths) <= target_us:
        return {}
    lo, hi = 0.0, 1.0
    for _ in range(16):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if predicted_us(tree, kernels, kept(mid)) <= target_us else (lo, mid)
    changes = {}
    for root, width in kept(lo).items():
        if width < widths[root]:
            _close(members[root], widths[root] - width)
            changes[root] = (widths[root], width)
    return changes


def _close(group, count: int) -> None:
    """Removes the `count` alive channels of a group with the lowest gate logits."""
    alive = group[0].alive.numpy()
    logits = np.mean([w.host_logits() for w in group], axis=0)
    living = np.flatnonzero(alive > 0)
    alive[living[np.argsort(logits[living])][:count]] = 0.0
    for w in group:
        w.alive.assign(alive)


# Logits a revived channel gets above its gate's threshold, at least. Adam moves a logit by
# about `learning_rate * logit_scale` per step (0.03 at 1e-3), so this is ~70 steps of penalty.
REVIVE_MARGIN = 2.0


def revived_logit(logits, alive, threshold: float) -> float:
    """The logit a revived channel gets: the median of the group's open channels (those the
    penalty has not closed, at their equilibrium with the task loss), and at least
    `REVIVE_MARGIN` above the threshold. Just above the threshold, the next steps' penalty
    would close it again before its weights (frozen while it was pruned) could learn."""
    is_open = (alive > 0) & (logits > threshold)
    median = float(np.median(logits[is_open])) if is_open.any() else -np.inf
    return max(median, threshold + REVIVE_MARGIN)


def _revive(group, count: int) -> None:
    """Brings back the `count` pruned channels of a group with the highest gate logits, at
    `revived_logit` (or their own logit, when higher). An alive channel whose gate is closed
    (kept by `min_channels` alone) is opened at that logit too, so that the mask keeps every
    alive channel."""
    alive = group[0].alive.numpy()
    logits = np.mean([w.host_logits() for w in group], axis=0)
    dead = np.flatnonzero(alive == 0)
    revive = dead[np.argsort(-logits[dead])][:count]
    threshold = get_gate(group[0].gate).threshold
    level = revived_logit(logits, alive, threshold)
    alive[revive] = 1.0
    logits[revive] = np.maximum(logits[revive], level)
    logits[(alive > 0) & (logits <= threshold)] = level
    for w in group:
        w.alive.assign(alive)
        w.set_gate_logits(logits)


def revive_to_floor(model, min_width_fraction: float = MIN_WIDTH_FRACTION) -> dict[str, tuple]:
    """Gives every gate group below its `width_floor` its most open closed channels back;
    returns {root: (old, new width)}."""
    changes = {}
    for root, group in gate_groups(model).items():
        width, floor = int(group[0].alive.numpy().sum()), width_floor(group, min_width_fraction)
        if width < floor:
            _revive(group, floor - width)
            changes[root] = (width, floor)
    return changes


def structural_step(
    model,
    regularizer,
    target_us=None,
    expand=True,
    window=0.25,
    tolerance=0.02,
    enforce_us=None,
    min_width_fraction=MIN_WIDTH_FRACTION,
):
    """The epoch-end structural step of FastDeepIoT, at the model's hard structure: channels
    whose gates closed are removed for good, down to each group's `width_floor`
    (`revive_to_floor`); when the model is still predicted over
    `enforce_us` (this epoch's point on the way to the target), the rest is closed by
    `prune_to_target`; each layer is expanded to the top of its stair
    (`expand_to_local_minima`); when pruning overshot `target_us` (gates close in bursts),
    channels are given back, cheapest first, while the model stays under it. Returns the
    resulting structure's predicted microseconds (`LatencyRegularizer.predict_us`)."""
    for w in regularizer_wrappers(model):
        w.alive.assign(w.mask().astype("float32"))
    revive_to_floor(model, min_width_fraction)
    if enforce_us is not None:
        prune_to_target(model, regularizer.tree, enforce_us, min_width_fraction)
    if expand:
        expand_to_local_minima(model, regularizer.tree, window, tolerance)
    latency_us = regularizer.predict_us(model)
    if target_us is not None and latency_us < target_us:
        if revive_to_target(model, regularizer.tree, target_us, latency_us):
            latency_us = regularizer.predict_us(model)
    return latency_us
