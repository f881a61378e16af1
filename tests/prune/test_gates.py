import numpy as np
import pytest
import tensorflow as tf

from fdi_keras.prune.gates import GATES, get_gate


@pytest.mark.parametrize("name", sorted(GATES))
def test_expected_alive_is_differentiable_and_monotone(name):
    gate = get_gate(name)
    logits = tf.Variable(np.linspace(-4, 4, 9).astype("float32"))
    with tf.GradientTape() as tape:
        expected = tf.reduce_sum(gate.open_probability(logits))
    grad = tape.gradient(expected, logits).numpy()
    assert (grad > 0).all()
    p = gate.open_probability(logits).numpy()
    assert (np.diff(p) > 0).all() and (p > 0).all() and (p < 1).all()


@pytest.mark.parametrize("name", sorted(GATES))
def test_training_gates_are_in_unit_interval_with_gradients(name):
    gate = get_gate(name)
    logits = tf.Variable(np.zeros(64, "float32"))
    with tf.GradientTape() as tape:
        z = gate.train_gate(logits, gate.sample_noise((64,), seed=1))
        loss = tf.reduce_sum(z)
    assert ((z.numpy() >= 0) & (z.numpy() <= 1)).all()
    assert np.abs(tape.gradient(loss, logits).numpy()).sum() > 0


def test_inference_threshold_matches_the_deterministic_gate():
    hc = get_gate("hard_concrete")
    logits = np.array([hc.threshold - 0.01, hc.threshold + 0.01], "float32")
    assert hc.is_open(logits).numpy().tolist() == [0.0, 1.0]
    assert get_gate("straight_through").is_open(np.array([-0.1, 0.1])).numpy().tolist() == [0, 1]


def test_unknown_gate():
    with pytest.raises(ValueError, match="Unknown gate formulation.*hard_concrete"):
        get_gate("l1")
