"""The composition term: fitted on networks timed whole, applied per kernel, saved and explained.

The networks here are lists of kernel specs with known in-model times, so that the fit can be
checked against the truth; the profiler's real random networks are tested in
tests/profiling/test_networks.py.
"""

import json

import keras
import numpy as np
import pytest

from fdi_keras import predict_latency
from fdi_keras.features import compute_features, weight_bytes
from fdi_keras.profiling.sampling import sample_configs
from fdi_keras.specs import LayerSpec
from fdi_keras.timing import TimingTree
from fdi_keras.timing.composition import Composition

BANDWIDTH_GBPS = 8.0  # bytes per ns


def single_time(spec):
    """A single-kernel time with weights hot in cache: pure arithmetic."""
    return 2.0 + 1e-4 * compute_features(spec)["flops"]


def in_model_time(spec):
    """The truth inside a model: 10% slower, 1 us per kernel, and never faster than reading
    the weights at BANDWIDTH_GBPS."""
    t = single_time(spec)
    memory = compute_features(spec)["param_bytes"] / (BANDWIDTH_GBPS * 1e3)
    return 1.1 * t + 1.0 + max(0.0, memory - t)


def random_networks(count, seed):
    rng = np.random.default_rng(seed)
    # Kernels of up to 5e7 multiply-accumulates, so that small networks, the only ones whose
    # time shows the per-kernel term, are as common as weight-bound ones.
    pool = [
        s
        for s in sample_configs("dense", 150, seed=1) + sample_configs("conv2d", 200, seed=1)
        if compute_features(s)["flops"] <= 1e8
    ]
    return [
        [pool[i] for i in rng.choice(len(pool), int(rng.integers(3, 30)))] for _ in range(count)
    ]


@pytest.fixture(scope="module")
def tree():
    kernels = sample_configs("dense", 300) + sample_configs("conv2d", 300)
    tree = TimingTree().fit(kernels, [single_time(s) for s in kernels])
    networks = random_networks(80, seed=0)
    specs = [LayerSpec("network", {"seed": i}) for i in range(len(networks))]
    times = np.array([5.0 + sum(in_model_time(k) for k in n) for n in networks])
    lookup = {s.key(): n for s, n in zip(specs, networks)}
    return tree.fit_composition(
        specs, {"min": times, "median": 1.2 * times}, lambda s: lookup[s.key()]
    )


def test_the_fit_recovers_the_composition(tree):
    c = tree.composition_["min"]
    assert c.scale == pytest.approx(1.1, rel=0.05)
    typical = np.median([weight_bytes(n) for n in random_networks(80, seed=0)])
    assert c.bandwidth_for(typical) == pytest.approx(BANDWIDTH_GBPS, rel=0.15)
    assert c.cv_mape < 0.02
    for network in random_networks(20, seed=1):  # networks the fit never saw
        truth = 5.0 + sum(in_model_time(k) for k in network)
        predicted = tree.invoke_overhead() + sum(tree.kernel_in_model(k) for k in network)
        assert predicted == pytest.approx(truth, rel=0.03)


def test_the_median_is_its_own_fit(tree):
    network = random_networks(1, seed=2)[0]
    low = sum(tree.kernel_in_model(k, "min") for k in network)
    typical = sum(tree.kernel_in_model(k, "median") for k in network)
    assert typical / low == pytest.approx(1.2, rel=0.03)
    with pytest.raises(ValueError, match="statistic must be one of"):
        tree.kernel_in_model(network[0], "mean")


def test_predict_latency_adds_kernels_in_model_and_one_invoke(tree):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(300), keras.layers.Dense(10)])
    report = predict_latency(model, tree)
    specs = [
        LayerSpec("dense", dict(m=1, cin=64, cout=300)),
        LayerSpec("dense", dict(m=1, cin=300, cout=10)),
    ]
    assert [r.time_us for r in report.rows] == pytest.approx(
        [tree.kernel_in_model(s, "min", weight_bytes(specs)) for s in specs]
    )
    assert report.total_us == pytest.approx(
        tree.invoke_overhead() + sum(r.time_us for r in report.rows)
    )
    assert predict_latency(model, tree, "median").total_us > report.total_us


