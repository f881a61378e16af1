"""Distillation from the model being compressed: the loss, the packed targets, fine-tuning."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import log_softmax, softmax

from fdi_keras.compress import finetune
from fdi_keras.distillation import Distillation, fit_arguments, with_teacher


def classifier(logits=False, seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((6,))
    h = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(x, keras.layers.Dense(4, activation=None if logits else "softmax")(h))


def test_loss_is_hard_cross_entropy_plus_t_squared_kl_of_softened_outputs():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 8)
    teacher_logp = log_softmax(rng.normal(size=(8, 5)) * 3, axis=1)
    student_logits = rng.normal(size=(8, 5)) * 2
    t, hard_weight = 3.0, 0.3

    hard = -log_softmax(student_logits, axis=1)[np.arange(8), labels]
    q = softmax(teacher_logp / t, axis=1)
    kl = np.sum(q * (np.log(q) - log_softmax(student_logits / t, axis=1)), axis=1)
    expected = np.mean(hard_weight * hard + (1 - hard_weight) * t * t * kl)

    packed = np.concatenate([labels[:, None], teacher_logp], axis=1).astype("float32")
    from_logits = Distillation(t, hard_weight, from_logits=True)
    from_probabilities = Distillation(t, hard_weight)
    probabilities = softmax(student_logits, axis=1).astype("float32")
    assert float(from_logits(packed, student_logits.astype("float32"))) == pytest.approx(
        expected, rel=1e-4
    )
    assert float(from_probabilities(packed, probabilities)) == pytest.approx(expected, rel=1e-4)
    restored = Distillation.from_config(from_logits.get_config())
    assert (restored.temperature, restored.hard_weight, restored.from_logits) == (t, 0.3, True)
    with pytest.raises(ValueError, match="temperature > 0"):
        Distillation(temperature=0)


def test_packed_targets_are_the_label_and_the_teacher_s_log_probabilities():
    x = np.random.default_rng(1).normal(size=(10, 6)).astype("float32")
    y = np.arange(10) % 4
    for logits in (False, True):
        teacher = classifier(logits)
        outputs = teacher.predict(x, verbose=0)
        log_p = log_softmax(outputs, axis=1) if logits else np.log(outputs)
        _, packed = with_teacher(teacher, x, y)
        np.testing.assert_array_equal(packed[:, 0], y)
        np.testing.assert_allclose(packed[:, 1:], log_p, atol=1e-5)

        weights = np.linspace(0.5, 1.5, 10).astype("float32")
        dataset = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(4)
        packed_batches, none = with_teacher(teacher, dataset)
        assert none is None
        batches = list(packed_batches)
        from_dataset = np.concatenate([b.numpy() for _, b, _ in batches])
        np.testing.assert_allclose(from_dataset, packed, atol=1e-5)
        np.testing.assert_array_equal(np.concatenate([w.numpy() for *_, w in batches]), weights)
    with pytest.raises(TypeError, match=r"arrays `x, y` or a tf.data.Dataset.*distill=False"):
        with_teacher(teacher, [x])
    with pytest.raises(ValueError, match=r"cannot keep loss='mse'.*distill=False"):
        fit_arguments(teacher, teacher, "mse", x, y)


def test_finetune_with_a_teacher_learns_its_outputs_and_round_trips(tmp_path):
    """With random labels only the teacher's outputs carry a signal: the distilled student
    ends closer to the teacher than the same student fine-tuned on the labels alone, logs
    "accuracy" against the labels as training without a teacher does, and its compiled
    .keras file loads back."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(512, 6)).astype("float32")
    y = rng.integers(0, 4, 512)
    teacher = classifier(seed=0)
    head = teacher.layers[-1]
    head.set_weights([w * 10 for w in head.get_weights()])  # confident, as a trained one is
    students = {}
    for name, with_the_teacher in (("distilled", teacher), ("labels only", None)):
        students[name] = classifier(seed=1)
        keras.utils.set_random_seed(3)
        history = finetune(
            students[name], x, y, epochs=8, batch_size=32, teacher=with_the_teacher,
            validation_data=(x[:64], y[:64], np.ones(64)), optimizer=keras.optimizers.Adam(1e-2),
        )  # fmt: skip
        assert set(history.history) >= {"loss", "accuracy", "val_accuracy"}
        # left compiled with the plain loss: evaluate() takes labels, not packed targets
        assert students[name].loss == "sparse_categorical_crossentropy"
        students[name].evaluate(x[:32], y[:32], verbose=0)

    def agreement(student):
        p, q = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
        return float(np.mean(p.argmax(1) == q.argmax(1)))

    assert agreement(students["distilled"]) > agreement(students["labels only"]) + 0.2
    students["distilled"].save(tmp_path / "student.keras")
    loaded = keras.models.load_model(tmp_path / "student.keras")
    np.testing.assert_allclose(
        loaded.predict(x[:8], verbose=0), students["distilled"].predict(x[:8], verbose=0)
    )
