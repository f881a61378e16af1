import csv
import inspect
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
from prune_helpers import depthwise_net, lenet, staircase_time

import fdi_keras
from fdi_keras.profiling.sampling import sample_configs
from fdi_keras.prune import FastDeepIoTCallback, latency_aware, strip
from fdi_keras.timing import TimingTree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def compiled(model):
    model.compile(
        keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def test_a_real_fit_prunes_toward_the_target_and_logs(staircase_tree, mnist_slice):
    x, y = mnist_slice
    gated = compiled(latency_aware(lenet()))
    start = fdi_keras.predict_latency(lenet(), staircase_tree).total_ms
    callback = FastDeepIoTCallback(
        staircase_tree, target_latency_ms=start / 3, strength=2.0, verbose=0
    )
    history = gated.fit(x, y, epochs=6, batch_size=16, callbacks=[callback], verbose=0)
    logs = history.history
    assert len(logs["predicted_latency_ms"]) == 6 and not any("width/" in k for k in logs)
    assert len(callback.widths_history) == 6
    assert "conv2d" in str(list(callback.widths_history[-1]))  # conv2d_<n>: Keras numbers names
    assert logs["predicted_latency_ms"][-1] < start
    small = strip(gated)
    np.testing.assert_allclose(small(x[:8]), gated(x[:8], training=False), atol=1e-5)
    assert fdi_keras.predict_latency(small, staircase_tree).total_ms == pytest.approx(
        logs["predicted_latency_ms"][-1]
    )
    gated.fit(x, y, epochs=1, batch_size=64, callbacks=[callback], verbose=0)
    assert len(callback.history) == 1  # state reset in on_train_begin


@pytest.mark.parametrize("epochs", [1, 3])
def test_a_short_fit_reaches_the_target_on_a_geometric_schedule(
    staircase_tree, mnist_slice, epochs
):
    """With a penalty too weak to close any gate, `enforce_target` still ends the fit at the
    target, getting there geometrically epoch by epoch; without it the model barely moves."""
    x, y = mnist_slice
    start = fdi_keras.predict_latency(lenet(), staircase_tree).total_ms
    target = start / 3
    logged = {}
    for enforce in (True, False):
        gated = compiled(latency_aware(lenet()))
        callback = FastDeepIoTCallback(
            staircase_tree, target, strength=1e-6, adapt_rate=0.0, enforce_target=enforce,
            expand=False, verbose=0,
        )  # fmt: skip
        history = gated.fit(x[:256], y[:256], epochs=epochs, batch_size=64, callbacks=[callback])
        logged[enforce] = history.history["predicted_latency_ms"]
    assert logged[True][-1] <= target * 1.001
    schedule = [start * (target / start) ** ((k + 1) / epochs) for k in range(epochs)]
    assert all(ms <= s * 1.001 for ms, s in zip(logged[True], schedule))
    assert logged[False][-1] > 0.9 * start


def test_a_fit_prunes_depthwise_multipliers(staircase_tree):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 12, 12, 3)).astype("float32"), rng.integers(0, 4, 64)
    gated = latency_aware(depthwise_net(multiplier=3))
    gated.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(True))
    start = fdi_keras.predict_latency(gated, staircase_tree).total_ms
    callback = FastDeepIoTCallback(staircase_tree, strength=5.0, verbose=0)
    history = gated.fit(x, y, epochs=3, batch_size=8, callbacks=[callback], verbose=0)
    depthwise = gated.layers[2]
    assert float(depthwise.channel_cost) > 0
    assert callback.widths_history[-1][depthwise.layer.name] < 3
    assert history.history["predicted_latency_ms"][-1] < start
    small = strip(gated)
    np.testing.assert_allclose(small(x[:4]), gated(x[:4], training=False), atol=1e-5)
    assert fdi_keras.predict_latency(small, staircase_tree).total_ms == pytest.approx(
        history.history["predicted_latency_ms"][-1]
    )


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("first", [True, False], ids=["callback_first", "callback_last"])
def test_csv_logger_sees_the_scalars_whatever_the_order(staircase_tree, tmp_path, first):
    rng = np.random.default_rng(0)
    x, y = rng.random((48, 28, 28, 1), "float32"), rng.integers(0, 10, 48)
    gated = compiled(latency_aware(lenet((8, 8, 16))))
    callback = FastDeepIoTCallback(staircase_tree, strength=5.0, verbose=0)
    logger = keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))
    history = gated.fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        validation_data=(x[:16], y[:16]),
        callbacks=[callback, logger] if first else [logger, callback],
        verbose=0,
    )
    rows = read_csv(tmp_path / "log.csv")
    assert len(rows) == 2
    for row, h in zip(rows, callback.history):
        assert float(row["predicted_latency_ms"]) == pytest.approx(h["predicted_latency_ms"])
        assert float(row["latency_strength"]) == pytest.approx(h["strength"])
    widths = callback.widths_history[-1]
    total = sum(w.alive.shape[0] for w in gated.layers if hasattr(w, "alive"))
    assert float(rows[-1]["width_fraction"]) == pytest.approx(sum(widths.values()) / total)
    assert not any(k.startswith(("width/", "val_predicted", "val_latency")) for k in rows[0])
    assert history.history["predicted_latency_ms"] == [
        h["predicted_latency_ms"] for h in callback.history
    ]
    # evaluate() after fit reports what it reported before: no summary keys
    assert set(gated.evaluate(x, y, verbose=0, return_dict=True)) == {"loss", "accuracy"}