def test_the_slope_inside_a_model_is_the_difference_of_in_model_times(tree):
    spec = LayerSpec("dense", dict(m=1, cin=2048, cout=700))  # memory-bound at 8 GB/s
    wider = spec.replace(cout=701)
    single_slope = tree.predict_one(wider) - tree.predict_one(spec)
    slope = tree.in_model_slope(single_slope, spec, wider)
    assert slope == pytest.approx(
        tree.kernel_in_model(wider) - tree.kernel_in_model(spec), rel=1e-6
    )
    assert slope > 1.1 * single_slope  # the weights' memory time grows with the width too


def test_saved_explained_and_older_trees_still_load(tree, tmp_path):
    path = tmp_path / "tree.json"
    tree.save(str(path))
    loaded = TimingTree.load(str(path))
    spec = LayerSpec("conv2d", dict(h=14, w=14, cin=64, cout=96, kh=3, kw=3, sh=1, sw=1))
    assert loaded.kernel_in_model(spec, "median") == tree.kernel_in_model(spec, "median")
    assert loaded.composition_ == tree.composition_
    text = tree.explain()
    assert "inside a model (min over invokes; fitted on 80 networks timed whole" in text
    c = tree.composition_["min"]
    assert f"{c.curve_mb[2]:g} MB: {c.curve_gbps[2]:.3g} GB/s" in text
    # A version-2 file (before the composition term) predicts single-kernel sums, as it did.
    data = {**tree.to_dict(), "format_version": 2}
    del data["composition"]
    path.write_text(json.dumps(data))
    old = TimingTree.load(str(path))
    assert old.composition_ == {}
    assert old.kernel_in_model(spec) == pytest.approx(old.predict_one(spec) - old.overhead_us_)
    assert "no composition term" in old.explain()


def fast_then_slow_gbps(model_bytes):
    """A cache level's truth: weights read at 40 GB/s in models of at most 4 MB, at 8 GB/s
    beyond 16 MB, the time per byte interpolated on log size in between."""
    per_byte = np.interp(np.log(model_bytes / 1e6), np.log([4.0, 16.0]), [1 / 40, 1 / 8])
    return 1 / per_byte


def test_the_memory_curve_finds_a_cache_level():
    networks = random_networks(160, seed=4)

    def truth(network):
        total = 5.0
        gbps = fast_then_slow_gbps(weight_bytes(network))
        for k in network:
            t = single_time(k)
            memory = compute_features(k)["param_bytes"] / (gbps * 1e3)
            total += 1.1 * t + 1.0 + max(0.0, memory - t)
        return total

    sizes = np.array([weight_bytes(n) for n in networks])
    assert 20 < np.sum(sizes <= 4e6) and 20 < np.sum(sizes >= 16e6)  # both sides present
    c = Composition.fit(
        "min",
        [[(single_time(k), k) for k in n] for n in networks],
        [truth(n) for n in networks],
    )
    assert c.bandwidth_for(64e6) == pytest.approx(8.0, rel=0.15)
    assert c.bandwidth_for(1e6) > 2 * c.bandwidth_for(64e6)  # weakly identified above that
    assert all(a >= b for a, b in zip(c.curve_gbps, c.curve_gbps[1:]))  # never rises
    assert c.cv_mape < 0.03
    for network in random_networks(20, seed=5):  # networks the fit never saw
        model_bytes = weight_bytes(network)
        predicted = c.overhead_us + sum(
            c.kernel_us(single_time(k), k, model_bytes) for k in network
        )
        assert predicted == pytest.approx(truth(network), rel=0.03)
    assert "the bandwidth of the model's" in c.explain()
    loaded = Composition.from_dict(json.loads(json.dumps(c.to_dict())))
    assert loaded == c


