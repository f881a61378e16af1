"""fdi_keras.plots: the data each figure draws (bar widths, line data, labels), not pixels."""

import builtins
import dataclasses

import keras
import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import fdi_keras  # noqa: E402
from fdi_keras import plots  # noqa: E402
from fdi_keras.features import compute_features  # noqa: E402
from fdi_keras.specs import LayerSpec  # noqa: E402
from fdi_keras.timing import FlopsLinear, TimingTree  # noqa: E402


def stairs(spec):
    """A device whose time steps at multiples of 16 channels."""
    f = compute_features(spec, tile=16)
    return 2.0 + 1e-3 * f["flops"] + 1e-4 * (f["bytes_in"] + f["bytes_out"])


def conv(h=12, cin=8, cout=16, k=3):
    return LayerSpec("conv2d", dict(h=h, w=h, cin=cin, cout=cout, kh=k, kw=k, sh=1, sw=1))


def profile_rows(specs, calibration_us=None):
    rows = []
    for s in specs:
        row = {"key": s.key(), "spec": s.to_dict(), "time_us": stairs(s), "status": "ok"}
        if calibration_us is not None:
            row["calibration_us"] = calibration_us
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def sweep_specs():
    cout = [conv(cout=c) for c in range(4, 41)]  # the long sweep
    cin = [conv(h=10, cin=c, cout=24) for c in range(8, 14)]  # a short one over cin
    scattered = [conv(h=h, cin=c, cout=o) for h, c, o in [(6, 3, 5), (9, 7, 11), (14, 5, 9)]]
    dense = [LayerSpec("dense", dict(m=1, cin=64, cout=c)) for c in range(8, 40, 2)]
    return cout + cin + scattered + dense


@pytest.fixture(scope="module")
def tree(sweep_specs):
    pool = [
        LayerSpec("pool2d", dict(h=h, w=h, c=c, kh=2, kw=2, sh=2, sw=2), {"op": "max"})
        for h in (8, 12, 24)
        for c in range(4, 40, 4)
    ]
    specs = sweep_specs + pool
    return TimingTree(tiles=(1, 16)).fit(specs, [stairs(s) for s in specs])


def small_cnn():
    x = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Flatten(name="flat")(h)
    return keras.Model(x, keras.layers.Dense(10, name="logits")(h))


def bar_widths(ax, label):
    (container,) = [c for c in ax.containers if c.get_label() == label]
    return np.array([patch.get_width() for patch in container.patches])


