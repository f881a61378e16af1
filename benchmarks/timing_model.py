"""Benchmark of the timing model on this machine's CPU (LiteRT, XNNPack, 1 thread, fp32).

    python benchmarks/timing_model.py            # ~30 min on a 2-core machine; resumable

1. Profiles the kinds MobileNets and common CNNs use; holds out 20% of each kind's configs.
2. Per kind, on the held-out configs: TimingTree vs a FLOPs-linear model vs a random forest
   (nn-Meter's choice), all fitted on the same rows; and the noise floor: the held-out configs
   measured a second time, later in the run.
3. Whole models never profiled: MobileNet v1/v2 at several widths and input sizes, and
   randomly channel-thinned variants, predicted vs measured side by side.
4. The staircase figure (measured and predicted time against output channels) and the rules.
Results go to the `timing_model` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import mobilenets  # noqa: E402
from benchmarks.common import COUNTS, environment, table, write_section  # noqa: E402
from fdi_keras import predict_latency  # noqa: E402
from fdi_keras.export import measure_latency, to_tflite  # noqa: E402
from fdi_keras.features import compute_features, split_variables  # noqa: E402
from fdi_keras.plots import staircase_figure  # noqa: E402
from fdi_keras.profiling import LocalRunner, run_profile, sample_all  # noqa: E402
from fdi_keras.specs import LayerSpec  # noqa: E402
from fdi_keras.timing import FlopsLinear, TimingTree, rows_to_dataset  # noqa: E402
from fdi_keras.timing.evaluate import accuracy  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "benchmarks/out/timing_model", "Profiles and models (resumable).")
flags.DEFINE_float("scale", 1.0, "Multiplies every per-kind config count (0.1 for a smoke run).")
flags.DEFINE_integer("seed", 0, "Sampling and split seed.")

HERE = os.path.dirname(os.path.abspath(__file__))


def split(data, seed):
    rng = np.random.default_rng(seed)
    train, held = {}, {}
    for kind, (specs, y) in data.items():
        order = rng.permutation(len(y))
        cut = len(y) // 5
        held[kind] = ([specs[i] for i in order[:cut]], y[order[:cut]])
        train[kind] = ([specs[i] for i in order[cut:]], y[order[cut:]])
    return train, held


def flatten(data):
    specs = [s for k in data for s in data[k][0]]
    return specs, np.concatenate([data[k][1] for k in data])


class RandomForest:
    """nn-Meter's kernel predictor: a random forest per kind over dims and FLOPs/memory."""

    def fit(self, specs, y):
        from sklearn.ensemble import RandomForestRegressor

        self.models = {}
        for kind in {s.kind for s in specs}:
            idx = [i for i, s in enumerate(specs) if s.kind == kind]
            x = self._x([specs[i] for i in idx])
            self.models[kind] = RandomForestRegressor(300, random_state=0).fit(x, np.log(y[idx]))
        return self

    @staticmethod
    def _x(specs):
        rows = []
        for s in specs:
            v, f = split_variables(s), compute_features(s)
            rows.append([v[k] for k in sorted(v)] + [np.log1p(f[k]) for k in sorted(f)])
        return np.array(rows)

    def predict(self, specs):
        return np.array([np.exp(self.models[s.kind].predict(self._x([s]))[0]) for s in specs])


def per_kind_accuracy(models, train, held):
    specs_tr, y_tr = flatten(train)
    fitted = {name: cls().fit(specs_tr, y_tr) for name, cls in models.items()}
    rows, stats = [], {}
    for kind, (specs, y) in held.items():
        for name, model in fitted.items():
            s = accuracy(y, model.predict(specs))
            stats[kind, name] = s
            rows.append(
                [
                    kind,
                    name,
                    s["n"],
                    f"{100 * s['mape']:.1f}%",
                    f"{100 * s['within_5']:.1f}%",
                    f"{100 * s['within_10']:.1f}%",
                ]
            )
    return rows, stats


