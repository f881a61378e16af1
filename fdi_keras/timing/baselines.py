"""Baseline time models the TimingTree is compared against (same rows, same objective)."""

from __future__ import annotations

import numpy as np

from fdi_keras.features import FEATURES, compute_features
from fdi_keras.specs import LayerSpec
from fdi_keras.timing.leaf import fit_nonnegative


class FlopsLinear:
    """Per kind, `t = a + b * FLOPs` with a, b >= 0: what FLOP-driven compressors assume."""

    def __init__(self):
        self.weights_: dict[str, np.ndarray] = {}

    @staticmethod
    def _x(specs):
        return np.array([[1.0, compute_features(s)["flops"]] for s in specs])

    def fit(self, specs: list[LayerSpec], times_us) -> FlopsLinear:
        times_us = np.asarray(times_us, dtype=float)
        for kind in {s.kind for s in specs}:
            idx = [i for i, s in enumerate(specs) if s.kind == kind]
            self.weights_[kind] = fit_nonnegative(self._x([specs[i] for i in idx]), times_us[idx])
        return self

    def predict(self, specs: list[LayerSpec]) -> np.ndarray:
        return np.array([float(self._x([s])[0] @ self.weights_[s.kind]) for s in specs])

    def as_tree(self, intercept: bool = True):
        """A depth-0 TimingTree whose only leaf per kind is this FLOPs model: the cost model of
        the FLOPs-driven ablation, usable wherever a TimingTree is.

        Args:
            intercept: keep each kernel's fixed cost. False: per-kind seconds per FLOP only,
                what a FLOP-budget compressor shrinks. Pruning channels removes no kernel, so
                with the intercepts (54% of MobileNetV2 a0.35's at 32 px) a halved cost can
                be out of reach and the compressor prunes every layer to its floor.
        """
        from fdi_keras.timing.growth import FlatTree
        from fdi_keras.timing.tree import TimingTree

        tree = TimingTree(max_depth=0, tiles=(1,))
        for kind, (fixed, per_flop) in self.weights_.items():
            flat = FlatTree()
            weights = np.zeros(len(FEATURES) + 1)  # [intercept, *FEATURES]
            weights[0] = fixed if intercept else 0.0
            weights[1 + FEATURES.index("flops")] = per_flop
            flat.add_leaf(weights.tolist(), 0)
            tree.kinds_[kind] = {
                "tile": 1,
                "in_tile": 1,
                "tree": flat,
                "rows": 0,
                "validation_mape": None,
            }
        tree.metadata_ = {"model": "FLOPs-linear"}
        return tree
