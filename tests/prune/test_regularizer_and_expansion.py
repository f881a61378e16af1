import keras
import numpy as np
import pytest
from prune_helpers import depthwise_net, lenet, swish_net

from fdi_keras import predict_latency
from fdi_keras.features import compute_features
from fdi_keras.profiling.sampling import sample_configs
from fdi_keras.prune import LatencyRegularizer, expand_to_local_minima, latency_aware, regularizer
from fdi_keras.prune.expansion import (
    REVIVE_MARGIN,
    best_width,
    group_time,
    prune_to_target,
    revive_to_target,
    revived_logit,
    structural_step,
    width_floor,
)
from fdi_keras.prune.gates import get_gate
from fdi_keras.prune.regularizer import channel_dependencies, predicted_us, spec_at
from fdi_keras.prune.regularizer import wrappers as regularizer_wrappers
from fdi_keras.timing import TimingTree

L = keras.layers


def test_costs_are_set_and_the_penalty_gradient_closes_gates(staircase_tree):
    gated = latency_aware(lenet())
    reg = LatencyRegularizer(staircase_tree, strength=1.0)
    latency_us = reg.update(gated)
    wrapped = [layer for layer in gated.layers if hasattr(layer, "channel_cost")]
    assert len(wrapped) == 3 and latency_us == pytest.approx(reg.predict(gated).total_us)
    assert all(float(w.channel_cost) > 0 for w in wrapped)
    import tensorflow as tf

    x = np.zeros((1, 28, 28, 1), "float32")
    for w in wrapped:
        w.controlled.assign(1.0)  # as FastDeepIoTCallback does when fit starts
    with tf.GradientTape() as tape:
        gated(x, training=True)
        penalty = tf.add_n(gated.losses)
    grads = tape.gradient(penalty, [w.gate_parameters for w in wrapped])
    assert all((g.numpy() > 0).all() for g in grads)  # descent lowers every logit


def test_flatten_dense_dependency_has_the_spatial_multiplier(staircase_tree):
    gated = latency_aware(lenet((16, 32, 64)))
    kernels, _ = channel_dependencies(gated)
    dense = [deps for spec, deps in kernels if spec.kind == "dense" and spec.dims["cin"] == 512]
    assert dense and dense[0][0][2] == 16  # 4x4 positions x 32 channels


def test_expansion_moves_a_layer_to_the_top_of_its_stair(staircase_tree):
    gated = latency_aware(lenet((16, 48, 16)))
    conv = gated.layers[3]
    alive = np.zeros(48, "float32")
    alive[:17] = 1.0  # 17 channels: one step above 16, so 18..32 are free
    conv.alive.assign(alive)
    kernels, members = channel_dependencies(gated)
    root = next(r for r, ws in members.items() if ws[0] is conv)
    assert best_width(staircase_tree, kernels, root, 17, 40) == 32
    assert best_width(staircase_tree, kernels, root, 17, 40, tolerance=0.0) < 32
    t17, t32 = (group_time(staircase_tree, kernels, root, k) for k in (17, 32))
    assert t32 <= 1.02 * t17 < group_time(staircase_tree, kernels, root, 33)
    logits = np.full(48, -5.0)
    logits[40] = -1.0  # the most important pruned channel comes back first
    conv.set_gate_logits(np.where(alive > 0, 3.0, logits))
    changes = expand_to_local_minima(gated, staircase_tree, window=1.0)
    assert changes[root] == (17, 32)
    assert conv.alive.numpy().sum() == 32 and conv.alive.numpy()[40] == 1
    assert conv.mask().sum() == 32


