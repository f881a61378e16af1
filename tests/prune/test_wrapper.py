import keras
import numpy as np
import pytest
from prune_helpers import depthwise_net

from fdi_keras.prune import FastDeepIoTCallback, LatencyAware, latency_aware, strip

L = keras.layers


def block_model():
    x = keras.Input((8, 8, 3))
    y = LatencyAware(
        L.Conv2D(6, 3),
        norm=L.BatchNormalization(),
        activation=L.ReLU(),
        gate="straight_through",
        group="g",
        min_channels=2,
        seed=3,
    )(x)
    y = L.GlobalAveragePooling2D()(y)
    return keras.Model(x, L.Dense(2)(y))


def test_config_round_trip():
    layer = block_model().layers[1]
    clone = LatencyAware.from_config(layer.get_config())
    assert (clone.gate, clone.group, clone.min_channels, clone.seed) == (
        "straight_through",
        "g",
        2,
        3,
    )
    assert isinstance(clone.norm, L.BatchNormalization) and isinstance(
        clone.activation_layer, L.ReLU
    )
    assert clone.get_config() == layer.get_config()


def test_keras_save_load_then_resume_training(tmp_path, staircase_tree):
    model = block_model()
    model.compile("adam", "mse")
    x = np.random.default_rng(0).standard_normal((16, 8, 8, 3)).astype("float32")
    y = np.zeros((16, 2), "float32")
    callback = FastDeepIoTCallback(staircase_tree, strength=0.3, expand=False, verbose=0)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    strength = float(model.layers[1].penalty_scale)
    assert strength == pytest.approx(0.3)
    layer = model.layers[1]
    layer.set_gate_logits([5, -5, 5, -5, 5, 5])
    path = str(tmp_path / "gated.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert loaded.layers[1].mask().tolist() == [True, False, True, False, True, True]
    steps_before = int(loaded.optimizer.iterations.numpy())
    fresh = FastDeepIoTCallback(staircase_tree, strength=5.0, expand=False, verbose=0)
    loaded.fit(x, y, epochs=1, verbose=0, callbacks=[fresh])
    assert int(loaded.optimizer.iterations.numpy()) > steps_before > 0
    assert fresh.controller.strength == pytest.approx(strength)  # resumed, not reset to 5.0


def test_training_without_the_callback_is_refused_by_name(staircase_tree):
    model = block_model()
    model.compile("adam", "mse")
    x = np.zeros((8, 8, 8, 3), "float32")
    with pytest.raises(Exception, match="trains only with fdi_keras.FastDeepIoTCallback"):
        model.fit(x, np.zeros((8, 2), "float32"), epochs=1, verbose=0)
    callback = FastDeepIoTCallback(staircase_tree, expand=False, verbose=0)
    model.fit(x, np.zeros((8, 2), "float32"), epochs=1, verbose=0, callbacks=[callback])
    assert float(model.layers[1].controlled) == 0.0  # released when the fit ends


def test_closed_gates_zero_their_channels_and_min_channels_is_kept():
    layer = LatencyAware(L.Dense(4, bias_initializer="ones"), min_channels=2)
    x = np.ones((1, 3), "float32")
    layer(x)
    layer.set_gate_logits([-9, 1, 2, -9])
    out = layer(x, training=False).numpy()[0]
    assert out[0] == 0 and out[3] == 0 and out[1] != 0 and out[2] != 0
    layer.set_gate_logits([-9, -8, -7, -6])  # all closed: the best two stay
    assert layer.mask().tolist() == [False, False, True, True]


@pytest.mark.parametrize("gate", ["hard_concrete", "straight_through"])
def test_the_host_mask_is_the_inference_mask(gate):
    layer = LatencyAware(L.Dense(16), gate=gate, min_channels=3)
    layer(np.ones((1, 4), "float32"))
    rng = np.random.default_rng(0)
    for trial in range(40):
        logits = rng.normal(-2.0 if trial % 2 else 1.0, 3.0, 16)  # odd trials: mostly closed
        alive = (rng.random(16) < 0.7).astype("float32")
        layer.alive.assign(alive)
        layer.set_gate_logits(logits)
        expected = keras.ops.convert_to_numpy(layer.inference_mask()) > 0.5
        np.testing.assert_array_equal(layer.mask(), expected)


@pytest.mark.parametrize("gate", ["hard_concrete", "straight_through"])
def test_the_host_expected_alive_is_the_differentiable_one(gate):
    layer = LatencyAware(L.Dense(16), gate=gate)
    layer(np.ones((1, 4), "float32"))
    rng = np.random.default_rng(1)
    for _ in range(10):
        layer.alive.assign((rng.random(16) < 0.7).astype("float32"))
        layer.set_gate_logits(rng.normal(0.0, 4.0, 16))
        expected = float(keras.ops.convert_to_numpy(layer.expected_alive()))
        assert 0.0 < expected < 16.0
        assert layer.expected_alive_now() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LatencyAware(L.Conv2D(6, 3, activation="relu"), gate="straight_through"),
        lambda: LatencyAware(
            L.Conv2D(6, 3),
            norm=L.BatchNormalization(),
            activation=L.ReLU(),
            gate="straight_through",
        ),
        lambda: LatencyAware(L.DepthwiseConv2D(3, depth_multiplier=2), gate="straight_through"),
        lambda: LatencyAware(L.Conv2D(6, 3, activation="relu6"), gate="straight_through"),
        lambda: LatencyAware(L.Conv2D(6, 7, activation="relu"), gate="straight_through"),
    ],
    ids=["conv_relu", "conv_bn_relu", "depthwise", "relu6_not_folded", "fan_in_not_folded"],
)
def test_a_gate_folded_into_the_weights_gives_the_gated_output_and_trains(make):
    import tensorflow as tf

    layer = make()
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    layer(x)
    layer.controlled.assign(1.0)
    layer.set_gate_logits(np.where(np.arange(layer.channels) % 3 == 0, -3.0, 2.0))
    folded = bool(layer.folded_weights(layer.compute_output_shape(x.shape)))
    config = layer.layer.get_config()  # a 7x7x3 fan-in is more than the 2x2 output positions
    assert folded == (config.get("activation") != "relu6" and config["kernel_size"] != (7, 7))
    for training in (False, True):  # straight-through gates are 0/1 in both
        gate = layer.inference_mask()
        expected = layer._block(x, training) * layer._per_entry(gate, layer._block(x, training))
        np.testing.assert_allclose(layer(x, training=training), expected, atol=1e-5)
    moving = [v.numpy().copy() for v in layer.non_trainable_weights if "moving" in v.path]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True) ** 2)
    grads = tape.gradient(loss, [layer.gate_parameters, *layer.layer.trainable_weights])
    assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)
    after = [v.numpy() for v in layer.non_trainable_weights if "moving" in v.path]
    assert all((a != b).any() for a, b in zip(after, moving))  # BN statistics still move


