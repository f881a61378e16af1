"""Expansion to local minima: widen a layer while the tree predicts it gets no slower.

Execution time is a staircase in channel counts: inside a stair, more channels are free. After
the gates decide a layer's width, FastDeepIoT moves it to the top of its stair (the widest
nearby width predicted to be no slower), which keeps more accuracy for the same latency.
"""

from __future__ import annotations

import keras
import numpy as np

from fdi_keras.prune.gates import get_gate
from fdi_keras.prune.regularizer import channel_dependencies
from fdi_keras.timing.tree import TimingTree


def group_time(tree: TimingTree, kernels, root: str, width: int) -> float:
    """Predicted microseconds of the kernels depending on group `root` at `width` channels."""
    total = 0.0
    for spec, deps in kernels:
        changes = {dim: m * width for dim, r, m in deps if r == root}
        if changes:
            total += tree.predict_one(spec.replace(**changes))
    return total


def best_width(
    tree: TimingTree, kernels, root: str, width: int, limit: int, tolerance: float = 0.02
) -> int:
    """The widest width in [width, limit] predicted no slower than `width`, give or take
    `tolerance` (relative): within a stair of its own kernel, a layer's consumers still grow
    slightly with its width, which must not hide the stair."""
    now = group_time(tree, kernels, root, width)
    best = width
    for candidate in range(width + 1, limit + 1):
        if group_time(tree, kernels, root, candidate) <= now * (1 + tolerance):
            best = candidate
    return best


def expand_to_local_minima(
    model, tree: TimingTree, window: float = 0.25, tolerance: float = 0.02
) -> dict[str, tuple]:
    """Widens every gate group to the top of its stair; returns {root: (old, new width)}."""
    kernels, members = channel_dependencies(model)
    changes = {}
    for root, group in members.items():
        alive = group[0].alive.numpy()
        width = int(alive.sum())
        limit = min(len(alive), width + max(8, int(np.ceil(window * width))))
        target = best_width(tree, kernels, root, width, limit, tolerance)
        if target == width:
            continue
        logits = np.mean([keras.ops.convert_to_numpy(w.gate_logits) for w in group], axis=0)
        dead = np.flatnonzero(alive == 0)
        revive = dead[np.argsort(-logits[dead])][: target - width]  # most important first
        alive[revive] = 1.0
        formulation = get_gate(group[0].gate)
        logits[revive] = np.maximum(logits[revive], formulation.threshold + 1.0)
        for w in group:
            w.alive.assign(alive)
            w.set_gate_logits(logits)
        changes[root] = (width, target)
    return changes
