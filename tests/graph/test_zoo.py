"""The graph core on what users bring: keras.applications, nested, shared, Sequential, RNNs.

For every model: `latency_aware` + random channel masks on every gate group + `strip` gives the
gated model's outputs; `model_kernels` gives the kernels the converter emits; DeepRebirth's
plan runs.
"""

import collections

import keras
import numpy as np
import pytest
from tflite_ops import runtime_kinds
from zoo import ZOO, close_random_channels

import fdi_keras as fdi
from fdi_keras.kernels import model_kernels

# Where the converter's rewrites are not all reproduced (docs/graph.md): the tolerance per kind.
APPROXIMATE = {
    "ConvNeXtTiny": 0.05,  # 199 of 204 element-wise ops of its LayerNormalizations
    "NASNetMobile": 0.10,  # 52 ReLUs predicted, 48 run: 4 after an Add with several consumers
}
# Converting the largest ones takes 20-60 s each here; they run with `pytest -m slow`.
SLOW = {
    "ResNet50",
    "ResNet50V2",
    "DenseNet121",
    "InceptionV3",
    "InceptionResNetV2",
    "Xception",
    "NASNetMobile",
}


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def _inputs(model, seed=0):
    shape = model.inputs[0].shape
    batch = shape[0] or 2
    return np.random.default_rng(seed).normal(size=(batch, *shape[1:])).astype("float32")


@pytest.mark.parametrize("name", list(ZOO))
def test_strip_equals_gated_after_random_masks(name):
    model = ZOO[name]()
    gated = fdi.latency_aware(model)
    assert close_random_channels(gated) > 0, "nothing to prune"
    small = fdi.strip(gated)
    x = _inputs(model)
    expected = keras.ops.convert_to_numpy(gated(x, training=False))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(small(x, training=False)),
        expected,
        rtol=1e-4,
        atol=1e-4 * float(np.abs(expected).max()),
    )
    assert small.count_params() < model.count_params()


@pytest.mark.parametrize("name", _params(list(ZOO)))
def test_kernels_match_the_converted_model(name):
    model = ZOO[name]()
    runtime = runtime_kinds(model, {"conv1d_lstm": "lstm"}.get(name, "gru"))
    predicted = collections.Counter(k.spec.kind for k in model_kernels(model))
    if name not in APPROXIMATE:
        assert predicted == runtime
        return
    assert set(predicted) == set(runtime)
    for kind, count in runtime.items():
        assert abs(predicted[kind] - count) <= APPROXIMATE[name] * count, (kind, count)


@pytest.mark.parametrize("name", list(ZOO))
def test_rebirth_plan_runs(name):
    plan = fdi.rebirth.plan(ZOO[name]())
    names = {n.name for n in fdi.graph.trace(ZOO[name]()).nodes} | set()
    assert all(m.layers for m in plan.merges) and isinstance(names, set)