@pytest.mark.filterwarnings("ignore:Your input ran out of data")  # Keras, at the first epoch's end
def test_data_of_unknown_length_reaches_earlier_callbacks_from_the_second_epoch(
    staircase_tree, tmp_path
):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x, y = rng.random((32, 28, 28, 1), "float32"), rng.integers(0, 10, 32)
    data = tf.data.Dataset.from_generator(
        lambda: iter([(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]),
        output_signature=(
            tf.TensorSpec((None, 28, 28, 1), tf.float32),
            tf.TensorSpec((None,), tf.int64),
        ),
    )
    gated = compiled(latency_aware(lenet((8, 8, 16))))
    callback = FastDeepIoTCallback(staircase_tree, strength=5.0, verbose=0)
    logger = keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))
    gated.fit(data, epochs=3, shuffle=False, callbacks=[logger, callback], verbose=0)
    rows = [float(r["predicted_latency_ms"]) for r in read_csv(tmp_path / "log.csv")]
    logged = [h["predicted_latency_ms"] for h in callback.history]
    assert len(rows) == len(logged) == 3
    assert rows[0] == pytest.approx(callback.initial_latency_ms)  # before the first step
    assert rows[1:] == pytest.approx(logged[1:])


def test_errors_and_warnings(staircase_tree, mnist_slice):
    x, y = mnist_slice
    with pytest.raises(ValueError, match="no LatencyAware layers.*latency_aware"):
        compiled(lenet()).fit(
            x[:32], y[:32], callbacks=[FastDeepIoTCallback(staircase_tree)], verbose=0
        )
    dense_only = [s for s in sample_configs("dense", 60)]
    partial = TimingTree().fit(dense_only, [staircase_time(s) for s in dense_only])
    with pytest.raises(fdi_keras.MissingKindError, match="'conv2d'"):
        compiled(latency_aware(lenet())).fit(
            x[:32], y[:32], verbose=0, callbacks=[FastDeepIoTCallback(partial)]
        )
    with pytest.warns(UserWarning, match="below the .* ms the tree predicts.*min_width_fraction"):
        compiled(latency_aware(lenet())).fit(
            x[:32],
            y[:32],
            verbose=0,
            callbacks=[FastDeepIoTCallback(staircase_tree, target_latency_ms=1e-6, verbose=0)],
        )
    with pytest.raises(ValueError, match="target_latency_ms must be positive"):
        FastDeepIoTCallback(staircase_tree, target_latency_ms=0)
    with pytest.raises(ValueError, match="control_every must be an integer >= 0"):
        FastDeepIoTCallback(staircase_tree, control_every=-1)
    with pytest.raises(ValueError, match=r"min_width_fraction must be in \[0, 1\)"):
        FastDeepIoTCallback(staircase_tree, min_width_fraction=1.0)


