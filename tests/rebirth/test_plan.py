"""Pattern detection: what plan() finds, what it must not find, and why it skips."""

import keras
import pytest
from rebirth_helpers import inception, plain_mlp, stem

from fdi_keras import rebirth
from fdi_keras.layers import LocalResponseNormalization

L = keras.layers


def kinds(plan):
    return [m.kind for m in plan.merges]


def test_stem_has_a_streamline_and_a_bn_fold():
    p = rebirth.plan(stem())
    assert kinds(p) == ["fold_bn", "streamline"]
    streamline = p.merges[1]
    assert streamline.layers[0] == "c1" and len(streamline.layers) == 5
    assert not streamline.exact and p.merges[0].exact
    assert "5x5/2" in streamline.detail


def test_inception_module_is_a_branch_merge_after_bn_folds():
    p = rebirth.plan(inception(bn=True))
    assert kinds(p).count("branch") == 1 and kinds(p).count("fold_bn") == 6
    branch = next(m for m in p.merges if m.kind == "branch")
    assert branch.layers[-1] == "module"
    # choosing only the branch merge brings the BN folds it needs
    assert kinds(p.select(kinds=["branch"])).count("fold_bn") == 6


def test_pool_feeding_two_consumers_is_not_merged():
    x = keras.Input((16, 16, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c")(x)
    pooled = L.MaxPooling2D(name="shared_pool")(h)
    out = L.Add()([L.Conv2D(8, 1)(pooled), L.Conv2D(8, 3, padding="same")(pooled)])
    p = rebirth.plan(keras.Model(x, out))
    assert not any("shared_pool" in m.layers for m in p.merges)
    assert any("shared_pool" in s.reason and "2 consumers" in s.reason for s in p.skipped)


def test_bn_after_a_nonlinear_activation_is_not_folded():
    x = keras.Input((8, 8, 3))
    h = L.BatchNormalization()(L.Conv2D(4, 3, activation="relu", name="c")(x))
    p = rebirth.plan(keras.Model(x, h))
    assert not p.merges
    assert any("cannot be folded" in s.reason for s in p.skipped)


def test_lrn_in_a_shared_position_is_not_merged():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, name="c")(x)
    a = LocalResponseNormalization(name="lrn")(h)
    out = L.Concatenate()([a, L.ReLU()(h)])
    p = rebirth.plan(keras.Model(x, out))
    assert not any(m.kind == "streamline" for m in p.merges)
    assert any("2 consumers" in s.reason for s in p.skipped)


def test_a_model_without_patterns_gets_an_empty_plan():
    p = rebirth.plan(plain_mlp())
    assert not p and p.merges == [] and "No slimmable pattern" in str(p)


def test_plan_json_round_trip_and_selection():
    p = rebirth.plan(stem())
    again = rebirth.Plan.from_json(p.to_json())
    assert again.merges == p.merges and again.skipped == p.skipped
    assert kinds(p.select(kinds=["streamline"])) == ["streamline"]


def test_predicted_savings_come_from_the_tree(staircase_tree_with_lrn):
    model = stem()
    p = rebirth.plan(model, staircase_tree_with_lrn)
    fold, streamline = p.merges
    assert fold.predicted_saving_ms == 0.0
    assert streamline.predicted_saving_ms > 0  # LRN and the pool are gone
    assert f"{streamline.predicted_saving_ms:.3f}" in str(p)
    with pytest.raises(TypeError):
        rebirth.plan("not a model")
