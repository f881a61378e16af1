"""The whole FastDeepIoT compression run: gate, fit with the callback, strip, fine-tune.

`compress` runs the recipe in one call; the Keras-native path (`latency_aware`, `fit` with
`FastDeepIoTCallback`, `strip`) reaches the same model when it ends with `finetune`, which is
the step `compress` runs after `strip`. Fine-tuning is part of the recipe: a stripped model that
is not fine-tuned can be many points less accurate.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import keras

from fdi_keras.distillation import check_distillable, fit_arguments
from fdi_keras.latency import predict_latency
from fdi_keras.prune import FastDeepIoTCallback, latency_aware, strip
from fdi_keras.timing.tree import TimingTree


class CosineAnnealing(keras.callbacks.Callback):
    """Anneals the optimizer's learning rate from its value to 0 along a cosine over the fit,
    so the fine-tuned model ends at a minimum rather than wherever the last step left it
    (with BatchNormalization, test accuracy can swing by several points between epochs). An
    optimizer built with a learning-rate schedule keeps its own.

    When the data's length is unknown (a generator), the first epoch runs at the initial rate
    and counts its batches; the cosine then runs over the remaining epochs' batches.
    """

    def on_train_begin(self, logs=None):
        rate = self.model.optimizer.learning_rate
        self.rate = rate if isinstance(rate, keras.Variable) else None
        self.base = float(keras.ops.convert_to_numpy(rate))
        self.epochs = self.params["epochs"]
        self.steps = self.params.get("steps")  # per epoch; None until the first epoch ends
        self.step = 0
        self.start = 0  # the step the cosine starts at

    def on_epoch_end(self, epoch, logs=None):
        if self.steps is None:
            self.steps, self.start = self.step, self.step

    def on_train_batch_begin(self, batch, logs=None):
        if self.rate is not None:
            if self.steps is not None:
                total = max(1, self.epochs * self.steps - self.start)
                progress = min((self.step - self.start) / total, 1.0)
                self.rate.assign(self.base * 0.5 * (1 + math.cos(math.pi * progress)))
            self.step += 1


def default_optimizer() -> keras.optimizers.Optimizer:
    """Adam at 1e-3: the optimizer `compress` trains and fine-tunes with (a new one each)."""
    return keras.optimizers.Adam(1e-3)


def finetune(
    model: keras.Model,
    x,
    y=None,
    epochs: int = 3,
    batch_size: int | None = 64,
    validation_data=None,
    optimizer=None,
    loss="sparse_categorical_crossentropy",
    callbacks=(),
    verbose: int = 0,
    teacher: keras.Model | None = None,
) -> keras.callbacks.History:
    """Fine-tunes a stripped model as `compress` does: compiled with a fresh optimizer (the
    gated model's Adam moments belong to other shapes), the learning rate annealed to 0 along
    a cosine over the fit (`CosineAnnealing`), distilling from `teacher` when one is given
    (the model is left compiled with `loss`, so `evaluate` and a saved file take labels).

    Args:
        model: the model `strip` returned (compiled again, in place).
        x, y: training data, as `model.fit` takes them (`y` None for a dataset).
        epochs: fine-tuning epochs (>= 1).
        batch_size: as in `model.fit` (ignored for a dataset).
        validation_data: as in `model.fit`.
        optimizer: a new optimizer (or its name); None: Adam at 1e-3.
        loss: the training loss.
        callbacks: more callbacks for the fit (after `CosineAnnealing`).
        verbose: `model.fit`'s verbosity.
        teacher: the model to distill from (`fdi_keras.distillation.Distillation`: the labels
            and the teacher's outputs at temperature 4, equally weighted); None: `loss` alone.

    Returns:
        The fit's `History`.

    Raises:
        ValueError: `epochs` is not an integer >= 1, or a teacher with a loss other than
            sparse categorical cross-entropy.

    Example:
        >>> small = fdi_keras.strip(gated)
        >>> finetune(small, x, y, epochs=3, teacher=trained)
    """
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(
            "epochs must be an integer >= 1 (skip the call for no fine-tuning). "
            f"Received: epochs={epochs}"
        )
    fit_x, fit_y, fit_validation, fit_loss, metrics = fit_arguments(
        model, teacher, loss, x, y, validation_data
    )
    model.compile(optimizer or default_optimizer(), fit_loss, metrics=metrics)
    history = model.fit(
        fit_x,
        fit_y,
        epochs=int(epochs),
        batch_size=batch_size,
        validation_data=fit_validation,
        callbacks=[CosineAnnealing(), *callbacks],
        verbose=verbose,
    )
    if teacher is not None:  # evaluate() and a saved file take plain labels again
        model.compile(model.optimizer, loss, metrics=["accuracy"])
    return history


@dataclasses.dataclass
class CompressionResult:
    """The compressed (stripped, fine-tuned) model and how it got there."""

    model: keras.Model
    predicted_ms_before: float
    predicted_ms_after: float
    epochs: int
    seconds: float
    epoch_log: list
    strip_history: list


def compress(
    model: keras.Model,
    tree: TimingTree,
    x,
    y,
    target_latency_ms: float,
    epochs: int = 10,
    finetune_epochs: int = 3,
    batch_size: int = 64,
    validation_data=None,
    gate: str = "hard_concrete",
    expand: bool = True,
    strength: float = 1.0,
    cost_tree: TimingTree | None = None,
    optimizer: Callable[[], keras.optimizers.Optimizer] = default_optimizer,
    loss="sparse_categorical_crossentropy",
    verbose: int = 0,
    distill: bool = True,
) -> CompressionResult:
    """Compresses a trained `model` toward `target_latency_ms` on the device of `tree`.

    Args:
        model: a trained functional/Sequential model (left untouched).
        tree: the device's timing tree; reported latencies are predicted with it.
        x, y: training data (the callback needs real gradients of the task loss).
        target_latency_ms: the latency to reach.
        epochs: epochs of latency-aware training; finetune_epochs: epochs of `finetune`
            after `strip` (a fresh optimizer, the learning rate annealed to 0 along a cosine).
        gate: gate formulation ("hard_concrete" or "straight_through").
        expand: expand layers to nearby local minima of the time staircase.
        strength: initial penalty strength.
        cost_tree: the cost model that steers pruning, when it is not `tree` (e.g. the
            FLOPs-linear ablation, `FlopsLinear.as_tree()`).
        optimizer: makes a new optimizer (called once for the gated fit, once for `finetune`).
        loss: the training loss.
        verbose: the callback's verbosity.
        distill: train the gated model and fine-tune the stripped one on `model`'s outputs
            as well as on the labels (`fdi_keras.distillation`; on CIFAR-10 MobileNetV2 at
            3x, distilling the gated phase too took 34.1% to 37.6%); needs the default loss
            and arrays or a tf.data dataset.
    """
    if distill:
        check_distillable(loss, x, y)  # before the gated fit, not after it
    start = time.time()
    before = predict_latency(model, tree).total_ms
    teacher = model if distill else None
    gated = latency_aware(model, gate=gate)
    fit_x, fit_y, fit_validation, fit_loss, metrics = fit_arguments(
        gated, teacher, loss, x, y, validation_data
    )
    gated.compile(optimizer(), fit_loss, metrics=metrics)
    callback = FastDeepIoTCallback(
        cost_tree or tree, target_latency_ms, strength=strength, expand=expand, verbose=verbose
    )
    gated.fit(
        fit_x,
        fit_y,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=fit_validation,
        callbacks=[callback],
        verbose=0,
    )
    small = strip(gated)
    if finetune_epochs:
        finetune(
            small, x, y, finetune_epochs, batch_size, validation_data, optimizer(), loss,
            teacher=teacher,
        )  # fmt: skip
    return CompressionResult(
        small,
        before,
        predict_latency(small, tree).total_ms,
        epochs + finetune_epochs,
        time.time() - start,
        callback.history,
        small.strip_history,
    )
