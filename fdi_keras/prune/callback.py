"""FastDeepIoTCallback: consult the timing tree every epoch and steer the gates toward a target."""

from __future__ import annotations

import warnings

import keras

from fdi_keras.prune.controller import StrengthController
from fdi_keras.prune.expansion import MIN_WIDTH_FRACTION, structural_step, width_floor
from fdi_keras.prune.regularizer import (
    LatencyRegularizer,
    channel_dependencies,
    predicted_us,
    wrappers,
)
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
    summary reports the epoch.

    Logs: `predicted_latency_ms`, `latency_strength` and `width_fraction` (alive channels over
    all gated layers' original channels) reach every callback's epoch `logs` (History,
    CSVLogger, TensorBoard), wherever this callback stands in the list: the epoch's step runs
    after its last training batch, before Keras builds the epoch's logs, and a summary metric
    this callback adds to the model puts the values there. The per-layer widths are kept out of
    the logs (and the progress bar): they are in `widths_history` (one dict per epoch), in
    `history`, and written as `width/<layer>` TensorBoard scalars when a default summary writer
    is set (`with tf.summary.create_file_writer(log_dir).as_default(): model.fit(...)`). With
    data of unknown length, the first epoch's step runs in `on_epoch_end`, so only callbacks
    listed after this one see that epoch's values; during an epoch the progress bar repeats
    the values from when the training step was compiled.

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
        strength: initial penalty strength (loss charged for the whole predicted latency);
            the default is `fdi_keras.compress.compress`'s, so both paths prune alike.
        adapt_rate: how fast the strength follows the relative gap g to the target: it is
            multiplied by exp(adapt_rate * g), g clipped to [-1, 1], at every control step.
        control_every: batches between two control steps within an epoch (0: per epoch only).
        expand: expand layers to nearby local minima of the predicted time.
        expand_window: how many extra channels (as a fraction of the width, at least 8)
            expansion looks at.
        expand_tolerance: a wider layer counts as "no slower" when the predicted time of the
            kernels its width drives grows by at most this fraction.
        enforce_target: reach `target_latency_ms` by the end of every fit, whatever the
            gates did: at the end of epoch k of n, a model still predicted over
            `start * (target / start) ** (k / n)` (start: the prediction when the fit began)
            has the rest closed in every layer alike, its least-open channels first
            (`expansion.prune_to_target`), before expansion and revival. Without it, a short
            fit can end far from the target, the gates having barely moved.
        min_width_fraction: no gate group ends an epoch with fewer alive channels than this
            fraction of its original ones (and its `min_channels`): channels the gates closed
            below it come back, most open first, and `enforce_target` stops there. A target
            below the prediction at that floor is missed, with a warning when the fit starts,
            rather than met by a model of one-channel layers; 0 lifts the floor.
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
        strength=1.0,
        adapt_rate=0.1,
        control_every=20,
        expand=True,
        expand_window=0.25,
        expand_tolerance=0.02,
        enforce_target=True,
        min_width_fraction=MIN_WIDTH_FRACTION,
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
        self.enforce_target = bool(enforce_target)
        if not 0 <= min_width_fraction < 1:
            raise ValueError(
                "min_width_fraction must be in [0, 1). Received: "
                f"min_width_fraction={min_width_fraction}"
            )
        self.min_width_fraction = float(min_width_fraction)
        self.verbose = verbose
        self._summary = None  # the model's LatencySummary, from on_train_begin

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
        self.widths_history = []
        self._epoch, self._steps_seen = 0, 0  # batches seen, for data of unknown length
        self._epoch_steps = None  # batches per epoch, learnt from the first such epoch
        self._stepped = False  # this epoch's structural step has run
        self._first_epoch = None  # the epoch this fit started at (initial_epoch)
        link_gate_groups(self.model.layers)  # again after a .keras load, which unlinks them
        for w in gated:
            w.controlled.assign(1.0)
        latency_us = self._recost()  # also checks every kind is in the tree
        self.initial_latency_ms = latency_us / 1000
        self._summary = LatencySummary.attach(self.model)
        self._summary.report(self._scalars(latency_us), active=True)
        if self.target_latency_ms is not None:
            floor = self._floor_latency_ms()
            if floor > self.target_latency_ms:
                warnings.warn(
                    f"target_latency_ms={self.target_latency_ms} is below the {floor:.3f} ms the "
                    "tree predicts with every gate group at its floor (min_width_fraction="
                    f"{self.min_width_fraction} of its channels, at least min_channels). "
                    "Pruning stops at that floor; lower min_width_fraction to go further, or "
                    "change the layers the floor leaves too slow.",
                    stacklevel=2,
                )

    def on_train_end(self, logs=None):
        for w in wrappers(self.model):
            w.controlled.assign(0.0)
        if self._summary is not None:
            self._summary.active = False  # evaluate() after fit is unchanged

    def on_test_begin(self, logs=None):
        if self._summary is not None:  # no val_predicted_latency_ms; evaluate() is unchanged
            self._training, self._summary.active = self._summary.active, False

    def on_test_end(self, logs=None):
        if self._summary is not None:
            self._summary.active = self._training

    def _floor_latency_ms(self) -> float:
        """The prediction with every gate group at its `width_floor`."""
        kernels, members = channel_dependencies(self.model, self.tree)
        floors = {
            root: width_floor(group, self.min_width_fraction) for root, group in members.items()
        }
        return predicted_us(self.tree, kernels, floors) / 1000

    def _recost(self, latency_us=None) -> float:
        """Re-reads the channel costs at the hard structure; anchors the expected latency;
        returns the structure's predicted microseconds."""
        latency_us = self.regularizer.update(self.model, latency_us)
        self.controller.anchor(self.model, latency_us)
        return latency_us

    def expected_latency_us(self) -> float:
        """What the gates are heading for (see `StrengthController.expected_latency_us`)."""
        return self.controller.expected_latency_us()

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
        self._epoch = epoch
        self._stepped = False
        self._steps_seen = 0

    def on_train_batch_end(self, batch, logs=None):
        if self.target_latency_ms and self.control_every and (batch + 1) % self.control_every == 0:
            self.controller.adapt(self.model, self.expected_latency_us())
        self._steps_seen = batch + 1
        steps = (self.params or {}).get("steps") or self._epoch_steps
        if steps and batch + 1 >= steps and not self._stepped:
            self._epoch_step(self._epoch)  # the last batch: Keras builds the epoch's logs next

    def on_epoch_end(self, epoch, logs=None):
        if not self._stepped:  # unknown length, training stopped early, or a custom loop
            self._epoch_step(epoch)
            if not (self.params or {}).get("steps"):
                self._epoch_steps = self._steps_seen or None
        if logs is not None:  # for callbacks after this one, e.g. in a custom loop
            logs.update(self._summary.values)

    def _scheduled_latency_us(self, epoch) -> float | None:
        """Where the prediction must be by the end of `epoch` (`enforce_target`)."""
        if self.target_latency_ms is None or not self.enforce_target:
            return None
        first = self._first_epoch if self._first_epoch is not None else epoch
        epochs = (self.params or {}).get("epochs") or epoch + 1
        progress = min(1.0, (epoch + 1 - first) / max(1, epochs - first))
        start, target = self.initial_latency_ms, self.target_latency_ms
        return 1000 * (target if start <= target else start * (target / start) ** progress)

    def _epoch_step(self, epoch) -> None:
        target_us = None if self.target_latency_ms is None else 1000 * self.target_latency_ms
        latency_us = structural_step(
            self.model,
            self.regularizer,
            target_us,
            self.expand,
            self.expand_window,
            self.expand_tolerance,
            enforce_us=self._scheduled_latency_us(epoch),
            min_width_fraction=self.min_width_fraction,
        )
        self.controller.adapt(self.model, latency_us)
        self._recost(latency_us)
        self._summarize(epoch, latency_us)
        self._stepped = True

    def _scalars(self, latency_us) -> dict[str, float]:
        gated = wrappers(self.model)
        alive = sum(float(w.alive.numpy().sum()) for w in gated)
        return {
            "predicted_latency_ms": latency_us / 1000,
            "latency_strength": float(self.controller.strength),
            "width_fraction": alive / sum(int(w.alive.shape[0]) for w in gated),
        }

    def _summarize(self, epoch, latency_us) -> None:
        """Reports the epoch's prediction, strength and widths: logs (through the summary
        metric), `history`, `widths_history`, TensorBoard and stdout."""
        widths = {w.layer.name: int(w.alive.numpy().sum()) for w in wrappers(self.model)}
        strength = self.controller.strength
        self._summary.report(self._scalars(latency_us))
        self.widths_history.append(widths)
        self.history.append(
            {
                "epoch": epoch,
                "predicted_latency_ms": latency_us / 1000,
                "strength": strength,
                "widths": widths,
            }
        )
        _write_width_summaries(widths, epoch)
        if self.verbose:
            target = f" (target {self.target_latency_ms:.3f})" if self.target_latency_ms else ""
            print(
                f"FastDeepIoT epoch {epoch + 1}: predicted {latency_us / 1000:.3f} ms{target}, "
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
            "enforce_target": self.enforce_target,
            "min_width_fraction": self.min_width_fraction,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "tree": TimingTree.from_dict(config["tree"])})


