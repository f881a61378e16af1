"""The penalty-strength controller: steers the predicted latency of a gated model to a target.

The strength lives on the model (every `LatencyAware`'s `penalty_scale`), so it survives
`fit()` called in chunks and a `.keras` save/load: a controller resumes from it. Between two
hard predictions (once per epoch), the *expected* latency — the last prediction moved by each
layer's channel cost times the change of its expected alive channels since — is what the
gates are heading for, and the strength follows its gap to the target every few batches.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from fdi_keras.prune.regularizer import LatencyRegularizer, wrappers


class StrengthController:
    """Adapts `regularizer.strength` so that the predicted latency approaches a target.

    Args:
        regularizer: the `LatencyRegularizer` whose strength is steered.
        target_latency_ms: the latency to reach; None keeps the strength as it is.
        adapt_rate: the strength is multiplied by exp(adapt_rate * g) at every step, g the
            relative gap to the target clipped to [-1, 1].
    """

    def __init__(self, regularizer: LatencyRegularizer, target_latency_ms, adapt_rate=0.1):
        self.regularizer = regularizer
        self.target_latency_ms = target_latency_ms
        self.adapt_rate = float(adapt_rate)
        self._anchor_us = 0.0
        # Per wrapper: (wrapper, channel cost, alive mask, expected alive channels) at the anchor.
        self._anchored: list[tuple] = []

    @property
    def strength(self) -> float:
        return self.regularizer.strength

    def resume(self, model) -> None:
        """Continues from the strength a previous fit left on `model` (0: a fresh model)."""
        scales = [float(keras.ops.convert_to_numpy(w.penalty_scale)) for w in wrappers(model)]
        if scales and max(scales) > 0:
            self.regularizer.strength = max(scales)

    def anchor(self, model, latency_us: float) -> None:
        """Remembers the hard prediction, and the channel costs, alive masks and expected alive
        channels it was made at (costs and masks change only where the callback anchors
        again: between two anchors a control step reads the gates alone)."""
        self._anchor_us = latency_us
        self._anchored = []
        for w in wrappers(model):
            alive = keras.ops.convert_to_numpy(w.alive)
            cost = float(keras.ops.convert_to_numpy(w.channel_cost))
            self._anchored.append((w, cost, alive, w.expected_alive_now(alive)))

    def expected_latency_us(self) -> float:
        """The anchored prediction moved, linearly in the leaves it used, by the change of
        every layer's expected alive channels since."""
        moved = sum(
            cost * (w.expected_alive_now(alive) - before)
            for w, cost, alive, before in self._anchored
        )
        return self._anchor_us * (1.0 + moved)

    def adapt(self, model, latency_us: float) -> None:
        """One control step towards the target from `latency_us` (no-op without a target)."""
        if self.target_latency_ms is None:
            return
        target_us = 1000 * self.target_latency_ms
        gap = float(np.clip((latency_us - target_us) / target_us, -1, 1))
        self.regularizer.strength *= math.exp(self.adapt_rate * gap)
        for w in wrappers(model):
            w.penalty_scale.assign(self.regularizer.strength)