def test_revived_channels_get_a_margin_that_a_few_penalty_steps_do_not_erase(staircase_tree):
    import tensorflow as tf

    gated = latency_aware(lenet((16, 48, 16)))
    conv = gated.layers[3]
    alive = np.zeros(48, "float32")
    alive[:17] = 1.0  # one step above 16: expansion widens it
    conv.alive.assign(alive)
    conv.set_gate_logits(np.where(alive > 0, 3.0, -5.0))
    reg = LatencyRegularizer(staircase_tree, strength=1.0)
    structural_step(gated, reg)
    revived = np.flatnonzero(conv.alive.numpy() > alive)
    assert revived.size
    logits = keras.ops.convert_to_numpy(conv.gate_logits)
    np.testing.assert_allclose(logits[revived], 3.0)  # the median of the open channels'
    # The penalty alone, 40 fresh Adam steps: every logit drops by 40 * 1e-3 * logit_scale.
    reg.update(gated)
    wrapped = [layer for layer in gated.layers if hasattr(layer, "channel_cost")]
    for w in wrapped:
        w.controlled.assign(1.0)
    x = np.zeros((1, 28, 28, 1), "float32")
    optimizer = keras.optimizers.Adam(1e-3)
    for _ in range(40):
        with tf.GradientTape() as tape:
            gated(x, training=True)
            penalty = tf.add_n(gated.losses)
        optimizer.apply(tape.gradient(penalty, [conv.gate_parameters]), [conv.gate_parameters])
    dropped = logits - keras.ops.convert_to_numpy(conv.gate_logits)
    assert dropped[revived].min() > 1.0  # the steps did push them down...
    assert conv.mask()[revived].all()  # ...and they are still open
    # With no open channel to learn from, the margin is the floor.
    threshold = get_gate(conv.gate).threshold
    assert revived_logit(np.full(4, -9.0), np.ones(4), threshold) == threshold + REVIVE_MARGIN


def test_config_round_trip(staircase_tree):
    reg = LatencyRegularizer(staircase_tree, strength=0.3)
    clone = LatencyRegularizer.from_config(reg.get_config())
    assert clone.strength == 0.3
    assert clone.tree.to_dict()["kinds"].keys() == staircase_tree.to_dict()["kinds"].keys()
    with pytest.raises(ValueError, match="strength must be >= 0"):
        LatencyRegularizer(staircase_tree, strength=-1)
    assert isinstance(clone.tree, TimingTree)


@pytest.mark.parametrize(
    "build",
    [lambda: lenet((16, 48, 64)), lambda: depthwise_net(multiplier=3)],
    ids=["widths_moved", "multiplier_derived_again"],
)
def test_revive_to_target_gives_back_channels_but_stays_under_it(build, staircase_tree):
    gated = latency_aware(build())
    wrapped = [layer for layer in gated.layers if hasattr(layer, "alive")]
    for w in wrapped:
        alive = np.zeros(w.channels, "float32")
        alive[:2] = 1.0
        w.alive.assign(alive)
    reg = LatencyRegularizer(staircase_tree)
    low = reg.predict(gated).total_us
    full = reg.predict(latency_aware(build())).total_us
    target = (low + full) / 2
    changes = revive_to_target(gated, staircase_tree, target, low)
    after = reg.predict(gated).total_us
    assert changes and low < after <= target * 1.001
    assert sum(int(w.alive.numpy().sum()) for w in wrapped) > 2 * len(wrapped)
    members = channel_dependencies(gated)[1]
    for root, (old, new) in changes.items():  # what it reports is what the model now has
        assert (
            old == 2
            and new == int(members[root][0].alive.numpy().sum()) == members[root][0].mask().sum()
        )


