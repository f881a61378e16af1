import json

import numpy as np
import pytest

from fdi_keras.errors import MissingKindError, TreeFormatError
from fdi_keras.features import FEATURES, compute_features
from fdi_keras.profiling.sampling import sample_configs
from fdi_keras.specs import LayerSpec
from fdi_keras.timing import FlopsLinear, TimingTree
from fdi_keras.timing.tree import FORMAT_VERSION, LEAF_WEIGHTS_BEFORE_CACHE, timed_as


def staircase_data(n=500, seed=0):
    """A dense kernel whose time steps at multiples of 16 output units, and is 1.5x slower
    off the multiples (a different microkernel): what XNNPack does on this project's CPUs."""
    rng = np.random.default_rng(seed)
    specs, times = [], []
    for _ in range(n):
        cin, cout = int(rng.integers(8, 512)), int(rng.integers(4, 300))
        padded = -(-cout // 16) * 16
        slow = 1.0 if cout % 16 == 0 else 1.5
        specs.append(LayerSpec("dense", dict(m=1, cin=cin, cout=cout)))
        times.append(0.8 + 2e-4 * cin * padded * slow)
    return specs, np.array(times)


@pytest.fixture(scope="module")
def fitted():
    specs, y = staircase_data(800)  # about 40 multiples of 16 among the training rows
    return TimingTree().fit(specs, y), specs, y


def test_recovers_the_staircase(fitted):
    tree, _, _ = fitted
    model = tree.kinds_["dense"]
    assert model["tile"] == 16
    flat = model["tree"]
    assert (flat.variable[0], flat.condition[0], flat.value[0]) == ("cout", "mod", 16)
    test_specs, test_y = staircase_data(200, seed=1)
    err = np.abs(tree.predict(test_specs) - test_y) / test_y
    assert err.max() < 0.01
    # The 64 -> 65 step: one more unit, half again slower.
    a = tree.predict_one(LayerSpec("dense", dict(m=1, cin=256, cout=64)))
    b = tree.predict_one(LayerSpec("dense", dict(m=1, cin=256, cout=65)))
    assert b / a == pytest.approx((0.8 + 2e-4 * 256 * 80 * 1.5) / (0.8 + 2e-4 * 256 * 64), rel=0.01)


def test_a_tree_learns_that_a_half_empty_last_tile_runs_slower():
    """A batch-1 Dense on the AMD EPYC VM (XNNPack, float32) ran ~1.6x slower when its last
    tile of 32 outputs held 1-16 of them: 512 outputs 22.2 us, 513 35.6 us, 529 23.5 us (cin
    1000). No `cout % k == 0` split nor rounding up expresses that 529 outputs beat 513."""

    def time_us(cin, cout):
        slow = 1.6 if (cout - 1) % 32 + 1 <= 16 else 1.0
        return 0.5 + 1.1e-5 * cin * -(-cout // 32) * 32 * slow

    rng = np.random.default_rng(0)
    specs, times = [], []
    for _ in range(600):
        cin, cout = int(rng.integers(64, 1024)), int(rng.integers(17, 700))
        specs.append(LayerSpec("dense", dict(m=1, cin=cin, cout=cout)))
        times.append(time_us(cin, cout))
    tree = TimingTree().fit(specs, times)
    flat = tree.kinds_["dense"]["tree"]
    assert (flat.variable[0], flat.condition[0], flat.value[0]) == ("cout_in_last_32", "le", 16)
    assert "if cout_in_last_32 <= 16:" in tree.explain("dense")

    def predict(cout):
        return tree.predict_one(LayerSpec("dense", dict(m=1, cin=1000, cout=cout)))

    assert predict(513) / predict(512) == pytest.approx(
        time_us(1000, 513) / time_us(1000, 512), rel=0.03
    )
    assert predict(529) < predict(513)  # more outputs, less time
    restored = TimingTree.from_dict(json.loads(json.dumps(tree.to_dict())))
    assert restored.predict_one(LayerSpec("dense", dict(m=1, cin=700, cout=70))) == pytest.approx(
        tree.predict_one(LayerSpec("dense", dict(m=1, cin=700, cout=70)))
    )


def test_a_kind_too_small_for_folds_never_splits_on_a_last_tile():
    """Last-tile splits must show a cross-validated gain; 60 rows (fewer than four leaves'
    worth) leave no folds to show it with, so even rows that follow the rule get none."""
    rng = np.random.default_rng(1)
    specs = [
        LayerSpec("dense", dict(m=1, cin=int(rng.integers(64, 1024)), cout=int(c)))
        for c in rng.integers(17, 700, size=60)
    ]
    times = [
        (1.6 if (s.dims["cout"] - 1) % 32 + 1 <= 16 else 1.0)
        * 1.1e-5
        * s.dims["cin"]
        * s.dims["cout"]
        for s in specs
    ]
    tree = TimingTree().fit(specs, times)
    assert tree.kinds_["dense"]["validation_mape"] is None  # no folds
    assert "_in_last_" not in tree.explain("dense")
    # The same rows with leaves of 10 have folds, and the split shows its gain there.
    assert "_in_last_" in TimingTree(min_samples_leaf=10).fit(specs, times).explain("dense")


def input_staircase(step, n=500, seed=2):
    """A Dense whose time steps every `step` input channels (int8 GEMMs on the AMD EPYC VM
    step every 8: its packed depth is a multiple of 8); `step` 1 is smooth in cin."""
    rng = np.random.default_rng(seed)
    specs = [
        LayerSpec("dense", dict(m=1, cin=int(ci), cout=int(co)))
        for ci, co in zip(rng.integers(1, 200, size=n), rng.integers(1, 40, size=n) * 16)
    ]
    times = [0.6 + 2e-4 * -(-s.dims["cin"] // step) * step * s.dims["cout"] for s in specs]
    return specs, np.array(times) * rng.uniform(0.97, 1.03, size=n)  # a timer's noise


def test_a_tree_learns_the_tile_of_the_input_channels():
    specs, y = input_staircase(8)
    tree = TimingTree().fit(specs, y)
    assert tree.kinds_["dense"]["in_tile"] == 8
    assert "input channels rounded up to 8" in tree.explain("dense")

    def predict(cin):
        return tree.predict_one(LayerSpec("dense", dict(m=1, cin=cin, cout=256)))

    assert predict(9) == pytest.approx(predict(16), rel=0.005)  # one stair (but the bytes read)
    assert predict(17) / predict(16) == pytest.approx(
        (0.6 + 2e-4 * 24 * 256) / (0.6 + 2e-4 * 16 * 256), rel=0.02
    )
    restored = TimingTree.from_dict(json.loads(json.dumps(tree.to_dict())))
    np.testing.assert_allclose(restored.predict(specs), tree.predict(specs))
    # Times smooth in cin keep input channels unrounded.
    smooth_specs, smooth_y = input_staircase(1)
    assert TimingTree().fit(smooth_specs, smooth_y).kinds_["dense"]["in_tile"] == 1


def test_a_tree_saved_before_input_tiles_predicts_what_it_did(fitted, tmp_path):
    """A format-9 tree has no `in_tile` per kind nor `in_tiles` hyperparameter: input
    channels unrounded."""
    tree, specs, _ = fitted
    data = tree.to_dict()
    del data["hyperparameters"]["in_tiles"]
    for model in data["kinds"].values():
        assert model.pop("in_tile") == 1
    path = tmp_path / "format9.json"
    path.write_text(json.dumps({**data, "format_version": 9}))
    np.testing.assert_allclose(TimingTree.load(str(path)).predict(specs), tree.predict(specs))


def test_flops_baseline_cannot_see_the_staircase(fitted):
    _, specs, y = fitted
    err = np.abs(FlopsLinear().fit(specs, y).predict(specs) - y) / y
    assert err.mean() > 0.05


def test_leaves_are_non_negative(fitted):
    tree, _, _ = fitted
    assert all(w >= 0 for ws in tree.kinds_["dense"]["tree"].weights for w in ws)


def test_explain_names_the_rules(fitted):
    text = fitted[0].explain()
    assert "dense: 800 rows; staircase tile 16" in text
    assert "if cout % 16 == 0:" in text and "if cout % 16 != 0:" in text
    assert "*flops" in text


def test_json_round_trip(fitted, tmp_path):
    tree, specs, _ = fitted
    tree.metadata_["device"] = {"backend": "local", "device": "test"}
    path = str(tmp_path / "tree.json")
    tree.save(path)
    loaded = TimingTree.load(path)
    np.testing.assert_allclose(loaded.predict(specs), tree.predict(specs))
    assert loaded.metadata_["device"]["device"] == "test"
    assert loaded.explain() == tree.explain()


def without_cache_features(data: dict) -> dict:
    """`data` (a tree's dict) as a tree of format 10 or older could have saved it: its leaves
    weigh no bytes past a cache knot, and have no weights for them."""
    data = json.loads(json.dumps(data))
    for m in data["kinds"].values():
        m["tree"]["weights"] = [w[:LEAF_WEIGHTS_BEFORE_CACHE] for w in m["tree"]["weights"]]
    return {**data, "format_version": 10}


def test_a_tree_saved_before_the_cache_features_predicts_what_it_did(fitted, tmp_path):
    tree, specs, _ = fitted
    old = without_cache_features(tree.to_dict())
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(old))
    loaded = TimingTree.load(str(path))
    for spec in specs:
        leaf_weights = np.array(tree.leaf(spec)[1])[:LEAF_WEIGHTS_BEFORE_CACHE]
        features = compute_features(spec, **tree.leaf(spec)[2])
        before = leaf_weights @ [1, *(features[f] for f in FEATURES[: len(leaf_weights) - 1])]
        assert loaded.predict_one(spec) == pytest.approx(before)
    assert loaded.to_dict()["format_version"] == FORMAT_VERSION


def test_a_tree_learns_that_bytes_past_a_cache_cost_more():
    """A memory-bound kind at 100 GB/s up to 2 MB of working set and 30 GB/s past it: the
    features past the cache knots let a leaf say so, where bytes alone would average the two."""
    rng = np.random.default_rng(0)
    sides = rng.integers(8, 200, 160)
    channels = rng.integers(8, 256, 160)
    specs = [LayerSpec("add", dict(h=int(h), w=int(h), c=int(c))) for h, c in zip(sides, channels)]

    def time_us(spec):
        moved = 3 * 4 * spec.dims["h"] ** 2 * spec.dims["c"]
        return 0.5 + moved / 1e5 + max(0, moved - 2**21) * (1 / 3e4 - 1 / 1e5)

    y = np.array([time_us(s) for s in specs]) * rng.lognormal(0, 0.02, len(specs))
    tree = TimingTree().fit(specs, y)
    large = [LayerSpec("add", dict(h=112, w=112, c=96)), LayerSpec("add", dict(h=56, w=56, c=240))]
    small = [LayerSpec("add", dict(h=28, w=28, c=64)), LayerSpec("add", dict(h=14, w=14, c=200))]
    for spec in large + small:
        assert tree.predict_one(spec) == pytest.approx(time_us(spec), rel=0.06)


def test_a_tree_saved_when_copies_also_counted_builtin_concats_predicts_what_it_did(tmp_path):
    rng = np.random.default_rng(0)
    specs = [
        LayerSpec("concat", dict(h=int(h), w=int(h), c=int(c), n=int(n)))
        for h, c, n in zip(
            rng.integers(2, 40, 120), rng.integers(8, 64, 120), rng.integers(2, 9, 120)
        )
    ]
    tree = TimingTree().fit(specs, [1.0 + 1e-3 * s.dims["h"] ** 2 * s.dims["n"] for s in specs])
    data = without_cache_features(tree.to_dict())
    for w in data["kinds"]["concat"]["tree"]["weights"]:
        w[-2:] = [2e-3, 1e-3]  # format 5: a leaf weighing both steps and copies
    path = tmp_path / "tree.json"
    path.write_text(json.dumps({**data, "format_version": 5}))
    loaded = TimingTree.load(str(path))
    for spec in specs:  # format 5 counted a builtin concat's pixel-input runs in both
        leaf_weights = np.array(tree.leaf(spec)[1])
        features = compute_features(spec, tree.kinds_["concat"]["tile"])
        runs = spec.dims["h"] * spec.dims["w"] * spec.dims["n"]
        steps = FEATURES.index("steps")
        before = leaf_weights[: 1 + steps] @ [1, *(features[f] for f in FEATURES[:steps])]
        before += 1e-3 * runs + (2e-3 * runs if spec.dims["n"] > 5 else 0.0)
        assert loaded.predict_one(spec) == pytest.approx(before)


def test_a_tree_saved_before_convolutions_counted_their_runs_predicts_what_it_did(tmp_path):
    rng = np.random.default_rng(0)
    specs = [
        LayerSpec("conv2d", dict(h=int(h), w=int(h), cin=int(c), cout=16, kh=3, kw=3, sh=1, sw=1))
        for h, c in zip(rng.integers(4, 40, 120), rng.integers(1, 64, 120))
    ]
    runs = [compute_features(s)["copies"] for s in specs]
    tree = TimingTree().fit(specs, [1.0 + 1e-3 * r for r in runs])
    copies = 1 + FEATURES.index("copies")
    assert any(w[copies] > 0 for w in tree.kinds_["conv2d"]["tree"].weights)  # weighs them now
    path = tmp_path / "tree.json"
    path.write_text(json.dumps({**without_cache_features(tree.to_dict()), "format_version": 7}))
    loaded = TimingTree.load(str(path))
    for spec in specs:  # format 7 counted no runs for a convolution
        leaf_weights = np.array(tree.leaf(spec)[1])
        features = compute_features(spec, tree.kinds_["conv2d"]["tile"])
        before = leaf_weights[:copies] @ [1, *(features[f] for f in FEATURES[: copies - 1])]
        assert loaded.predict_one(spec) == pytest.approx(before)


def test_corrupt_file(tmp_path):
    path = tmp_path / "tree.json"
    path.write_text('{"format": "fdi_keras.timing_tree", "format_')
    with pytest.raises(TreeFormatError, match="not valid JSON.*corrupt"):
        TimingTree.load(str(path))


def test_foreign_and_other_version_files(fitted, tmp_path):
    path = tmp_path / "tree.json"
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(TreeFormatError, match="not an fdi_keras timing tree"):
        TimingTree.load(str(path))
    data = fitted[0].to_dict()
    path.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(
        TreeFormatError, match=f"format_version 99.*versions 2 to {FORMAT_VERSION}.*profile_device"
    ):
        TimingTree.load(str(path))
    del data["overhead_us"]
    path.write_text(json.dumps(data))
    with pytest.raises(TreeFormatError, match="lacks the field 'overhead_us'"):
        TimingTree.load(str(path))


def test_missing_kind_names_the_kind_and_the_fix(fitted):
    spec = LayerSpec("lstm", dict(t=8, cin=4, units=8))
    with pytest.raises(
        MissingKindError, match=r"no model for kernel kind 'lstm'.*\['dense'\].*--kinds=lstm"
    ):
        fitted[0].predict_one(spec)


def test_not_fitted_and_bad_arguments():
    with pytest.raises(ValueError, match="not fitted"):
        TimingTree().predict([LayerSpec("dense", dict(m=1, cin=2, cout=2))])
    with pytest.raises(ValueError, match="max_depth"):
        TimingTree(max_depth=-1)
    with pytest.raises(ValueError, match="in_tiles=\\(\\)"):
        TimingTree(in_tiles=())
    with pytest.raises(ValueError, match="positive integers"):
        TimingTree(tiles=(0, 8))
    with pytest.raises(ValueError, match="positive microseconds"):
        TimingTree().fit([LayerSpec("dense", dict(m=1, cin=2, cout=2))], [0.0])
    with pytest.raises(ValueError, match="equal length"):
        TimingTree().fit([], [1.0])


def test_flops_baseline_as_a_tree_predicts_like_the_baseline():
    specs = [s for kind in ("conv2d", "gru") for s in sample_configs(kind, 40, seed=5)]
    times = [1.0 + 1e-4 * compute_features(s)["flops"] for s in specs]
    baseline = FlopsLinear().fit(specs, times)
    tree = baseline.as_tree()
    np.testing.assert_allclose([tree.predict_one(s) for s in specs], baseline.predict(specs))
    flops_only = baseline.as_tree(intercept=False)  # the FLOP-budget compressor's cost
    fixed = {kind: weights[0] for kind, weights in baseline.weights_.items()}
    assert fixed["conv2d"] > 0.5  # the fitted 1.0 us, so dropping it is visible
    np.testing.assert_allclose(
        [flops_only.predict_one(s) for s in specs],
        baseline.predict(specs) - [fixed[s.kind] for s in specs],
    )


def test_a_leaf_s_fixed_cost_is_at_most_the_kind_s_fastest_time(fitted):
    """Large layers with a constant extra cost (a slower code path) tempt an unbounded leaf
    into a large intercept, which it then charges in full to every smaller layer in its
    range. A leaf's intercept is bounded (`intercept_max`); the tree bounds it by the kind's
    fastest measured time, which no configuration's fixed cost can exceed."""
    from fdi_keras.timing.leaf import design_matrix, fit_nonnegative

    rng = np.random.default_rng(3)
    specs = [
        LayerSpec("dense", dict(m=1, cin=int(c), cout=int(c))) for c in rng.integers(256, 1024, 120)
    ]
    x = design_matrix([compute_features(s) for s in specs])
    y = 60.0 + 1e-5 * x[:, 1]  # column 1: FLOPs
    assert fit_nonnegative(x, y)[0] == pytest.approx(60.0, rel=1e-3)
    bounded = fit_nonnegative(x, y, intercept_max=1.0)
    assert 0 <= bounded[0] <= 1.0 + 1e-9
    slack = fit_nonnegative(x, y, intercept_max=1e9)  # a slack bound changes nothing
    np.testing.assert_allclose(slack, fit_nonnegative(x, y), rtol=1e-4, atol=1e-9)

    tree, _, times = fitted
    flat = tree.kinds_["dense"]["tree"]
    assert all(w[0] <= times.min() * (1 + 1e-9) for w in flat.weights)


def test_a_dense_layer_over_several_rows_is_timed_as_its_1x1_convolution():
    one_row = LayerSpec("dense", dict(m=1, cin=96, cout=192))
    assert timed_as(one_row) is one_row
    feature_map = timed_as(LayerSpec("dense", dict(m=64, cin=96, cout=192), dtype="int8"))
    assert (feature_map.kind, feature_map.dtype) == ("conv2d", "int8")
    assert feature_map.dims == dict(h=8, w=8, cin=96, cout=192, kh=1, kw=1, sh=1, sw=1)
    assert timed_as(LayerSpec("dense", dict(m=23, cin=4, cout=4))).dims["w"] == 23  # a prime
    assert timed_as(LayerSpec("dense", dict(m=12, cin=4, cout=4))).dims["h"] == 3
    dense = LayerSpec("dense", dict(m=64, cin=96, cout=192))
    conv = timed_as(dense)
    for name in ("flops", "param_bytes", "bytes_in", "bytes_out"):
        assert compute_features(dense)[name] == compute_features(conv)[name]


def test_a_dense_over_several_rows_is_predicted_by_the_conv2d_tree():
    specs, y = staircase_data(200)
    rng = np.random.default_rng(3)
    convs = [
        LayerSpec("conv2d", dict(h=h, w=h, cin=c, cout=c, kh=1, kw=1, sh=1, sw=1))
        for h, c in zip(rng.integers(1, 16, 100), rng.integers(8, 128, 100))
    ]
    conv_time = [1.0 + 1e-3 * compute_features(s)["flops"] for s in convs]
    tree = TimingTree().fit([*specs, *convs], [*y, *conv_time])
    wide = LayerSpec("dense", dict(m=64, cin=96, cout=192))
    assert tree.predict_one(wide) == tree.predict_one(timed_as(wide))
    assert tree.predict_one(wide) == pytest.approx(1.0 + 1e-3 * 2 * 64 * 96 * 192, rel=0.05)
    one_row = LayerSpec("dense", dict(m=1, cin=96, cout=192))  # the dense tree's
    assert tree.predict_one(one_row) == TimingTree().fit(specs, y).predict_one(one_row)


def test_a_dense_over_several_rows_without_a_conv2d_tree_falls_back_to_the_dense_tree(fitted):
    spec = LayerSpec("dense", dict(m=8, cin=64, cout=64))
    assert fitted[0].predict_one(spec) > 0


def test_a_depthwise_tree_splits_first_on_the_depth_multiplier():
    """XNNPack runs a depth multiplier above 1 through slower code (3-4 G MAC/s against 13-18
    on one AMD VM): the depthwise tree's root splits there, so neither side's leaves mix the
    two rates."""
    specs = sample_configs("depthwise_conv2d", 300)

    def truth(s):
        return 1.0 + 1e-4 * compute_features(s)["flops"] * (4.0 if s.dims["mult"] > 1 else 1.0)

    assert sum(s.dims["mult"] > 1 for s in specs) >= 20
    tree = TimingTree().fit(specs, [truth(s) for s in specs])
    flat = tree.kind_model("depthwise_conv2d")["tree"]
    assert (flat.variable[0], flat.condition[0], flat.value[0]) == ("mult", "le", 1)
    for mult in (1, 2):
        spec = LayerSpec("depthwise_conv2d", dict(h=56, w=56, cin=96, mult=mult, kh=3, kw=3,
                                                  sh=1, sw=1), {"padding": "same"})  # fmt: skip
        assert tree.predict_one(spec) == pytest.approx(truth(spec), rel=0.1)


def _same_splits_down_to(pruned, full, a=0, b=0) -> bool:
    """Whether every split of `pruned` is `full`'s at the same place (pruned is full cut)."""
    if pruned.left[a] == -1:
        return True
    same = (pruned.variable[a], pruned.condition[a], pruned.value[a]) == (
        full.variable[b],
        full.condition[b],
        full.value[b],
    )
    return same and all(
        _same_splits_down_to(pruned, full, getattr(pruned, side)[a], getattr(full, side)[b])
        for side in ("left", "right")
    )


def test_pruning_cuts_noise_splits_and_the_seed_only_moves_the_cut():
    # Linear in the FLOPs with 3% noise: every split a tree grown without a minimum gain
    # finds is noise. Cross-validated pruning cuts them back; the folds' seed only chooses
    # where the tree grown on every row is cut, never which splits it has.
    rng = np.random.default_rng(3)
    specs = sample_configs("dense", 400, seed=3)
    flops = np.array([compute_features(s)["flops"] for s in specs])
    y = (1.0 + 1e-4 * flops) * rng.lognormal(0.0, 0.03, len(flops))
    full = TimingTree(min_gain=0.0, validation_fraction=0.0, tiles=(1,)).fit(specs, y)
    full_flat = full.kinds_["dense"]["tree"]
    leaves = sum(1 for child in full_flat.left if child == -1)
    assert leaves > 8
    for seed in (0, 1, 2):
        tree = TimingTree(min_gain=0.0, tiles=(1,), seed=seed).fit(specs, y)
        flat = tree.kinds_["dense"]["tree"]
        assert sum(1 for child in flat.left if child == -1) <= 2  # 1 on these rows
        assert _same_splits_down_to(flat, full_flat)
        assert tree.kinds_["dense"]["validation_mape"] < 0.05  # the noise, about 2.4%


def test_a_kind_of_one_sweep_fits_unpruned():
    # Every row differs from the others in the swept channel count only: one sweep, no fold
    # to hold out.
    specs = [LayerSpec("dense", dict(m=1, cin=64, cout=c)) for c in range(8, 108)]
    y = np.array([1.0 + 0.01 * s.dims["cout"] for s in specs])
    model = TimingTree().fit(specs, y).kinds_["dense"]
    assert model["validation_mape"] is None


def test_rows_of_another_run_are_expressed_at_the_profile_s_machine_speed():
    """A run whose calibration kernel was slow throughout keeps that slowness under its own
    median; at the profile's reference it is divided out (kernel and network rows alike)."""
    from fdi_keras.timing.tree import calibration_reference, network_rows, rows_to_dataset

    def row(kind, dims, time_us, calibration_us):
        spec = LayerSpec(kind, dims).to_dict()
        return {
            "status": "ok",
            "spec": spec,
            "time_us": time_us,
            "median_us": time_us,
            "calibration_us": calibration_us,
        }

    profile = [row("softmax", {"n": n}, 10.0, 20.0) for n in (10, 20, 30)]
    slow_run = [
        row("softmax", {"n": 40}, 12.0, 24.0),
        row("network", {"seed": 1}, 120.0, 24.0),
    ]
    reference = calibration_reference(profile)
    assert reference == 20.0
    ((_, own),) = rows_to_dataset(slow_run).values()
    ((_, at_profile),) = rows_to_dataset(slow_run, reference=reference).values()
    assert own[0] == pytest.approx(12.0)
    assert at_profile[0] == pytest.approx(10.0)
    _, times = network_rows(slow_run, reference=reference)
    assert times["min"][0] == pytest.approx(100.0) and times["median"][0] == pytest.approx(100.0)