def test_within_an_epoch_the_strength_follows_the_gap_every_control_step(
    staircase_tree, mnist_slice
):
    x, y = mnist_slice[0][:64], mnist_slice[1][:64]
    start = fdi_keras.predict_latency(lenet(), staircase_tree).total_ms
    for target, sign in ((start * 1000, -1), (start / 100, 1)):  # gap about -1 and +1
        for control_every, steps in ((1, 8 + 1), (4, 2 + 1), (0, 1)):  # 8 batches + epoch end
            callback = FastDeepIoTCallback(
                staircase_tree, target, strength=1.0, control_every=control_every, verbose=0
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the target below the floor warns
                history = compiled(latency_aware(lenet())).fit(
                    x, y, epochs=1, batch_size=8, callbacks=[callback], verbose=0
                )
            strength = history.history["latency_strength"][0]
            assert strength == pytest.approx(np.exp(sign * 0.1 * steps), rel=1e-2)


def test_expected_latency_follows_the_gates_before_they_close(staircase_tree):
    gated = compiled(latency_aware(lenet((16, 32, 64))))
    callback = FastDeepIoTCallback(staircase_tree, target_latency_ms=1.0, verbose=0)
    callback.set_model(gated)
    callback.on_train_begin()
    before = callback.expected_latency_us()
    assert before == pytest.approx(fdi_keras.predict_latency(gated, staircase_tree).total_us)
    conv = gated.layers[3]  # 32 channels: close 16 of them
    conv.set_gate_logits(np.where(np.arange(32) < 16, 3.0, -9.0))
    expected = callback.expected_latency_us()
    hard = fdi_keras.predict_latency(gated, staircase_tree).total_us
    assert hard < expected < before
    assert expected == pytest.approx(hard, rel=0.1)  # linear in the leaves at 32 channels


def test_config_round_trip_keeps_every_argument(staircase_tree):
    """Every __init__ argument, set away from its default, survives get_config/from_config
    (a round trip of the config alone would pass with an argument missing from it)."""
    values = dict(
        target_latency_ms=1.5,
        strength=0.2,
        adapt_rate=0.3,
        control_every=7,
        expand=False,
        expand_window=0.5,
        expand_tolerance=0.05,
        enforce_target=False,
        min_width_fraction=0.25,
        verbose=0,
    )
    params = inspect.signature(FastDeepIoTCallback.__init__).parameters
    assert set(params) - {"self", "tree"} == set(values), "test every argument"
    for name, value in values.items():
        assert params[name].default != value
    config = FastDeepIoTCallback(staircase_tree, **values).get_config()
    for name, value in values.items():
        assert config[name] == value, name
    clone = FastDeepIoTCallback.from_config(config)
    assert clone.tree.to_dict() == staircase_tree.to_dict()
    assert {k: clone.get_config()[k] for k in values} == values


@pytest.mark.slow
def test_fit_under_mirrored_strategy_with_two_cpu_devices(tmp_path):
    script = textwrap.dedent(f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import sys; sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {os.path.dirname(__file__)!r})
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, logical)
        import keras, fdi_keras
        from prune_helpers import lenet, staircase_time, KINDS
        from fdi_keras.profiling.sampling import sample_configs
        specs = [s for k in KINDS for s in sample_configs(k, 60, seed=7)]
        tree = fdi_keras.TimingTree(tiles=(16,)).fit(specs, [staircase_time(s) for s in specs])
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            gated = fdi_keras.latency_aware(lenet())
            gated.compile("adam", "sparse_categorical_crossentropy")
        x = np.random.default_rng(0).random((128, 28, 28, 1), "float32")
        y = np.random.default_rng(1).integers(0, 10, 128)
        cb = fdi_keras.FastDeepIoTCallback(tree, target_latency_ms=0.01, verbose=0)
        h = gated.fit(x, y, epochs=2, batch_size=32, callbacks=[cb], verbose=0)
        assert len(h.history["predicted_latency_ms"]) == 2
        small = fdi_keras.strip(gated)
        np.testing.assert_allclose(small(x[:4]), gated(x[:4], training=False), atol=1e-5)
        print("OK")
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert result.stdout.strip().endswith("OK"), result.stderr[-3000:]