def noise_floor(rows_a, rows_b, drift_correction, statistic="time_us"):
    """Per kind, how far the second measurement of each config is from the first."""
    pick = lambda rows: [{**r, "time_us": r[statistic]} for r in rows if r["status"] == "ok"]  # noqa: E731
    a = rows_to_dataset(pick(rows_a), drift_correction)
    b = rows_to_dataset(pick(rows_b), drift_correction)
    out = {}
    for kind, (specs, y) in b.items():
        first = dict(zip([s.key() for s in a[kind][0]], a[kind][1]))
        ya = np.array([first[s.key()] for s in specs])
        out[kind] = accuracy(ya, y)
    return out


def whole_models(tree):
    models = []
    for alpha in (0.25, 0.5, 0.75, 1.0):
        for size in (128, 160, 224):
            models.append(mobilenets.mobilenet(1, alpha, size))
    for alpha in (0.35, 0.5, 0.75, 1.0):
        for size in (128, 160, 224):
            models.append(mobilenets.mobilenet(2, alpha, size))
    base = [
        mobilenets.mobilenet(v, a, s)
        for v, a, s in [(1, 1.0, 224), (1, 0.5, 160), (2, 1.0, 224), (2, 0.75, 160)]
    ]
    models += [mobilenets.thinned(m, seed) for m in base for seed in (1, 2, 3)]
    names = [m.name for m in models]
    predicted = [predict_latency(m, tree).total_ms for m in models]
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffers = [to_tflite(m) for m in models]
    timings = measure_latency(flatbuffers, rounds=21)
    return names, np.array(predicted), timings


def staircase(runner, out_dir, tree, flops):
    conv = [
        LayerSpec("conv2d", dict(h=28, w=28, cin=32, cout=c, kh=3, kw=3, sh=1, sw=1))
        for c in range(8, 129)
    ]
    dense = [LayerSpec("dense", dict(m=1, cin=256, cout=c)) for c in range(64, 161)]
    rows = run_profile(
        [runner], conv + dense, os.path.join(out_dir, "staircase"), progress=False
    ).rows
    data = rows_to_dataset(rows)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, kind, title, xlabel in [
        (axes[0], "conv2d", "Conv2D 3x3 on 28x28x32", "output channels"),
        (axes[1], "dense", "Dense from 256 inputs", "output units"),
    ]:
        staircase_figure(tree, rows, kind, sweep="cout", others={"FLOPs-linear": flops}, ax=ax)
        ax.set(title=title, xlabel=xlabel)
    fig.savefig(os.path.join(HERE, "staircase.png"), dpi=110)
    conv_specs, conv_y = data["conv2d"]
    by_c = {s.dims["cout"]: t for s, t in zip(conv_specs, conv_y)}
    return by_c