class LatencySummary(keras.metrics.Metric):
    """The callback's epoch scalars as a metric of the model, so that Keras puts them into the
    epoch's `logs` before any callback's `on_epoch_end` (callbacks run in list order, and a
    value a callback writes into `logs` reaches only the callbacks after it).

    Its result is a dict of plain floats (merged into the logs) while the callback trains, and
    empty otherwise (in `evaluate()` and validation). It holds no variables, is not reset
    between epochs and is never saved.
    """

    ATTRIBUTE = "fdi_latency_summary"

    def __init__(self, name="fdi_latency_summary"):
        super().__init__(name=name)
        self.values = {}
        self.active = False

    @classmethod
    def attach(cls, model) -> LatencySummary:
        """The model's summary metric; adds one (and recompiles the training step, which
        returns every metric's result) the first time."""
        summary = getattr(model, cls.ATTRIBUTE, None)
        if not isinstance(summary, cls):
            summary = cls()
            setattr(model, cls.ATTRIBUTE, summary)  # tracked: now in model.metrics
            if getattr(model, "train_function", None) is not None:
                model.make_train_function(force=True)  # its outputs gain the summary's keys
        return summary

    def report(self, values, active=None) -> None:
        self.values = dict(values)
        if active is not None:
            self.active = active

    def update_state(self, *args, **kwargs):
        pass

    def reset_state(self):
        pass  # Keras resets metrics every epoch; the values belong to the callback

    def result(self):
        return dict(self.values) if self.active else {}


def _write_width_summaries(widths, epoch) -> None:
    """`width/<layer>` TensorBoard scalars, when TensorFlow has a default summary writer."""
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    if tf.summary.should_record_summaries():
        for name, k in widths.items():
            tf.summary.scalar(f"width/{name}", k, step=epoch)
