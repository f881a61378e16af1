"""FastDeepIoTCallback: consult the timing tree every epoch and steer the gates toward a target."""

from __future__ import annotations

import warnings

import keras
import numpy as np

from fdi_keras.prune.controller import StrengthController
from fdi_keras.prune.expansion import structural_step
from fdi_keras.prune.regularizer import LatencyRegularizer, wrappers
from fdi_keras.prune.wrapper import link_gate_groups
from fdi_keras.timing.tree import TimingTree


class FastDeepIoTCallback(keras.callbacks.Callback):
    """Latency-steered structured pruning during `model.fit` (FastDeepIoT).

    Its jobs, each in a part of its own: every epoch, at the model's hard structure, the
    structural step (`expansion.structural_step`) removes channels whose gates closed, expands
    each layer to
    the widest nearby width the tree predicts to be no slower (the top of its stair), and gives
    channels back when pruning overshot the target; the controller (`StrengthController`)
    adapts the penalty strength so the predicted latency approaches `target_latency_ms`; the
    regularizer re-reads every layer's channel cost from the leaves it now falls in; and the
    summary writes `predicted_latency_ms`, `latency_strength` and `width/<layer>` into `logs`.

    The strength is kept on the model, so `fit()` called in chunks, or on a reloaded `.keras`
    model, continues from where it stopped. A gated model refuses to train without this
    callback (TensorFlow backend): the penalty it would add is stale. Gate groups share one
    gate variable (linked again at the start of training, e.g. after a reload), so no per-batch
    synchronization is needed.

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
        self.controller = StrengthController(
            self.regularizer, self.target_latency_ms, self.adapt_rate
        )
        self.controller.resume(self.model)  # a previous fit's (or a saved model's) strength
        self.history = []
        link_gate_groups(self.model.layers)  # again after a .keras load, which unlinks them
        for w in gated:
            w.controlled.assign(1.0)
        report = self._recost()  # also checks every kind is in the tree
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

    def on_train_end(self, logs=None):
        for w in wrappers(self.model):
            w.controlled.assign(0.0)

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

    def _recost(self, report=None):
        """Re-reads the channel costs at the hard structure; anchors the expected latency."""
        report = self.regularizer.update(self.model, report)
        self.controller.anchor(self.model, report)
        return report

    def expected_latency_us(self) -> float:
        """What the gates are heading for (see `StrengthController.expected_latency_us`)."""
        return self.controller.expected_latency_us(self.model)

    def on_train_batch_end(self, batch, logs=None):
        if self.target_latency_ms and self.control_every and (batch + 1) % self.control_every == 0:
            self.controller.adapt(self.model, self.expected_latency_us())

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        target_us = None if self.target_latency_ms is None else 1000 * self.target_latency_ms
        report = structural_step(
            self.model,
            self.regularizer,
            target_us,
            self.expand,
            self.expand_window,
            self.expand_tolerance,
        )
        self.controller.adapt(self.model, report.total_us)
        self._recost(report)
        self._summarize(epoch, report, logs)

    def _summarize(self, epoch, report, logs) -> None:
        """Writes the epoch's prediction, strength and widths to `logs`, `history`, stdout."""
        widths = {w.layer.name: int(w.alive.numpy().sum()) for w in wrappers(self.model)}
        strength = self.controller.strength
        logs["predicted_latency_ms"] = report.total_ms
        logs["latency_strength"] = strength
        logs.update({f"width/{name}": k for name, k in widths.items()})
        self.history.append(
            {
                "epoch": epoch,
                "predicted_latency_ms": report.total_ms,
                "strength": strength,
                "widths": widths,
            }
        )
        if self.verbose:
            target = f" (target {self.target_latency_ms:.3f})" if self.target_latency_ms else ""
            print(
                f"FastDeepIoT epoch {epoch + 1}: predicted {report.total_ms:.3f} ms{target}, "
                f"strength {strength:.3g}, widths "
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
