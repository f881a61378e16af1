"""tools/compress.py end to end on a slice of MNIST (real training, conversion and LiteRT)."""

import inspect
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from prune_helpers import lenet

from fdi_keras import FastDeepIoTCallback, predict_latency
from fdi_keras.prune.regularizer import wrappers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import compress as compress_tool  # noqa: E402


def test_compress_tool_writes_a_smaller_model_and_its_report(tmp_path, staircase_tree, mnist_slice):
    x, y = mnist_slice
    model = lenet()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    model_path, tree_path = str(tmp_path / "in.keras"), str(tmp_path / "tree.json")
    data_path = str(tmp_path / "data.npz")
    model.save(model_path)
    staircase_tree.save(tree_path)
    raw = (x[..., 0] * 255).astype("uint8")  # as the .npz files store images
    np.savez(data_path, x_train=raw[:384], y_train=y[:384], x_test=raw[384:], y_test=y[384:])
    target = predict_latency(model, staircase_tree).total_ms / 2
    out = str(tmp_path / "out")
    report = compress_tool.run(
        model_path,
        tree_path,
        data_path,
        target,
        epochs=4,
        finetune_epochs=1,
        out_dir=out,
        batch_size=8,
    )
    assert set(os.listdir(out)) >= {"compressed.keras", "compressed.tflite", "report.json"}
    small = keras.models.load_model(os.path.join(out, "compressed.keras"))
    assert small.count_params() < model.count_params()
    assert report["predicted_ms"]["compressed"] < report["predicted_ms"]["input"]
    assert report["measured_ms"]["compressed"] > 0 and 0 <= report["accuracy"]["compressed"] <= 1
    assert len(report["epoch_log"]) == 4


def test_fine_tuning_anneals_the_learning_rate_to_zero_unless_scheduled(mnist_slice):
    from fdi_keras.compress import CosineAnnealing

    x, y = mnist_slice[0][:64], mnist_slice[1][:64]
    rates = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: rates.append(float(model.optimizer.learning_rate))
    )
    model = lenet()
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=16, callbacks=[CosineAnnealing(), record], verbose=0)
    assert rates[0] == np.float32(1e-3) and np.all(np.diff(rates) < 0) and rates[-1] < 2e-4
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 1, 0.5)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[CosineAnnealing()], verbose=0)
    steps = int(model.optimizer.iterations)
    assert float(model.optimizer.learning_rate) == np.float32(1e-3 * 0.5**steps)  # untouched


def test_annealing_without_a_known_length_spreads_over_the_real_steps(mnist_slice):
    """A generator has no length: the rate must not reach 0 after `epochs` batches."""
    from fdi_keras.compress import CosineAnnealing

    x, y = mnist_slice[0][:64], mnist_slice[1][:64]

    def batches():
        while True:
            for i in range(0, 64, 16):
                yield x[i : i + 16], y[i : i + 16]

    rates = []
    model = lenet()
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: rates.append(float(model.optimizer.learning_rate))
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    dataset = tf.data.Dataset.from_generator(
        batches,
        output_signature=(
            tf.TensorSpec((None, 28, 28, 1), tf.float32),
            tf.TensorSpec((None,), tf.int64),
        ),
    ).take(4)  # 4 batches an epoch; the length stays unknown to fit()
    model.fit(dataset, epochs=3, callbacks=[CosineAnnealing(), record], verbose=0)
    assert len(rates) == 12
    assert rates[:4] == [np.float32(1e-3)] * 4  # the first epoch counts its batches
    assert np.all(np.diff(rates[4:]) < 0) and rates[-1] < 2e-4 and min(rates[:-1]) > 0


def test_finetune_is_compress_s_last_step_a_fresh_adam_and_a_cosine(
    monkeypatch, staircase_tree, mnist_slice
):
    """The README's path (latency_aware, fit with the callback, strip, finetune) is compress()."""
    import fdi_keras.compress as compress_module

    x, y = mnist_slice[0][:64], mnist_slice[1][:64]
    real, calls = compress_module.finetune, []

    def spy(model, *args, **kwargs):
        calls.append(model)
        return real(model, *args, **kwargs)

    real_arguments, students = compress_module.fit_arguments, []

    def arguments_spy(student, teacher, *args, **kwargs):
        students.append((student, teacher))
        return real_arguments(student, teacher, *args, **kwargs)

    monkeypatch.setattr(compress_module, "finetune", spy)
    monkeypatch.setattr(compress_module, "fit_arguments", arguments_spy)
    trained = lenet()
    result = compress_module.compress(
        trained, staircase_tree, x, y, 1.0, epochs=1, finetune_epochs=1, batch_size=16
    )
    assert calls == [result.model]
    # both phases distill from the model being compressed: the gated fit, then finetune
    (gated, first), (stripped, second) = students
    assert first is trained and second is trained and stripped is result.model
    assert wrappers(gated) and not wrappers(stripped)
    default = inspect.signature(compress_module.compress).parameters["strength"].default
    assert FastDeepIoTCallback(staircase_tree).initial_strength == default  # one recipe

    small = lenet()
    small.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    rates = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: rates.append(float(small.optimizer.learning_rate))
    )
    history = real(small, x, y, epochs=2, batch_size=16, callbacks=[record])
    assert isinstance(small.optimizer, keras.optimizers.Adam)  # recompiled: Adam at 1e-3
    assert len(history.history["accuracy"]) == 2 and len(rates) == 8
    assert rates[0] == np.float32(1e-3) and np.all(np.diff(rates) < 0) and rates[-1] < 2e-4
    with pytest.raises(ValueError, match=r"epochs must be an integer >= 1.*Received: epochs=0"):
        real(small, x, y, epochs=0)


def test_compress_refuses_a_loss_it_cannot_distill_before_training(staircase_tree):
    import fdi_keras.compress as compress_module

    x, y = np.zeros((4, 28, 28, 1), "float32"), np.zeros(4)
    with pytest.raises(ValueError, match="cannot keep loss='mse'"):
        compress_module.compress(lenet(), staircase_tree, x, y, 1.0, epochs=1, loss="mse")
