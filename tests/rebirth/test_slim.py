"""slim(): exact steps, layer-wise learning on real images, TFLite, and explained skips."""

import keras
import numpy as np
import pytest
from rebirth_helpers import plain_mlp, stem

from fdi_keras import rebirth
from fdi_keras.export import to_tflite
from fdi_keras.layers import LocalResponseNormalization

L = keras.layers


@pytest.fixture(scope="module")
def trained_teacher(cifar_slice):
    keras.utils.set_random_seed(0)
    x = keras.Input((32, 32, 3))
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(x)))
    h = L.MaxPooling2D(3, 2, padding="same")(LocalResponseNormalization(2, alpha=0.5)(h))
    b1 = L.Conv2D(8, 1, activation="relu")(h)
    b3 = L.Conv2D(12, 3, padding="same", activation="relu")(L.Conv2D(8, 1, activation="relu")(h))
    bp = L.Conv2D(8, 1, activation="relu")(L.MaxPooling2D(3, 1, padding="same")(h))
    h = L.Concatenate()([b1, b3, bp])
    out = L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(h))
    model = keras.Model(x, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    xs, ys = cifar_slice
    model.fit(xs, ys, epochs=2, batch_size=64, verbose=0)
    return model


def test_exact_plan_needs_no_data_and_matches_outputs():
    model = stem()
    folds = rebirth.plan(model).select(kinds=["fold_bn"])
    x = np.random.default_rng(0).normal(size=(64, 16, 16, 3)).astype("float32")
    small, history, _ = rebirth.slim(model, x, plan=folds)
    assert [s.kind for s in history] == ["fold_bn"] and history[0].exact
    np.testing.assert_allclose(small(x[:8]), model(x[:8]), atol=1e-4)


def test_layerwise_steps_reduce_reconstruction_error_on_real_images(trained_teacher, cifar_slice):
    x, y = cifar_slice
    before = [w.copy() for w in trained_teacher.get_weights()]
    every_merge = rebirth.plan(trained_teacher)  # without a tree slim() would skip some
    result = rebirth.slim(
        trained_teacher,
        x,
        y,
        every_merge,
        layerwise_epochs=3,
        finetune_epochs=1,
        validation_size=256,
        lr=3e-4,
    )
    learned = [s for s in result.history if s.kind in ("streamline", "branch", "reduction")]
    assert [s.kind for s in learned] == ["streamline", "branch", "reduction"]
    for step in learned:
        assert step.error_after < 0.8 * step.error_before, step
    assert result.history[-1].kind == "fine-tune"
    # the teacher is untouched
    for w, b in zip(trained_teacher.get_weights(), before):
        np.testing.assert_array_equal(w, b)
    # fewer layers of the kinds DeepRebirth removes
    names = [type(layer).__name__ for layer in result.model.layers]
    assert "LocalResponseNormalization" not in names and names.count("Conv2D") == 2


def test_slimmed_model_converts_to_tflite_and_runs(trained_teacher, cifar_slice):
    from ai_edge_litert.interpreter import Interpreter

    model = rebirth.apply_merges(trained_teacher, rebirth.plan(trained_teacher).merges)
    interpreter = Interpreter(model_content=to_tflite(model))
    interpreter.allocate_tensors()
    x = cifar_slice[0][:1]
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, model(x), atol=1e-4)


def test_a_merge_whose_shape_cannot_be_kept_is_skipped_with_the_reason():
    x = keras.Input((7, 7, 3))
    h = L.MaxPooling2D(2, 2, padding="valid")(L.Conv2D(4, 3, padding="same", name="c")(x))
    model = keras.Model(x, h)
    p = rebirth.plan(model)
    assert [m.kind for m in p.merges] == ["streamline"]
    data = np.zeros((16, 7, 7, 3), "float32")
    small, history, skipped = rebirth.slim(model, data, plan=p, validation_size=4)
    assert history == []
    assert any("output shape" in s.reason for s in skipped)
    assert len(small.layers) == len(model.layers)


def test_slim_without_patterns_returns_an_equal_copy():
    model = plain_mlp()
    x = np.random.default_rng(0).normal(size=(8, 20)).astype("float32")
    small, history, skipped = rebirth.slim(model, x)
    assert small is not model and history == [] and skipped == []
    np.testing.assert_allclose(small(x), model(x), atol=1e-6)


def test_slim_rejects_a_subclassed_model():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="functional or Sequential"):
        rebirth.slim(Net(), np.zeros((4, 3), "float32"))


def test_without_a_tree_only_merges_that_cannot_slow_the_model_down_are_applied(trained_teacher):
    plan = rebirth.plan(trained_teacher)
    assert {m.kind for m in plan.merges} >= {"streamline", "branch", "reduction"}
    safe = rebirth.safe_without_tree(trained_teacher, plan)
    assert {m.kind for m in safe.merges} <= {"fold_bn", "streamline"}
    needs_tree = [s for s in safe.skipped if "needs a timing tree" in s.reason]
    assert len(needs_tree) == sum(m.kind in ("branch", "reduction") for m in plan.merges)


def test_a_pool_merge_that_grows_the_kernel_needs_a_tree():
    x = keras.Input((16, 16, 3))
    cheap = L.MaxPooling2D(2, 2)(L.Conv2D(4, 3, padding="same", name="k3")(x))  # 4x4/2: 4 < 9
    dear = L.MaxPooling2D(3, 2)(L.Conv2D(4, 1, name="k1")(x))  # 3x3/2 after 1x1: 9/4 > 1
    model = keras.Model(x, [cheap, dear])
    merges = {m.layers[0]: m for m in rebirth.plan(model).merges}
    assert rebirth.cannot_slow_down(model, merges["k3"])
    assert not rebirth.cannot_slow_down(model, merges["k1"])


def _separable_data(n=512, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32") * 0.5
    x[np.arange(n), y, y, 0] += 3.0  # the class is where the bright pixel is
    return x, y


@pytest.mark.parametrize("logits", [True, False])
def test_finetune_distills_logits_and_probabilities_alike(logits):
    keras.utils.set_random_seed(1)
    x, y = _separable_data()
    inputs = keras.Input((8, 8, 3))
    h = L.Flatten()(L.Conv2D(8, 3, padding="same", activation="relu")(inputs))
    out = L.Dense(4, activation=None if logits else "softmax")(h)
    teacher = keras.Model(inputs, out)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
    teacher.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
    teacher.fit(x, y, epochs=8, batch_size=32, verbose=0)
    assert rebirth.layerwise.outputs_probabilities(teacher) is not logits
    student = keras.models.clone_model(teacher)
    student.set_weights(teacher.get_weights())
    student.compile(loss=loss, metrics=["accuracy"])
    before = student.evaluate(x, y, verbose=0)[1]
    assert before > 0.9
    rebirth.layerwise.finetune(student, teacher, x, y, epochs=2, batch_size=32, lr=1e-3)
    assert student.evaluate(x, y, verbose=0)[1] > before - 0.05