def main(argv):
    del argv
    env = environment()
    runner = LocalRunner()
    counts = {k: max(10, int(n * FLAGS.scale)) for k, n in COUNTS.items()}
    specs = sample_all(list(counts), counts, FLAGS.seed)
    profile = run_profile([runner], specs, os.path.join(FLAGS.out_dir, "profile"))
    stamps = [
        datetime.datetime.strptime(r["timestamp"], "%Y-%m-%dT%H:%M:%S%z") for r in profile.rows
    ]
    profiling_minutes = (max(stamps) - min(stamps)).total_seconds() / 60
    failed = sum(r["status"] != "ok" for r in profile.rows)

    train, held = split(rows_to_dataset(profile.rows), FLAGS.seed)
    models = {"TimingTree": TimingTree, "FLOPs-linear": FlopsLinear, "RandomForest": RandomForest}
    kind_rows, stats = per_kind_accuracy(models, train, held)

    held_specs = [s for k in held for s in held[k][0]]
    again = run_profile([runner], held_specs, os.path.join(FLAGS.out_dir, "remeasure")).rows
    held_rows = [r for r in profile.rows if r["key"] in {s.key() for s in held_specs}]
    floor = noise_floor(held_rows, again, True)
    floor_raw = noise_floor(held_rows, again, False)
    floor_median = noise_floor(held_rows, again, False, "median_us")

    tree = TimingTree().fit_rows(profile.rows)
    tree.save(os.path.join(FLAGS.out_dir, "timing_tree.json"))
    with open(os.path.join(HERE, "timing_tree_rules.txt"), "w") as f:
        f.write(tree.explain() + "\n")
    names, predicted, timings = whole_models(tree)
    measured = np.array([t.min_ms for t in timings])
    flops_all = FlopsLinear().fit(*flatten(rows_to_dataset(profile.rows)))
    by_c = staircase(runner, FLAGS.out_dir, tree, flops_all)

    tree_mape = [stats[k, "TimingTree"]["mape"] for k in held]
    whole = accuracy(measured, predicted)
    lines = [
        "## Timing model (`benchmarks/timing_model.py`)",
        "",
        f"Run: {env}. LiteRT XNNPack, 1 thread, fp32, batch 1.",
        "",
        f"Profile: {len(profile.rows)} configurations ({failed} failed), "
        + ", ".join(f"{k} {n}" for k, n in counts.items())
        + f"; profiling wall time {profiling_minutes:.1f} min (conversion overlapped with timing).",
        "",
        "### Per kind, 20% held-out configurations (fitted on the other 80%)",
        "",
        table(["kind", "model", "n", "MAPE", "within 5%", "within 10%"], kind_rows),
        "",
        f"TimingTree: median per-kind MAPE {100 * np.median(tree_mape):.1f}%, worst "
        f"{100 * max(tree_mape):.1f}%; mean over kinds of the share within 5% "
        f"{100 * np.mean([stats[k, 'TimingTree']['within_5'] for k in held]):.1f}%, within 10% "
        f"{100 * np.mean([stats[k, 'TimingTree']['within_10'] for k in held]):.1f}%.",
        "",
        "### Noise floor: the held-out configurations measured twice (minutes apart)",
        "",
        "Of the minimum over invokes (what the tree is fitted on), with and without dividing out "
        "the calibration kernel's drift, and of the median over rounds, for comparison.",
        "",
        table(
            [
                "kind",
                "n",
                "MAPE (drift-corrected)",
                "within 5%",
                "within 10%",
                "MAPE (raw)",
                "MAPE of medians",
            ],
            [
                [
                    k,
                    s["n"],
                    f"{100 * s['mape']:.1f}%",
                    f"{100 * s['within_5']:.1f}%",
                    f"{100 * s['within_10']:.1f}%",
                    f"{100 * floor_raw[k]['mape']:.1f}%",
                    f"{100 * floor_median[k]['mape']:.1f}%",
                ]
                for k, s in floor.items()
            ],
        ),
        "",
        "### Whole models never profiled (predicted vs measured, same run)",
        "",
        table(
            ["model", "predicted ms", "measured ms (min)", "median ms", "spread", "error"],
            [
                [
                    n,
                    f"{p:.2f}",
                    f"{t.min_ms:.2f}",
                    f"{t.median_ms:.2f}",
                    f"{100 * t.spread:.1f}%",
                    f"{100 * (p - t.min_ms) / t.min_ms:+.1f}%",
                ]
                for n, p, t in zip(names, predicted, timings)
            ],
        ),
        "",
        f"Whole models: RMSPE {100 * whole['rmspe']:.1f}%, MAPE {100 * whole['mape']:.1f}%, "
        f"within 10% {100 * whole['within_10']:.0f}% of {whole['n']} models.",
        "",
        "### Staircase",
        "",
        "![staircase](staircase.png)",
        "",
        "Conv2D 3x3 on 28x28x32, measured: "
        + ", ".join(
            f"{c} ch {by_c[c]:.0f} us" for c in (56, 63, 64, 65, 72, 80, 96, 97) if c in by_c
        )
        + ".",
        "",
        "Rules of the fitted tree: `benchmarks/timing_tree_rules.txt`.",
    ]
    write_section("timing_model", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