def test_the_unhidden_share_is_chosen_by_cross_validation():
    """Kernels whose weight reads are partly exposed (a third of the shorter of compute and
    read adds up): the fit picks a share near it over the roofline, and predicts networks it
    never saw; `explain()` says so."""

    def truth(network):
        total = 5.0
        for k in network:
            t = single_time(k)
            read = compute_features(k)["param_bytes"] / (BANDWIDTH_GBPS * 1e3)
            total += 1.1 * t + 1.0 + max(0.0, read - t) + min(t, read) / 3
        return total

    networks = random_networks(120, seed=7)
    c = Composition.fit(
        "min", [[(single_time(k), k) for k in n] for n in networks], [truth(n) for n in networks]
    )
    assert c.unhidden in (0.3, 0.5)  # the grid's nearest to a third
    for network in random_networks(20, seed=8):
        predicted = c.overhead_us + sum(
            c.kernel_us(single_time(k), k, weight_bytes(network)) for k in network
        )
        assert predicted == pytest.approx(truth(network), rel=0.05)
    assert "the shorter of that read and the single-kernel time" in c.explain()
    assert Composition.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_a_term_saved_before_the_memory_curve_predicts_what_it_did():
    """Format 3 stored one bandwidth, or a cache size with a faster bandwidth below it."""
    spec = LayerSpec("dense", dict(m=1, cin=1024, cout=1024))  # 4 MB, 1 us alone
    saved = dict(statistic="min", overhead_us=3.0, scale=1.1, per_kernel_us=0.5,
                 per_activation_byte_us=0.0, networks=50, cv_mape=0.1)  # fmt: skip
    one = Composition.from_dict({**saved, "bandwidth_gbps": 20.0})
    step = Composition.from_dict(
        {**saved, "bandwidth_gbps": 10.0, "cache_mb": 8.0, "resident_bandwidth_gbps": 40.0}
    )
    none = Composition.from_dict({**saved, "bandwidth_gbps": None, "cache_mb": None})
    weights = compute_features(spec)["param_bytes"]
    linear = 1.1 * 1.0 + 0.5
    assert one.kernel_us(1.0, spec, 1e9) == pytest.approx(linear + weights / 20e3 - 1.0)
    assert step.kernel_us(1.0, spec, 8e6) == pytest.approx(linear + weights / 40e3 - 1.0)
    assert step.kernel_us(1.0, spec, 8.1e6) == pytest.approx(linear + weights / 10e3 - 1.0)
    assert none.kernel_us(1.0, spec, 1e9) == pytest.approx(linear)
    assert one.unhidden == step.unhidden == 0.0  # saved before the share: the roofline
    assert Composition.from_dict(json.loads(json.dumps(step.to_dict()))) == step


def test_a_kernel_saves_at_most_the_fastest_kernel_s_time_inside_a_model():
    """What a kernel saves inside a model is at most its single-kernel invoke's fixed cost,
    so `fixed_cost_us` (the fastest single-kernel time) bounds `per_kernel_us` from below,
    even where these networks of large kernels would fit a larger saving."""
    networks = random_networks(60, seed=6)
    pairs = [[(single_time(k), k) for k in n] for n in networks]
    times = [5.0 + sum(1.1 * t - 1.5 for t, _ in n) for n in pairs]
    assert Composition.fit("min", pairs, times).per_kernel_us == pytest.approx(-1.5, abs=0.1)
    bounded = Composition.fit("min", pairs, times, fixed_cost_us=0.5)
    assert bounded.per_kernel_us == pytest.approx(-0.5, abs=1e-6)


def test_composition_rejects_an_unknown_statistic():
    with pytest.raises(ValueError, match="statistic must be one of"):
        Composition.fit("mean", [[(1.0, LayerSpec("dense", dict(m=1, cin=2, cout=2)))]], [1.0])


def test_no_kernel_takes_negative_time(tree):
    cheapest = LayerSpec("dense", dict(m=1, cin=8, cout=4))
    c = tree.composition_["min"]
    assert c.kernel_us(0.0, cheapest) == 0.0 or c.per_kernel_us >= 0
    assert tree.kernel_in_model(cheapest) >= 0.0


def test_too_few_networks_fit_no_term_and_say_why(tree):
    fresh = TimingTree.from_dict({**tree.to_dict(), "composition": {}})
    networks = random_networks(5, seed=3)
    specs = [LayerSpec("network", {"seed": i}) for i in range(5)]
    lookup = {s.key(): n for s, n in zip(specs, networks)}
    times = np.ones(5)
    with pytest.warns(UserWarning, match="No composition term: 5 of 5 networks.*needs 10"):
        fresh.fit_composition(specs, {"min": times, "median": times}, lambda s: lookup[s.key()])
    assert fresh.composition_ == {}


def test_a_network_is_not_a_kernel(tree):
    network = LayerSpec("network", {"seed": 0})
    with pytest.raises(ValueError, match="not a kernel"):
        TimingTree().fit([network], [1.0])
    with pytest.raises(ValueError, match="predict_latency"):
        tree.predict_one(network)