def test_penalty_is_added_in_training_only():
    layer = LatencyAware(L.Dense(4))
    x = np.ones((1, 3), "float32")
    layer(x)
    layer.channel_cost.assign(0.5)
    layer.penalty_scale.assign(2.0)
    layer.controlled.assign(1.0)  # what FastDeepIoTCallback does at the start of fit
    layer(x, training=True)
    expected = 2.0 * 0.5 * float(layer.expected_alive())
    assert float(sum(layer.losses)) == pytest.approx(expected, rel=1e-5)


def test_errors():
    with pytest.raises(
        ValueError,
        match="LatencyAware can wrap .*Dense.*LSTM.*Received: layer='up' of class Conv2DTranspose",
    ):
        LatencyAware(L.Conv2DTranspose(4, 3, name="up"))
    with pytest.raises(ValueError, match="cannot be fused into a recurrent layer"):
        LatencyAware(L.GRU(4), norm=L.BatchNormalization())
    with pytest.raises(ValueError, match="norm must be a BatchNormalization"):
        LatencyAware(L.Dense(4), norm=L.LayerNormalization())
    with pytest.raises(ValueError, match="min_channels must be an integer >= 1"):
        LatencyAware(L.Dense(4), min_channels=0)


def test_latency_aware_wraps_blocks_groups_residuals_and_keeps_outputs():
    x = keras.Input((8, 8, 4))
    h = L.Conv2D(8, 3, padding="same")(x)
    h = L.BatchNormalization()(h)
    h = L.ReLU()(h)
    r = L.Conv2D(8, 3, padding="same")(h)
    r = L.BatchNormalization()(r)
    h = L.ReLU()(L.Add()([h, r]))
    h = L.GlobalAveragePooling2D()(h)
    model = keras.Model(x, L.Dense(3, activation="softmax")(h))
    gated = latency_aware(model)
    wrapped = [layer for layer in gated.layers if isinstance(layer, LatencyAware)]
    assert [w.layer.name for w in wrapped] == [model.layers[1].name, model.layers[4].name]
    assert wrapped[0].group == wrapped[1].group is not None  # coupled by the Add
    assert wrapped[0].norm is not None and wrapped[0].activation_layer is not None
    assert not any(
        isinstance(layer, LatencyAware) and layer.layer.units == 3
        for layer in gated.layers
        if hasattr(layer, "layer") and hasattr(layer.layer, "units")
    )
    data = np.random.default_rng(0).standard_normal((2, 8, 8, 4)).astype("float32")
    np.testing.assert_allclose(gated(data), model(data), atol=1e-6)
    assert len(model.layers) == 10  # the input model is untouched


