"""plan(model, tree): every slimmable pattern of a model, with the time each merge saves."""

from __future__ import annotations

import dataclasses
import json

import keras

from fdi_keras.graph import trace
from fdi_keras.rebirth.patterns import (
    Merge,
    Skip,
    find_branches,
    find_reductions,
    find_streamlines,
)
from fdi_keras.rebirth.transforms import KIND_ORDER, apply_merges

NEED_FOLDS = ("branch", "reduction")  # found on the BN-folded graph


@dataclasses.dataclass
class Plan:
    """The merges `slim` will apply (in kind order) and the near-patterns it will not."""

    merges: list[Merge]
    skipped: list[Skip] = dataclasses.field(default_factory=list)

    def select(self, kinds=None, names=None, min_saving_ms=None) -> Plan:
        """The merges of the given kinds / names, predicted to save at least `min_saving_ms`
        (merges without a prediction, such as exact BN folds, are kept). A branch merge keeps
        the BN folds of its module (a reduction those of its two convolutions), which it
        needs."""
        chosen = [
            m
            for m in self.merges
            if (kinds is None or m.kind in kinds)
            and (names is None or m.name in names)
            and (
                min_saving_ms is None
                or m.kind == "fold_bn"
                or (m.predicted_saving_ms or 0.0) >= min_saving_ms
            )
        ]
        needed = {n for m in chosen if m.kind in NEED_FOLDS for n in m.layers}
        for m in self.merges:
            if m.kind == "fold_bn" and m not in chosen and m.layers[0] in needed:
                chosen.append(m)
        return Plan(sorted(chosen, key=self.merges.index), self.skipped)

    def __bool__(self) -> bool:
        return bool(self.merges)

    def __str__(self) -> str:
        if not self.merges:
            lines = ["No slimmable pattern found."]
        else:
            lines = [f"{'merge':<10} {'exact':<5} {'saves_ms':>9}  what"]
            for m in self.merges:
                saving = "" if m.predicted_saving_ms is None else f"{m.predicted_saving_ms:.3f}"
                exact = "yes" if m.exact else "no"
                lines.append(f"{m.kind:<10} {exact:<5} {saving:>9}  {m.detail}")
        lines += [f"skipped: {s.reason}" for s in self.skipped]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        return cls([Merge(**m) for m in data["merges"]], [Skip(**s) for s in data["skipped"]])


def plan(model: keras.Model, tree=None) -> Plan:
    """Finds every slimmable pattern of `model`; with a `TimingTree`, each merge's
    `predicted_saving_ms` is the model's predicted latency minus the latency predicted with
    that merge alone applied (BN folds save nothing: the TFLite converter folds BN anyway).

    Example:
        >>> p = fdi_keras.rebirth.plan(model, tree)
        >>> print(p)                        # one row per merge, then what was skipped and why
        >>> p = p.select(min_saving_ms=0.01)
    """
    model = trace(model).model  # nested models inlined
    streamlines, skipped = find_streamlines(model)
    folds = [m for m in streamlines if m.kind == "fold_bn"]
    folded = apply_merges(model, folds) if folds else model
    branches, branch_skips = find_branches(folded)
    branches += find_reductions(folded)
    fold_of = {m.layers[0]: m for m in folds}
    for b in branches:
        b_folds = [fold_of[n] for n in b.layers if n in fold_of]
        n = len(b_folds)
        b.detail += f" (needs {n} BN fold{'s' if n > 1 else ''})" if n else ""
    merges = sorted(streamlines + branches, key=lambda m: KIND_ORDER.index(m.kind))
    if tree is not None:
        merges, failed = _predict_savings(model, merges, fold_of, tree)
        skipped += failed
    return Plan(merges, skipped + branch_skips)


def _predict_savings(model, merges, fold_of, tree):
    from fdi_keras.latency import predict_latency

    """Sets each merge's predicted saving; returns (the merges, Skips of those that cannot be
    applied or predicted, with the reason)."""
    base = predict_latency(model, tree).total_ms
    kept, failed = [], []
    for m in merges:
        if m.kind == "fold_bn":
            m.predicted_saving_ms = 0.0
            kept.append(m)
            continue
        needed = [fold_of[n] for n in m.layers if n in fold_of] if m.kind in NEED_FOLDS else []
        try:
            after = predict_latency(apply_merges(model, needed + [m]), tree).total_ms
        except (ValueError, KeyError) as e:  # UnsupportedLayerError, MissingKindError
            failed.append(Skip(m.layers, f"{m.name} cannot be applied or predicted: {e}"))
            continue
        m.predicted_saving_ms = base - after
        kept.append(m)
    return kept, failed
