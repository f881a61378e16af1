"""FastDeepIoTCallback: consult the timing tree every epoch and steer the gates toward a target."""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np

from fdi_keras.prune.expansion import expand_to_local_minima, revive_to_target
from fdi_keras.prune.regularizer import LatencyRegularizer, wrappers
from fdi_keras.timing.tree import TimingTree


class FastDeepIoTCallback(keras.callbacks.Callback):
    """Latency-steered structured pruning during `model.fit` (FastDeepIoT).

    Every epoch, at the model's current hard structure, it: ties the gates of each group;
    removes channels whose gates closed; expands each layer to the widest nearby width the tree
    predicts to be no slower (the top of its current stair), reviving the pruned channels with
    the highest gate logits; when pruning overshot the target (gates close in bursts within an
    epoch), gives channels back, cheapest first, while the model stays under the target;
    predicts the latency; adapts the penalty strength so the predicted
    latency approaches `target_latency_ms`; and re-reads every layer's channel cost from the
    leaves it now falls in. It writes `predicted_latency_ms`, `latency_strength` and
    `width/<layer>` into `logs`.

    Within an epoch, every `control_every` batches, it also adapts the strength to the
    *expected* latency: the last prediction moved by each layer's channel cost times the change
    of its expected alive channels since. Gates respond to the strength within a few hundred
    steps, so steering per epoch alone reaches a target only after many epochs on hard tasks;
    this feedback reaches it within the first epochs whatever the dataset's size.

    Args:
        tree: the device's `TimingTree` (or a path to its JSON).
        target_latency_ms: latency to reach; None just penalizes latency at `strength`.
        strength: initial penalty strength (loss charged for the whole predicted latency).
        adapt_rate: how fast the strength follows the relative gap g to the target: it is
            multiplied by exp(adapt_rate * g), g clipped to [-1, 1], at every control step.
        control_every: batches between two control steps within an epoch (0: per epoch only).
        expand: expand layers to nearby local minima of the predicted time.
        expand_window: how many extra channels (as a fraction of the width, at least 8)
            expansion looks at.
        expand_tolerance: a wider layer counts as "no slower" when the predicted time of the
            kernels its width drives grows by at most this fraction.
        verbose: print one line per epoch.

    Example:
        >>> gated = fdi_keras.latency_aware(model)
        >>> gated.compile(...)
        >>> gated.fit(x, y, epochs=20, callbacks=[FastDeepIoTCallback(tree, target_latency_ms=2.0)])
        >>> small = fdi_keras.strip(gated)
    """

    def __init__(
        self,
        tree,
        target_latency_ms=None,
        strength=0.1,
        adapt_rate=0.1,
        control_every=20,
        expand=True,
        expand_window=0.25,
        expand_tolerance=0.02,
        verbose=1,
    ):
        super().__init__()
        if target_latency_ms is not None and target_latency_ms <= 0:
            raise ValueError(
                f"target_latency_ms must be positive or None. Received: "
                f"target_latency_ms={target_latency_ms}"
            )
        self.tree = TimingTree.load(tree) if isinstance(tree, str) else tree
        self.target_latency_ms = target_latency_ms
        self.initial_strength = float(strength)
        self.adapt_rate = float(adapt_rate)
        if int(control_every) != control_every or control_every < 0:
            raise ValueError(
                f"control_every must be an integer >= 0. Received: control_every={control_every}"
            )
        self.control_every = int(control_every)
        self.expand = bool(expand)
        self.expand_window = float(expand_window)
        self.expand_tolerance = float(expand_tolerance)
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        gated = wrappers(self.model)
        if not gated:
            raise ValueError(
                "FastDeepIoTCallback found no LatencyAware layers in the model. Wrap "
                "it first: model = fdi_keras.latency_aware(model)."
            )
        self.regularizer = LatencyRegularizer(self.tree, self.initial_strength)
        self.history = []
        groups: dict[str, list] = {}
        for w in gated:
            if w.group is not None:
                groups.setdefault(w.group, []).append(w)
        self._groups = list(groups.values())
        self._tie_groups()
        report = self._update()  # also checks every kind is in the tree
        self.initial_latency_ms = report.total_ms
        if self.target_latency_ms is not None:
            floor = self._floor_latency_ms()
            if floor > self.target_latency_ms:
                warnings.warn(
                    f"target_latency_ms={self.target_latency_ms} is below the {floor:.3f} ms the "
                    "tree predicts with every prunable layer at min_channels; the unprunable "
                    "layers alone are slower. Pruning will go as far as it can.",
                    stacklevel=2,
                )

    def _floor_latency_ms(self) -> float:
        saved = [
            (w, w.alive.numpy().copy(), keras.ops.convert_to_numpy(w.gate_logits).copy())
            for w in wrappers(self.model)
        ]
        for w, alive, logits in saved:
            keep = np.zeros_like(alive)
            keep[np.argsort(-logits)[: w.min_channels]] = 1.0
            w.alive.assign(keep)
        floor = self.regularizer.predict(self.model).total_ms
        for w, alive, _ in saved:
            w.alive.assign(alive)
        return floor

    def _tie_groups(self):
        """Gives every member of a gate group the group's mean logits and common alive set."""
        for members in self._groups:
            logits = np.mean([keras.ops.convert_to_numpy(w.gate_logits) for w in members], axis=0)
            alive = np.min([w.alive.numpy() for w in members], axis=0)
            for w in members:
                w.set_gate_logits(logits)
                w.alive.assign(alive)

    def _update(self, report=None):
        """Re-reads the channel costs at the hard structure; anchors the expected latency."""
        report = self.regularizer.update(self.model, report)
        self._anchor_us = report.total_us
        self._anchor_alive = [float(w.expected_alive()) for w in wrappers(self.model)]
        return report

    def expected_latency_us(self) -> float:
        """The last prediction moved, linearly in the leaves it used, by the change of every
        layer's expected alive channels since: what the gates are heading for."""
        moved = sum(
            float(w.channel_cost) * (float(w.expected_alive()) - alive)
            for w, alive in zip(wrappers(self.model), self._anchor_alive)
        )
        return self._anchor_us * (1.0 + moved)

    def _adapt(self, latency_us: float) -> None:
        """Multiplies the strength by exp(adapt_rate * gap to the target) on every wrapper."""
        target_us = 1000 * self.target_latency_ms
        gap = float(np.clip((latency_us - target_us) / target_us, -1, 1))
        self.regularizer.strength *= math.exp(self.adapt_rate * gap)
        for w in wrappers(self.model):
            w.penalty_scale.assign(self.regularizer.strength)

    def on_train_batch_end(self, batch, logs=None):
        if self._groups:  # layers joined by Add must keep identical gates
            self._tie_groups()
        if self.target_latency_ms and self.control_every and (batch + 1) % self.control_every == 0:
            self._adapt(self.expected_latency_us())

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        self._tie_groups()
        for w in wrappers(self.model):  # closed gates: the channel is removed for good
            w.alive.assign(w.mask().astype("float32"))
        if self.expand:
            expand_to_local_minima(self.model, self.tree, self.expand_window, self.expand_tolerance)
        report = self.regularizer.predict(self.model)
        target_us = None if self.target_latency_ms is None else 1000 * self.target_latency_ms
        if target_us is not None and report.total_us < target_us:
            if revive_to_target(self.model, self.tree, target_us, report.total_us):
                report = self.regularizer.predict(self.model)
        if self.target_latency_ms is not None:
            self._adapt(report.total_us)
        self._update(report)
        widths = {w.layer.name: int(w.alive.numpy().sum()) for w in wrappers(self.model)}
        logs["predicted_latency_ms"] = report.total_ms
        logs["latency_strength"] = self.regularizer.strength
        logs.update({f"width/{name}": k for name, k in widths.items()})
        self.history.append(
            {
                "epoch": epoch,
                "predicted_latency_ms": report.total_ms,
                "strength": self.regularizer.strength,
                "widths": widths,
            }
        )
        if self.verbose:
            target = f" (target {self.target_latency_ms:.3f})" if self.target_latency_ms else ""
            print(
                f"FastDeepIoT epoch {epoch + 1}: predicted {report.total_ms:.3f} ms{target}, "
                f"strength {self.regularizer.strength:.3g}, widths "
                + " ".join(f"{n}={k}" for n, k in widths.items())
            )

    def get_config(self):
        return {
            "tree": self.tree.to_dict(),
            "target_latency_ms": self.target_latency_ms,
            "strength": self.initial_strength,
            "adapt_rate": self.adapt_rate,
            "control_every": self.control_every,
            "expand": self.expand,
            "expand_window": self.expand_window,
            "expand_tolerance": self.expand_tolerance,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "tree": TimingTree.from_dict(config["tree"])})