def line(ax, label):
    (found,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return np.asarray(found.get_xdata(), float), np.asarray(found.get_ydata(), float)


def test_report_plot_draws_one_predicted_bar_per_kernel(tree):
    report = fdi_keras.predict_latency(small_cnn(), tree)
    fig = report.plot()
    assert isinstance(fig, matplotlib.figure.Figure)
    (ax,) = fig.axes
    np.testing.assert_allclose(bar_widths(ax, "predicted"), [r.time_us for r in report.rows])
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["+".join(r.layers) for r in report.rows]
    assert "conv" in labels[0] and f"predicted {report.total_ms:.3f} ms" in ax.get_title()
    assert not [c for c in ax.containers if c.get_label() == "measured"]


def test_report_plot_puts_measured_kernels_next_to_the_predictions(tree):
    report = fdi_keras.predict_latency(small_cnn(), tree)
    n = len(report.rows)
    measured = [10.0 * (i + 1) for i in range(n)]
    ax = report.plot(measured=measured).axes[0]
    np.testing.assert_allclose(bar_widths(ax, "measured"), measured)
    predicted_bars = [c for c in ax.containers if c.get_label() == "predicted"][0].patches
    measured_bars = [c for c in ax.containers if c.get_label() == "measured"][0].patches
    for p, m in zip(predicted_bars, measured_bars):  # side by side on each kernel's row
        assert p.get_y() + p.get_height() == pytest.approx(m.get_y())
    by_name = {"+".join(report.rows[0].layers): 5.0, report.rows[-1].layers[0]: 7.0}
    widths = bar_widths(report.plot(measured=by_name).axes[0], "measured")
    assert widths[0] == 5.0 and widths[-1] == 7.0 and np.isnan(widths[1:-1]).all()


def test_report_plot_writes_a_measured_total_in_the_title(tree):
    report = fdi_keras.predict_latency(small_cnn(), tree)

    @dataclasses.dataclass
    class Timing:  # what fdi_keras.export.measure_latency returns: its min_us is used
        min_us: float
        median_us: float

    for measured in (2 * report.total_us, Timing(2 * report.total_us, 999.0)):
        title = report.plot(measured=measured).axes[0].get_title()
        assert f"measured {2 * report.total_ms:.3f} ms (-50%)" in title


def test_report_plot_errors_name_the_problem(tree):
    report = fdi_keras.predict_latency(small_cnn(), tree)
    assert len(report.rows) == 3  # conv (ReLU fused), pool, dense: Flatten is free
    with pytest.raises(ValueError, match=r"one time per kernel row \(3\). Received: 2 values"):
        report.plot(measured=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"unknown keys: \['nope'\]"):
        report.plot(measured={"nope": 1.0})


def test_staircase_plots_the_longest_sweep_with_the_tree(tree, sweep_specs):
    rows = profile_rows(sweep_specs)
    fig = plots.staircase_figure(tree, rows, "conv2d")
    (ax,) = fig.axes
    x, y = line(ax, "measured")
    np.testing.assert_array_equal(x, np.arange(4, 41))
    np.testing.assert_allclose(y, [stairs(conv(cout=c)) for c in range(4, 41)])
    grid, predicted = line(ax, "TimingTree")
    np.testing.assert_array_equal(grid, np.arange(4, 41))
    np.testing.assert_allclose(predicted, tree.predict([conv(cout=c) for c in range(4, 41)]))
    assert ax.get_xlabel() == "cout" and "h=12" in ax.get_title() and "cin=8" in ax.get_title()


def test_staircase_picks_the_sweep_asked_for(tree, sweep_specs):
    rows = profile_rows(sweep_specs)
    x, _ = line(plots.staircase_figure(tree, rows, "conv2d", sweep="cin").axes[0], "measured")
    np.testing.assert_array_equal(x, np.arange(8, 14))
    ax = plots.staircase_figure(tree, rows, "conv2d", sweep={"h": 10}).axes[0]
    assert ax.get_xlabel() == "cin"
    ax = plots.staircase_figure(tree, rows, "dense", others={"FLOPs": flops(sweep_specs)}).axes[0]
    grid, _ = line(ax, "FLOPs")
    np.testing.assert_array_equal(grid, np.arange(8, 39))  # every value between the measured


def flops(specs):
    return FlopsLinear().fit(specs, np.array([stairs(s) for s in specs]))


def test_staircase_divides_out_drift_and_skips_failed_rows(tree, sweep_specs):
    rows = profile_rows(sweep_specs[:37], calibration_us=40.0)  # the cout sweep
    rows[0] = {**rows[0], "calibration_us": 80.0, "time_us": 2 * rows[0]["time_us"]}  # slow
    rows[1] = {**rows[1], "status": "failed"}
    x, y = line(plots.staircase_figure(tree, rows, "conv2d").axes[0], "measured")
    assert 5 not in x
    assert y[0] == pytest.approx(stairs(conv(cout=4)))


def test_staircase_draws_another_run_at_the_profile_s_machine_speed(tree, sweep_specs):
    rows = profile_rows(sweep_specs[:37], calibration_us=44.0)  # a run 10% slow throughout
    rows = [{**r, "time_us": 1.1 * r["time_us"]} for r in rows]
    own = line(plots.staircase_figure(tree, rows, "conv2d").axes[0], "measured")[1]
    at_profile = line(
        plots.staircase_figure(tree, rows, "conv2d", reference=40.0).axes[0], "measured"
    )[1]
    assert own[0] == pytest.approx(1.1 * stairs(conv(cout=4)))
    assert at_profile[0] == pytest.approx(stairs(conv(cout=4)))


def test_staircase_errors(tree, sweep_specs):
    rows = profile_rows(sweep_specs)
    with pytest.raises(ValueError, match=r"No sweep of 'gru'.*Kinds in the rows: \['conv2d'"):
        plots.staircase_figure(tree, rows, "gru")
    with pytest.raises(ValueError, match=r"No sweep of 'conv2d'.*sweep=\{'h': 99\}"):
        plots.staircase_figure(tree, rows, "conv2d", sweep={"h": 99})
    with pytest.raises(ValueError, match=r"dims a conv2d kernel does not have: \['units'\]"):
        plots.staircase_figure(tree, rows, "conv2d", sweep="units")
    with pytest.raises(TypeError, match="sweep must be None, a dim name or a dict"):
        plots.staircase_figure(tree, rows, "conv2d", sweep=3)


def test_pareto_front_per_method_and_predictions():
    runs = [
        dict(method="fdi", accuracy=0.90, latency_ms=1.0, predicted_ms=1.2),
        dict(method="fdi", accuracy=0.95, latency_ms=2.0, predicted_ms=1.8),
        dict(method="fdi", accuracy=0.93, latency_ms=3.0),  # dominated by the 2.0 ms run
        dict(method="l1", accuracy=0.80, latency_ms=1.5),
    ]
    ax = plots.pareto_figure(runs, title="mnist").axes[0]
    x, y = line(ax, "fdi")
    np.testing.assert_allclose(x, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(y, [0.90, 0.95, 0.93])
    x, y = line(ax, "_front fdi")
    np.testing.assert_allclose(x, [1.0, 2.0])
    np.testing.assert_allclose(y, [0.90, 0.95])
    hollow = [ln for ln in ax.get_lines() if ln.get_label() == "_predicted fdi"]
    assert sorted(ln.get_xdata()[0] for ln in hollow) == [1.2, 1.8]
    assert not [ln for ln in ax.get_lines() if ln.get_label() == "_predicted l1"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["fdi", "l1", "predicted (hollow)"] and ax.get_title() == "mnist"


def test_pareto_takes_records_and_names_a_bad_run():
    @dataclasses.dataclass
    class Run:
        method: str
        accuracy: float
        latency_ms: float

    ax = plots.pareto_figure([Run("a", 0.5, 1.0), Run("a", 0.6, 0.5)]).axes[0]
    np.testing.assert_allclose(line(ax, "_front a")[0], [0.5])  # 0.5 ms is better in both
    with pytest.raises(ValueError, match=r"Run 1 lacks \['latency_ms'\]"):
        plots.pareto_figure([Run("a", 0.5, 1.0), dict(method="b", accuracy=0.4)])


def test_pareto_front_ties():
    assert plots.pareto_front([1.0, 1.0, 2.0], [0.5, 0.7, 0.7]).tolist() == [1]


def test_without_matplotlib_the_error_names_the_extra(monkeypatch, tree):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"pip install fdi_keras\[plots\]"):
        plots.pareto_figure([dict(method="a", accuracy=0.5, latency_ms=1.0)])


def test_plots_draw_into_a_given_axes(tree, sweep_specs):
    fig = matplotlib.figure.Figure()
    left, right = fig.subplots(1, 2)
    assert plots.staircase_figure(tree, profile_rows(sweep_specs), "dense", ax=right) is fig
    assert right.get_lines() and not left.get_lines()