def test_predicted_us_at_any_widths_is_the_prediction_of_that_structure(staircase_tree):
    gated = latency_aware(lenet((16, 48, 64)))
    kernels, members = channel_dependencies(gated)
    widths = {root: max(1, len(ws[0].alive.numpy()) // k) for k, (root, ws) in
              enumerate(members.items(), 2)}  # fmt: skip
    for root, ws in members.items():
        for w in ws:
            w.alive.assign((np.arange(w.channels) < widths[root]).astype("float32"))
    expected = LatencyRegularizer(staircase_tree).predict(gated).total_us
    assert predicted_us(staircase_tree, kernels, widths) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("build", [lenet, depthwise_net, swish_net])
def test_predict_us_is_the_prediction_of_the_stripped_model(build, staircase_tree):
    """The per-epoch prediction, from kernels moved along their dependencies, equals the
    per-kernel report of the model strip() gives: removed channels and closed gates alike."""
    gated = latency_aware(build())
    reg = LatencyRegularizer(staircase_tree)
    rng = np.random.default_rng(3)
    for w in regularizer_wrappers(gated):
        w.alive.assign((rng.random(w.channels) < 0.7).astype("float32"))
        w.set_gate_logits(np.where(rng.random(w.channels) < 0.3, -6.0, 6.0))
    assert reg.predict_us(gated) == pytest.approx(reg.predict(gated).total_us, rel=1e-9)


def test_an_int8_tree_prices_pruning_on_int8_kernels():
    """Kernels derived from a Keras model are float32; an int8 tree's byte features and
    memory curve must see them as int8 (a quarter of the bytes), as predict_latency does."""
    kinds = ("conv2d", "dense", "pool2d", "activation", "softmax")
    specs = [s for k in kinds for s in sample_configs(k, 60, seed=7, dtype="int8")]
    times = []
    for s in specs:
        f = compute_features(s, tile=16)
        times.append(1.0 + 1e-3 * f["flops"] / 2 + 1e-2 * (f["bytes_in"] + f["param_bytes"]))
    tree = TimingTree(tiles=(16,)).fit(specs, times, metadata={"dtype": "int8", "threads": 1})
    gated = latency_aware(lenet())
    kernels, members = channel_dependencies(gated, tree)
    assert {spec.dtype for spec, _ in kernels} == {"int8"}
    widths = {root: int(ws[0].alive.numpy().sum()) for root, ws in members.items()}
    report = predict_latency(gated, tree).total_us
    assert predicted_us(tree, kernels, widths) == pytest.approx(report, rel=1e-9)
    float32_kernels, _ = channel_dependencies(gated)  # what the pruning code priced before
    assert predicted_us(tree, float32_kernels, widths) > 1.3 * report


@pytest.mark.parametrize("build", [lenet, depthwise_net, swish_net])
def test_kernels_after_a_width_change_are_those_of_the_new_structure(build):
    gated = latency_aware(build())
    channel_dependencies(gated)  # derived (and kept) here, asked again at the widths below
    rng = np.random.default_rng(1)
    for _ in range(3):
        for w in regularizer_wrappers(gated):
            w.alive.assign((rng.random(w.channels) < 0.6).astype("float32"))
        kept, _ = channel_dependencies(gated)
        regularizer._DEPENDENCIES.pop(gated)
        fresh, _ = channel_dependencies(gated)  # stripped at these widths
        assert [spec for spec, _ in kept] == [spec for spec, _ in fresh]


@pytest.mark.parametrize("build", [lenet, swish_net])
def test_dependencies_move_every_kernel_to_other_widths(build):
    """What predicted_us relies on: the kernels derived at one set of widths, moved along their
    dependencies, are the kernels of the model stripped at another, including the sigmoid and
    multiply a swish adds. (Not depthwise_net: after a depth multiplier > 1 the channels are
    C x M, linear in each group only while the other stays.)"""
    gated = latency_aware(build())
    full, members = channel_dependencies(gated)
    assert any(spec.kind == "activation" for spec, _ in full) or build is not swish_net
    rng = np.random.default_rng(2)
    for _ in range(3):
        for w in regularizer_wrappers(gated):
            alive = rng.random(w.channels) < 0.6
            alive[0] = True
            w.alive.assign(alive.astype("float32"))
        widths = {root: int(ws[0].mask().sum()) for root, ws in members.items()}
        fresh, _ = channel_dependencies(gated)
        assert [spec_at(spec, deps, widths) for spec, deps in full] == [s for s, _ in fresh]


def test_prune_to_target_keeps_the_same_fraction_of_the_most_open_channels(staircase_tree):
    gated = latency_aware(lenet((16, 48, 64)))
    wrapped = [layer for layer in gated.layers if hasattr(layer, "alive")]
    rng = np.random.default_rng(0)
    logits = {w.name: rng.normal(2.0, 1.0, w.channels) for w in wrapped}
    for w in wrapped:
        w.set_gate_logits(logits[w.name])
    reg = LatencyRegularizer(staircase_tree)
    full = reg.predict(gated).total_us
    changes = prune_to_target(gated, staircase_tree, full / 3)
    after = reg.predict(gated).total_us
    assert changes and after <= full / 3
    fractions = [w.alive.numpy().mean() for w in wrapped]
    assert max(fractions) - min(fractions) < 0.1  # every layer alike (rounding aside)
    for w in wrapped:  # the survivors are the channels with the highest logits
        alive = w.alive.numpy() > 0
        assert logits[w.name][alive].min() >= logits[w.name][~alive].max()
    assert prune_to_target(gated, staircase_tree, full / 3) == {}  # already there


def test_pruning_stops_at_a_tenth_of_each_group_and_the_gates_cannot_go_below(staircase_tree):
    gated = latency_aware(lenet((16, 48, 64)))
    wrapped = [layer for layer in gated.layers if hasattr(layer, "alive")]
    floors = [2, 5, 7]  # ceil(0.1 * (16, 48, 64))
    assert [width_floor([w]) for w in wrapped] == floors
    reg = LatencyRegularizer(staircase_tree)
    full = reg.predict(gated).total_us
    prune_to_target(gated, staircase_tree, full / 1000)  # unreachable: stops at the floor
    assert [int(w.alive.numpy().sum()) for w in wrapped] == floors
    assert reg.predict(gated).total_us > full / 1000

    # Gates that closed everything (the mask keeps min_channels = 1) come back to the floor,
    # the most open first; with no floor, the gates' choice stands.
    for fraction, expected in ((0.1, floors), (0.0, [1, 1, 1])):
        gated = latency_aware(lenet((16, 48, 64)))
        wrapped = [layer for layer in gated.layers if hasattr(layer, "alive")]
        for w in wrapped:
            w.set_gate_logits(np.linspace(-9.0, -5.0, w.channels))  # all closed
        structural_step(gated, reg, expand=False, min_width_fraction=fraction)
        assert [int(w.alive.numpy().sum()) for w in wrapped] == expected
        for w, k in zip(wrapped, expected):  # the most open channels, all open now
            alive = w.alive.numpy() > 0
            assert alive[-k:].all()
            np.testing.assert_array_equal(np.asarray(w.mask()) > 0, alive)


def depthwise_head(multiplier=6):
    x = keras.Input((12, 12, 3))
    h = L.Conv2D(6, 3, padding="same", activation="relu")(x)
    h = L.DepthwiseConv2D(3, depth_multiplier=multiplier, padding="same", activation="relu")(h)
    return keras.Model(x, L.Dense(4)(L.GlobalAveragePooling2D()(h)))


def test_a_gated_depthwise_layer_is_charged_per_multiplier(staircase_tree):
    gated = latency_aware(depthwise_net(multiplier=3))
    conv, depthwise, pointwise = gated.layers[1:4]
    kernels, members = channel_dependencies(gated)
    roots = {ws[0].name: root for root, ws in members.items()}
    deps = {(spec.kind, spec.dims.get("cin")): [d[:3] for d in ds] for spec, ds in kernels}
    assert deps["depthwise_conv2d", 6] == [
        ("cin", roots[conv.name], 1),
        ("mult", roots[depthwise.name], 1),
    ]
    # the 1x1 convolution reads C * M = 6 * 3 channels: M per input channel, C per multiplier
    assert deps["conv2d", 18][:2] == [
        ("cin", roots[conv.name], 3),
        ("cin", roots[depthwise.name], 6),
    ]
    LatencyRegularizer(staircase_tree).update(gated)
    assert all(float(w.channel_cost) > 0 for w in (conv, depthwise, pointwise))


def test_multiplier_dependencies_reproduce_the_predicted_latency(staircase_tree):
    gated = latency_aware(depthwise_head())
    depthwise = gated.layers[2]
    kernels, members = channel_dependencies(gated)
    root = next(r for r, ws in members.items() if ws[0] is depthwise)
    predicted, grouped = [], []
    for k in range(1, 7):
        depthwise.alive.assign((np.arange(6) < k).astype("float32"))
        predicted.append(LatencyRegularizer(staircase_tree).predict(gated).total_us)
        grouped.append(group_time(staircase_tree, kernels, root, k))
    np.testing.assert_allclose(np.diff(predicted), np.diff(grouped), rtol=1e-6)


def test_expansion_works_in_multiplier_units(staircase_tree):
    gated = latency_aware(depthwise_head())
    depthwise = gated.layers[2]
    depthwise.alive.assign((np.arange(6) < 3).astype("float32"))  # 6 x 3 channels: 17..32
    _, members = channel_dependencies(gated)
    root = next(r for r, ws in members.items() if ws[0] is depthwise)
    changes = expand_to_local_minima(gated, staircase_tree, tolerance=0.05)
    assert changes[root] == (3, 5)  # 30 channels, the widest in the stair; 36 is the next
    assert depthwise.mask().tolist() == [True] * 5 + [False]


def test_channels_after_a_concatenate_are_charged_to_each_branch(staircase_tree):
    """The 1x1 convolution after an Inception-style Concatenate reads a + b channels: each
    branch's group moves its input dim one for one, and group_time follows the prediction."""
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(12, 1, activation="relu", name="a")(x)
    b = L.Conv2D(20, 3, padding="same", activation="relu", name="b")(x)
    h = L.Conv2D(8, 1, name="after")(L.Concatenate()([a, b]))
    gated = latency_aware(keras.Model(x, L.Dense(2)(L.GlobalAveragePooling2D()(h))))
    kernels, members = channel_dependencies(gated)
    roots = {ws[0].layer.name: root for root, ws in members.items()}
    deps = {spec.kind + str(spec.dims.get("cin", "")): ds for spec, ds in kernels}
    assert sorted(d[:3] for d in deps["conv2d32"]) == sorted(
        [("cin", roots["a"], 1), ("cin", roots["b"], 1), ("cout", roots["after"], 1)]
    )
    assert sorted(d[:3] for d in deps["concat"]) == sorted(
        [("c", roots["a"], 1), ("c", roots["b"], 1)]
    )
    branch = next(
        w for w in gated.layers if getattr(w, "layer", None) is not None and w.layer.name == "b"
    )
    predicted, grouped = [], []
    for k in (20, 17, 9, 3):
        branch.alive.assign((np.arange(20) < k).astype("float32"))
        predicted.append(LatencyRegularizer(staircase_tree).predict(gated).total_us)
        grouped.append(group_time(staircase_tree, kernels, roots["b"], k))
    np.testing.assert_allclose(np.diff(predicted), np.diff(grouped), rtol=1e-6)
    costs = LatencyRegularizer(staircase_tree).channel_costs(gated)
    assert costs[roots["a"]] > 0 and costs[roots["b"]] > costs[roots["a"]]  # 3x3 vs 1x1


def test_revive_to_target_halves_a_step_that_crosses_more_than_the_budget(staircase_tree):
    """A wide layer's 10% step crosses two stairs; the budget pays for one: revival takes the
    smaller step (the layer ends at the top of the next stair) instead of stopping."""
    gated = latency_aware(lenet((16, 32, 640)))
    dense = next(w for w in regularizer_wrappers(gated) if w.channels == 640)
    alive = np.zeros(640, "float32")
    alive[:288] = 1.0  # the top of a stair of 16; the next 10% step (29) reaches 317
    dense.alive.assign(alive)
    kernels, members = channel_dependencies(gated, staircase_tree)
    root = next(r for r, group in members.items() if group[0] is dense)
    widths = {r: int(group[0].alive.numpy().sum()) for r, group in members.items()}
    at = {w: predicted_us(staircase_tree, kernels, widths | {root: w}) for w in (288, 304, 305)}
    assert at[305] > at[304] * 1.001  # a stair between 304 and 305: the test's premise
    changes = revive_to_target(gated, staircase_tree, at[304] * 1.0001, at[288])
    assert changes.get(root) == (288, 304) and int(dense.alive.numpy().sum()) == 304