def test_a_depthwise_gate_is_shared_by_all_input_channels():
    layer = LatencyAware(L.DepthwiseConv2D(1, depth_multiplier=3, bias_initializer="ones"))
    x = np.ones((1, 2, 2, 4), "float32")
    layer(x)
    assert layer.channels == 3 and layer.gate_parameters.shape == (3,)
    layer.set_gate_logits([5, -5, 5])
    out = layer(x, training=False).numpy()[0, 0, 0]  # channel c * 3 + m
    assert (out.reshape(4, 3) != 0).tolist() == [[True, False, True]] * 4
    layer.set_gate_logits([-9, -8, -7])  # all closed: the best multiplier stays
    assert layer.mask().tolist() == [False, False, True]


def test_a_depthwise_layer_without_multiplier_is_not_gated():
    with pytest.raises(ValueError, match="depth_multiplier=1 there is none to remove.*'dw'"):
        LatencyAware(L.DepthwiseConv2D(3, name="dw"))
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 1)(x)
    h = L.DepthwiseConv2D(3, padding="same")(h)
    h = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(h)
    h = L.ReLU()(L.BatchNormalization()(h))
    gated = latency_aware(keras.Model(x, L.Dense(2)(L.GlobalAveragePooling2D()(h))))
    wrapped = [la.layer for la in gated.layers if isinstance(la, LatencyAware)]
    assert [type(la).__name__ for la in wrapped] == ["Conv2D", "DepthwiseConv2D"]
    assert wrapped[1].depth_multiplier == 2 and gated.layers[3].norm is not None
    assert isinstance(gated.layers[2], L.DepthwiseConv2D)  # passes channels through


def test_a_depthwise_layer_merged_by_add_is_not_gated():
    """Its C * M channels are owned by its input's gates and its own: an Add cannot couple
    them with another layer's, so neither side is gated."""
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 1)(x)
    b = L.Conv2D(8, 1)(x)
    h = L.Add()([L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(a), b])
    gated = latency_aware(keras.Model(x, L.Dense(2)(L.GlobalAveragePooling2D()(h))))
    assert not any(isinstance(la, LatencyAware) for la in gated.layers)


def test_keras_save_load_of_a_gated_depthwise_block(tmp_path):
    gated = latency_aware(depthwise_net(multiplier=3))
    gated.layers[2].set_gate_logits([5, -5, 5])
    path = str(tmp_path / "depthwise.keras")
    gated.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.layers[2]
    assert isinstance(layer.layer, L.DepthwiseConv2D) and layer.layer.depth_multiplier == 3
    assert isinstance(layer.norm, L.BatchNormalization)
    assert isinstance(layer.activation_layer, L.ReLU)
    assert layer.mask().tolist() == [True, False, True]
    x = np.random.default_rng(0).standard_normal((2, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), gated(x, training=False), atol=1e-6)
    np.testing.assert_allclose(strip(loaded)(x), loaded(x), atol=1e-5)


def _gated_names(model):
    return [la.layer.name for la in latency_aware(model).layers if isinstance(la, LatencyAware)]


