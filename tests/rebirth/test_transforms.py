"""The slimmed graphs: exact BN folds, merged convolutions' shapes and receptive fields."""

import keras
import numpy as np
import pytest
from rebirth_helpers import inception, randomize_batchnorm, stem

from fdi_keras import rebirth

L = keras.layers


def _x(shape, n=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


@pytest.mark.parametrize("activation_layer", [None, L.ReLU])
def test_bn_folding_is_exact_for_conv_and_dense(activation_layer):
    x = keras.Input((9, 9, 3))
    h = L.BatchNormalization()(L.Conv2D(6, 3, strides=2, name="c")(x))
    h = activation_layer()(h) if activation_layer else h
    h = L.BatchNormalization()(L.Dense(5, name="d")(L.Flatten()(h)))
    model = randomize_batchnorm(keras.Model(x, h), seed=1)
    p = rebirth.plan(model)
    assert [m.kind for m in p.merges] == ["fold_bn", "fold_bn"]
    folded = rebirth.apply_merges(model, p.merges)
    assert not any(isinstance(layer, L.BatchNormalization) for layer in folded.layers)
    inputs = _x((9, 9, 3))
    np.testing.assert_allclose(folded(inputs), model(inputs), atol=1e-4)


def test_folding_inside_an_inception_module_is_exact():
    model = inception(bn=True)
    folds = [m for m in rebirth.plan(model).merges if m.kind == "fold_bn"]
    inputs = _x((8, 8, 16))
    np.testing.assert_allclose(rebirth.apply_merges(model, folds)(inputs), model(inputs), atol=1e-4)


def test_streamlined_conv_takes_the_pool_stride_and_keeps_the_receptive_field():
    model = stem()
    p = rebirth.plan(model)
    slimmed = rebirth.apply_merges(model, p.merges)
    conv = slimmed.get_layer("c1")
    # 3x3/1 conv then 3x3/2 pool: every output sees 3 + (3 - 1) * 1 = 5 pixels, stride 2
    assert conv.kernel_size == (5, 5) and conv.strides == (2, 2)
    assert conv.output.shape == model.get_layer("c2").input.shape
    assert not any(
        type(x).__name__ in ("LocalResponseNormalization", "MaxPooling2D") for x in slimmed.layers
    )
    # receptive field: output (0, 0) of the merged conv depends on input rows/cols 0..3 only
    # ('same' padding), and not on anything beyond
    probe = keras.Model(slimmed.inputs, conv.output)
    base = _x((16, 16, 3), n=1)
    moved = base.copy()
    moved[0, 4:, 4:] += 5.0
    np.testing.assert_allclose(probe(base)[0, 0, 0], probe(moved)[0, 0, 0], atol=1e-6)


def test_average_pool_merge_starts_exact_before_a_nonlinearity():
    x = keras.Input((12, 12, 3))
    model = keras.Model(x, L.AveragePooling2D(2, 2)(L.Conv2D(4, 3, name="c")(x)))
    p = rebirth.plan(model)
    assert [m.kind for m in p.merges] == ["streamline"]
    slimmed = rebirth.apply_merges(model, p.merges)
    assert slimmed.get_layer("c").kernel_size == (4, 4)
    inputs = _x((12, 12, 3))
    np.testing.assert_allclose(slimmed(inputs), model(inputs), atol=1e-5)


def test_branch_merge_keeps_the_module_width_and_its_own_filters():
    model = inception()
    p = rebirth.plan(model).select(kinds=["branch"])
    slimmed = rebirth.apply_merges(model, p.merges)
    assert slimmed.get_layer("module").output.shape == model.get_layer("module").output.shape
    wide3, wide5 = slimmed.get_layer("wide3"), slimmed.get_layer("wide5")
    assert wide3.filters == 4 + 8 and wide5.filters == 4 + 4  # 1x1 in front, pool proj behind
    # the 3x3 branch's own filters are carried over, behind the absorbed 1x1 filters
    np.testing.assert_array_equal(
        wide3.get_weights()[0][..., 4:], model.get_layer("wide3").get_weights()[0]
    )
    np.testing.assert_array_equal(
        wide5.get_weights()[0][..., :4], model.get_layer("wide5").get_weights()[0]
    )
    assert len(slimmed.get_layer("module").input) == 2


def test_branch_assignment_keeps_the_concatenation_order():
    assign = rebirth.transforms.branch_assignment
    assert assign(["1x1", "wide", "wide", "pool_proj"]) == [1, 1, 2, 2]
    assert assign(["wide", "1x1", "pool_proj", "wide"]) == [0, 0, 0, 3]


def test_example_networks_slim_as_expected():
    """The examples' VGG-style and BN ResNet-style nets: pools merged, BN folded exactly."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
    from examples.models import googlenet, resnet_bn, vgg_pool

    vgg = vgg_pool()
    p = rebirth.plan(vgg)
    assert [m.kind for m in p.merges] == ["streamline"] * 3  # the conv before each pool
    slim_vgg = rebirth.apply_merges(vgg, p.merges)
    assert not any(isinstance(x, L.MaxPooling2D) for x in slim_vgg.layers)
    assert slim_vgg.output.shape == vgg.output.shape

    resnet = randomize_batchnorm(resnet_bn(), seed=2)
    p = rebirth.plan(resnet)
    assert {m.kind for m in p.merges} == {"fold_bn"} and len(p.merges) == 9
    inputs = _x((32, 32, 3), n=2)
    np.testing.assert_allclose(
        rebirth.apply_merges(resnet, p.merges)(inputs), resnet(inputs), atol=1e-4
    )

    p = rebirth.plan(googlenet(width=0.125))
    assert [m.kind for m in p.merges].count("branch") == 9
    assert [m.kind for m in p.merges].count("streamline") == 2


def test_reduction_fold_composes_the_two_kernels():
    x = keras.Input((10, 10, 16))
    h = L.Conv2D(4, 1, name="reduce")(x)
    model = keras.Model(x, L.Conv2D(6, 3, activation="relu", name="wide")(h))
    p = rebirth.plan(model)
    assert [m.kind for m in p.merges] == ["reduction"]
    slimmed = rebirth.apply_merges(model, p.merges)
    conv = slimmed.get_layer("wide")
    assert conv.kernel.shape == (3, 3, 16, 6) and len(slimmed.layers) == 2
    inputs = _x((10, 10, 16))  # no ReLU between and 'valid' padding: the composition is exact
    np.testing.assert_allclose(slimmed(inputs), model(inputs), atol=1e-5)


def test_reductions_in_a_module_need_their_bn_folds(staircase_tree_with_lrn):
    model = inception(bn=True)
    p = rebirth.plan(model, staircase_tree_with_lrn)
    reductions = [m for m in p.merges if m.kind == "reduction"]
    assert len(reductions) == 2  # 1x1 -> 3x3 and 1x1 -> 5x5
    assert all(m.predicted_saving_ms is not None for m in reductions)
    chosen = p.select(kinds=["reduction"])
    assert [m.kind for m in chosen.merges].count("fold_bn") == 4
    slimmed = rebirth.apply_merges(model, chosen.merges)
    assert slimmed.get_layer("module").output.shape == model.get_layer("module").output.shape
