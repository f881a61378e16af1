"""Channel gate formulations: how a gate's logit becomes a (differentiable) open/closed gate.

Two are provided and compared in `benchmarks/compressors.py`:

- `hard_concrete` (Louizos, Welling, Kingma, ICLR 2018, "L0 regularization"): a stretched,
  clipped binary-concrete sample during training; the probability that a gate is open is a
  closed-form sigmoid of its logit, so the expected number of alive channels is differentiable.
  Gates are exactly 0 or 1 most of the time even during training, so the network learns to
  live without a closed channel before it is removed.
- `straight_through`: a hard 0/1 threshold of the logit in the forward pass with the gradient
  of `sigmoid(logit)` (a straight-through estimator), as in MorphNet-style gating; expected
  alive count is `sum(sigmoid(logit))`. Cheaper, deterministic, but biased.

In inference (and in `strip`) every gate is binary: a channel is alive or removed, which is what
makes a stripped model's outputs equal the gated model's.
"""

from __future__ import annotations

import math

import keras
from keras import ops


class HardConcrete:
    name = "hard_concrete"
    beta, gamma, zeta = 2.0 / 3.0, -0.1, 1.1
    # is_open <=> the deterministic gate clip(sigmoid(logit) * (zeta - gamma) + gamma) > 0.
    threshold = math.log(-gamma / zeta)  # logit above which the deterministic gate is open
    open_offset = beta * threshold  # P(open) = sigmoid(logit - open_offset)

    uses_noise = True

    def sample_noise(self, shape, seed):
        """The uniform noise of one training step (shared by the members of a gate group)."""
        return keras.random.uniform(shape, 1e-6, 1.0 - 1e-6, seed=seed)

    def train_gate(self, logits, noise):
        u = noise
        s = ops.sigmoid((ops.log(u) - ops.log(1.0 - u) + logits) / self.beta)
        return ops.clip(s * (self.zeta - self.gamma) + self.gamma, 0.0, 1.0)

    def open_probability(self, logits):
        return ops.sigmoid(logits - self.open_offset)

    def is_open(self, logits):
        return ops.cast(logits > self.threshold, "float32")


class StraightThrough:
    name = "straight_through"
    threshold = 0.0
    open_offset = 0.0  # P(open) = sigmoid(logit)

    uses_noise = False

    def sample_noise(self, shape, seed):
        return None

    def train_gate(self, logits, noise):
        soft = ops.sigmoid(logits)
        hard = ops.cast(logits > 0.0, logits.dtype)
        return hard + soft - ops.stop_gradient(soft)

    def open_probability(self, logits):
        return ops.sigmoid(logits - self.open_offset)

    def is_open(self, logits):
        return ops.cast(logits > 0.0, "float32")


GATES = {g.name: g for g in (HardConcrete(), StraightThrough())}


def get_gate(name: str):
    if name not in GATES:
        raise ValueError(
            f"Unknown gate formulation. Expected one of {sorted(GATES)}. Received: gate={name!r}"
        )
    return GATES[name]