def test_channels_normalized_by_a_softmax_are_not_gated():
    """A closed channel is 0, whose exp(0) still counts in a softmax's denominator: a block
    feeding a softmax over channels (layer or activation) cannot lose channels."""
    with pytest.raises(ValueError, match="normalizes together.*'attn' with activation='softmax'"):
        LatencyAware(L.Dense(4, activation="softmax", name="attn"))
    with pytest.raises(ValueError, match="activation='log_softmax'"):
        LatencyAware(L.Dense(4), activation=L.Activation("log_softmax"))
    x = keras.Input((6, 6, 3))
    a = L.Conv2D(8, 1, name="into_softmax_layer")(x)
    b = L.Conv2D(8, 1, name="into_softmax_activation")(x)
    c = L.Conv2D(8, 1, activation="softmax", name="own_softmax")(x)
    d = L.Conv2D(8, 1, name="free")(x)
    merged = L.Concatenate()([L.Softmax()(a), L.Activation("softmax")(b), c, L.ReLU()(d)])
    model = keras.Model(x, L.Dense(2)(L.GlobalAveragePooling2D()(merged)))
    assert _gated_names(model) == ["free"]


def test_a_flattened_tensor_merged_by_add_is_not_gated():
    """Flatten's units are (position, channel) pairs: an Add with another tensor does not
    couple channels one to one, so neither side is gated (nor coupled into one group)."""
    x = keras.Input((2, 2, 3))
    h = L.Flatten()(L.Conv2D(4, 1, name="conv")(x))
    d = L.Dense(16, name="dense")(L.Flatten()(x))
    h = L.Add()([L.Dropout(0.1)(h), d])
    model = keras.Model(x, L.Dense(2, name="head")(h))
    assert _gated_names(model) == []
    y = L.Dense(2)(L.Dense(16, name="after_flatten")(L.Flatten()(L.Conv2D(4, 1, name="c")(x))))
    assert _gated_names(keras.Model(x, y)) == ["c", "after_flatten"]


def residual_model():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    a = L.Conv2D(8, 3, padding="same", name="a")(h)
    b = L.Conv2D(8, 1, name="b")(h)
    y = L.Conv2D(6, 3, activation="relu")(L.ReLU()(L.Add()([a, b])))
    return keras.Model(x, L.Dense(3)(L.GlobalAveragePooling2D()(y)))


def test_a_gate_group_has_one_gate_and_one_noise_sample_per_step(tmp_path, staircase_tree):
    gated = latency_aware(residual_model())
    owner, member = gated.get_layer("latency_aware_a"), gated.get_layer("latency_aware_b")
    assert owner.group == member.group and member.gate_owner() is owner
    assert member.gate_parameters is owner.gate_parameters and member.alive is owner.alive
    trainable = {id(v) for v in gated.trainable_variables}
    assert (
        id(owner.gate_parameters) in trainable and id(member._own_gate_parameters) not in trainable
    )
    np.testing.assert_array_equal(owner.training_gate(), member.training_gate())
    np.testing.assert_array_equal(owner.training_gate(), member.training_gate())
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, 32)
    gated.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(True))
    callback = FastDeepIoTCallback(staircase_tree, strength=3.0, expand=False, verbose=0)
    gated.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[callback])
    assert (owner.mask() == member.mask()).all()  # no synchronization needed
    path = str(tmp_path / "grouped.keras")
    gated.save(path)
    loaded = keras.models.load_model(path)
    reloaded = loaded.get_layer("latency_aware_b")
    assert reloaded.gate_owner() is reloaded  # unlinked until training starts...
    assert (reloaded.mask() == member.mask()).all()  # ...but it saved the group's gate
    steps = int(loaded.optimizer.iterations)
    loaded.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[callback])
    assert reloaded.gate_owner() is loaded.get_layer("latency_aware_a")
    assert int(loaded.optimizer.iterations) > steps > 0  # the optimizer state was restored


@pytest.mark.parametrize("rnn", [L.GRU, L.LSTM])
def test_a_gated_recurrent_layer_draws_fresh_dropout_masks_every_training_call(rnn):
    x = np.random.default_rng(0).normal(size=(4, 6, 5)).astype("float32")
    layer = rnn(8, dropout=0.5, recurrent_dropout=0.3, seed=1)
    # Deterministic gates: only dropout can make two training calls differ.
    gated = LatencyAware(layer, gate="straight_through")
    inference = keras.ops.convert_to_numpy(gated(x))
    gated.controlled.assign(1.0)
    first, second = (keras.ops.convert_to_numpy(gated(x, training=True)) for _ in range(2))
    assert not np.allclose(first, second)
    # Inference is deterministic and, with every gate open, the plain layer's.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(gated(x)), inference)
    np.testing.assert_allclose(inference, keras.ops.convert_to_numpy(layer(x)), atol=1e-6)
