"""Benchmark of the timing model on this machine's CPU (LiteRT, XNNPack, 1 thread, fp32).

    make profile && python benchmarks/timing_model.py    # ~15 min after the profile; resumable

Evaluates what a user gets from `make profile` (the tree fitted on every row of
`--profile_dir`), on data it never saw:

1. An independent held-out set: configurations of every profiled kind drawn by another
   sampler (`sample_held_out`: same documented ranges, no sweeps, no preference for multiples
   of 8) and random networks of other seeds, profiled now, and profiled a second time with
   the same protocol: the noise floor.
2. Per kind on that set: the TimingTree next to the models peers use, fitted on the same
   rows (FLOPs-linear; nn-Meter's random forest; LitePred's MLP; HALP / NetAdapt's lookup
   table, interpolated): MAPE, mean signed error, share within 10% and 5%.
3. Held-out random networks timed whole: the minimum and the median predicted (with the
   composition term, and without it as an ablation) vs the same statistic measured.
4. The staircase figure and the rules.

The stock keras.applications zoo is predicted by `benchmarks/applications.py`.
Results go to the `timing_model` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import datetime
import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import environment, machine_slug, table, write_section  # noqa: E402
from benchmarks.peers import MLP, LookupTable, RandomForest  # noqa: E402
from fdi_keras.latency import predict_latency  # noqa: E402
from fdi_keras.plots import staircase_figure  # noqa: E402
from fdi_keras.profiling import LocalRunner, read_rows, run_profile  # noqa: E402
from fdi_keras.profiling.fitting import check_one_setup, fit_profile  # noqa: E402
from fdi_keras.profiling.networks import network_of  # noqa: E402
from fdi_keras.profiling.sampling import sample_held_out  # noqa: E402
from fdi_keras.specs import NETWORK, LayerSpec  # noqa: E402
from fdi_keras.timing import FlopsLinear, TimingTree, rows_to_dataset  # noqa: E402
from fdi_keras.timing.evaluate import accuracy  # noqa: E402
from fdi_keras.timing.tree import calibration_reference, network_rows  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("profile_dir", "profiles/this_cpu", "The profile to evaluate (make profile).")
flags.DEFINE_string("out_dir", "benchmarks/out/timing_model", "Held-out profiles (resumable).")
flags.DEFINE_integer("held_out", 60, "Held-out configurations per kind (half for simple kinds).")
flags.DEFINE_integer("networks", 24, "Held-out random networks.")
flags.DEFINE_integer("seed", 0, "Held-out sampling seed.")

HERE = os.path.dirname(os.path.abspath(__file__))
# Kinds whose time is a line in their size: fewer held-out configurations suffice.
SIMPLE = {"softmax", "pad", "concat", "global_pool", "add", "activation", "pool2d"}


def held_out_specs(kinds, dtype, threads):
    specs = []
    for kind in kinds:
        n = FLAGS.held_out // 2 if kind in SIMPLE else FLAGS.held_out
        specs += sample_held_out(kind, n, FLAGS.seed, dtype, threads)
    return specs + sample_held_out(NETWORK, FLAGS.networks, FLAGS.seed, dtype, threads)


# A pause between two rows longer than this is the store lying idle between two runs.
IDLE_MINUTES = 5


def profiling_minutes(rows):
    """Minutes the store's rows took to measure: the time between consecutive rows, leaving
    out the idle pauses of a store filled by several runs (resumed, or kinds added later)."""
    stamps = sorted(datetime.datetime.strptime(r["timestamp"], "%Y-%m-%dT%H:%M:%S%z") for r in rows)
    gaps = np.diff([s.timestamp() for s in stamps]) / 60
    return float(gaps[gaps <= IDLE_MINUTES].sum())


def signed(measured, predicted):
    return float(np.mean((np.asarray(predicted) - measured) / measured))


def per_kind(models, train, held, floor):
    specs_tr = [s for k in train for s in train[k][0]]
    y_tr = np.concatenate([train[k][1] for k in train])
    fitted = {name: m.fit(specs_tr, y_tr) if name != "TimingTree" else m for name, m in models}
    rows, stats = [], {}
    for kind, (specs, y) in sorted(held.items()):
        for name, model in fitted.items():
            predicted = model.predict(specs)
            s = {**accuracy(y, predicted), "signed": signed(y, predicted)}
            stats[kind, name] = s
            rows.append(
                [
                    kind,
                    name,
                    s["n"],
                    f"{100 * s['mape']:.1f}%",
                    f"{100 * s['signed']:+.1f}%",
                    f"{100 * s['within_10']:.0f}%",
                    f"{100 * s['within_5']:.0f}%",
                    f"{100 * floor[kind]['mape']:.1f}%" if name == "TimingTree" else "",
                ]
            )
    return rows, stats


def noise_floor(first, second):
    """Per kind, how far the second measurement of each configuration is from the first."""
    b = {k: dict(zip([s.key() for s in specs], y)) for k, (specs, y) in second.items()}
    out = {}
    for kind, (specs, y) in first.items():
        again = np.array([b[kind][s.key()] for s in specs])
        out[kind] = accuracy(y, again)
    return out


def networks_table(tree, first_rows, second_rows, reference):
    """Held-out networks: predicted vs measured for both statistics, and the ablation; times
    expressed at the profile's calibration `reference`, as the tree's are."""
    specs, measured = network_rows(first_rows, reference=reference)
    _, again = network_rows(second_rows, reference=reference)
    ablation = TimingTree.from_dict({**tree.to_dict(), "composition": {}})
    rows, out = [], {"min": [], "median": [], "sum": []}
    for i, spec in enumerate(specs):
        model = network_of(spec)
        p_min = predict_latency(model, tree, "min").total_us
        p_med = predict_latency(model, tree, "median").total_us
        p_sum = predict_latency(model, ablation).total_us
        out["min"].append(p_min)
        out["median"].append(p_med)
        out["sum"].append(p_sum)
        rows.append(
            [
                f"network {spec.dims['seed']}",
                f"{model.count_params() * 4 / 1e6:.1f}",
                f"{measured['min'][i] / 1e3:.3f}",
                f"{100 * (p_min / measured['min'][i] - 1):+.1f}%",
                f"{100 * (p_sum / measured['min'][i] - 1):+.1f}%",
                f"{measured['median'][i] / 1e3:.3f}",
                f"{100 * (p_med / measured['median'][i] - 1):+.1f}%",
                f"{100 * (again['min'][i] / measured['min'][i] - 1):+.1f}%",
            ]
        )
    summary = {
        "min": accuracy(measured["min"], out["min"]),
        "median": accuracy(measured["median"], out["median"]),
        "sum": accuracy(measured["min"], out["sum"]),
        "floor": accuracy(measured["min"], again["min"]),
        "floor_median": accuracy(measured["median"], again["median"]),
    }
    return rows, summary


def staircase(runner, out_dir, tree, flops, reference):
    """The staircase figure and the conv sweep's times, at the profile's machine speed."""
    conv = [
        LayerSpec("conv2d", dict(h=28, w=28, cin=32, cout=c, kh=3, kw=3, sh=1, sw=1))
        for c in range(8, 129)
    ]
    dense = [LayerSpec("dense", dict(m=1, cin=256, cout=c)) for c in range(64, 161)]
    rows = run_profile(
        [runner], conv + dense, os.path.join(out_dir, "staircase"), progress=False
    ).rows
    data = rows_to_dataset(rows, reference=reference)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, kind, title, xlabel in [
        (axes[0], "conv2d", "Conv2D 3x3 on 28x28x32", "output channels"),
        (axes[1], "dense", "Dense from 256 inputs", "output units"),
    ]:
        staircase_figure(
            tree, rows, kind, "cout", {"FLOPs-linear": flops}, ax=ax, reference=reference
        )
        ax.set(title=title, xlabel=xlabel)
    fig.savefig(os.path.join(HERE, f"staircase_{machine_slug()}.png"), dpi=110)
    conv_specs, conv_y = data["conv2d"]
    by_c = {s.dims["cout"]: t for s, t in zip(conv_specs, conv_y)}
    return by_c


def main(argv):
    del argv
    env = environment()
    rows = read_rows(os.path.join(FLAGS.profile_dir, "profile.jsonl"))
    setup = check_one_setup(rows)
    tree, _ = fit_profile(rows)
    with open(os.path.join(HERE, f"timing_tree_rules_{machine_slug()}.txt"), "w") as f:
        f.write(tree.explain() + "\n")
    dtype, threads = setup["dtype"], setup["threads"]
    runner = LocalRunner()
    specs = held_out_specs(sorted(tree.kinds_), dtype, threads)
    first = run_profile([runner], specs, os.path.join(FLAGS.out_dir, "held_out")).rows
    second = run_profile([runner], specs, os.path.join(FLAGS.out_dir, "held_out_again")).rows
    # Both runs at the profile's machine speed (its calibration time), as the tree predicts.
    reference = calibration_reference(rows)
    held = rows_to_dataset(first, reference=reference)
    held_again = rows_to_dataset(second, reference=reference)
    floor = noise_floor(held, held_again)

    models = [
        ("TimingTree", tree),
        ("FLOPs-linear", FlopsLinear()),
        ("RandomForest (nn-Meter)", RandomForest()),
        ("MLP (LitePred)", MLP()),
        ("LookupTable (HALP)", LookupTable()),
    ]
    profiled = rows_to_dataset(rows)
    kind_rows, stats = per_kind(models, profiled, held, floor)
    net_rows, nets = networks_table(tree, first, second, reference)
    flops_all = FlopsLinear().fit(
        [s for kind_specs, _ in profiled.values() for s in kind_specs],
        np.concatenate([y for _, y in profiled.values()]),
    )
    by_c = staircase(runner, FLAGS.out_dir, tree, flops_all, reference)

    kinds = sorted(held)
    mean_of = lambda name, key: np.mean([stats[k, name][key] for k in kinds])  # noqa: E731
    ratio = [stats[k, "TimingTree"]["mape"] / max(floor[k]["mape"], 1e-9) for k in kinds]
    lines = [
        "## Timing model (`benchmarks/timing_model.py`)",
        "",
        f"Run: {env}. LiteRT XNNPack, {threads} thread(s), {dtype}, batch 1.",
        "",
        f"Tree: fitted on every row of `{FLAGS.profile_dir}` (`make profile`): "
        + ", ".join(f"{k} {len(profiled[k][1])}" for k in sorted(profiled))
        + f", and {len(network_rows(rows)[0])} random networks timed whole; profiling took "
        f"{profiling_minutes(rows):.1f} min (gaps of over {IDLE_MINUTES} min between rows "
        "left out).",
        "",
        "### Per kind, on an independent held-out set",
        "",
        "Configurations drawn by `sample_held_out` (another random stream over the same ranges,",
        "no sweeps, no preference for multiples of 8), profiled in this run; every model below",
        "is fitted on the profile's rows only. Signed: mean (predicted - measured) / measured.",
        "Noise floor: the same held-out configurations profiled a second time, same protocol.",
        "Every time is expressed at the profile's machine speed (each batch divided by its",
        f"calibration kernel's time, times the profile's median, {reference:.2f} us; medians in",
        f"the held-out runs: {calibration_reference(first):.2f} and "
        f"{calibration_reference(second):.2f} us).",
        "",
        table(
            ["kind", "model", "n", "MAPE", "signed", "within 10%", "within 5%", "noise floor"],
            kind_rows,
        ),
        "",
        "Mean over kinds: "
        + "; ".join(
            f"{name} MAPE {100 * mean_of(name, 'mape'):.1f}%, within 10% "
            f"{100 * mean_of(name, 'within_10'):.0f}%"
            for name, _ in models
        )
        + f". TimingTree MAPE / noise floor per kind: median {np.median(ratio):.2f}x, worst "
        f"{max(ratio):.2f}x ({kinds[int(np.argmax(ratio))]}).",
        "",
        "### Held-out random networks timed whole",
        "",
        "Predicted with the composition term (min and median) and without it (the sum of",
        "single-kernel times, the ablation), each against the same statistic measured; the",
        "last column is the second measurement's deviation (the noise floor).",
        "",
        table(
            [
                "network",
                "weights MB",
                "min ms",
                "error (min)",
                "error without composition",
                "median ms",
                "error (median)",
                "remeasured",
            ],
            net_rows,
        ),
        "",
        f"{nets['min']['n']} networks. Minimum: MAPE {100 * nets['min']['mape']:.1f}%, within 10% "
        f"{100 * nets['min']['within_10']:.0f}%, within 5% {100 * nets['min']['within_5']:.0f}%; "
        f"median: MAPE {100 * nets['median']['mape']:.1f}%, within 10% "
        f"{100 * nets['median']['within_10']:.0f}%; without the composition term: MAPE "
        f"{100 * nets['sum']['mape']:.1f}%, within 10% {100 * nets['sum']['within_10']:.0f}%. "
        f"Noise floor: minimum {100 * nets['floor']['mape']:.1f}%, median "
        f"{100 * nets['floor_median']['mape']:.1f}%.",
        "",
        "### Staircase",
        "",
        f"![staircase](staircase_{machine_slug()}.png)",
        "",
        "Conv2D 3x3 on 28x28x32, measured: "
        + ", ".join(
            f"{c} ch {by_c[c]:.0f} us" for c in (56, 63, 64, 65, 72, 80, 96, 97) if c in by_c
        )
        + ".",
        "",
        "Rules of the fitted tree, with the composition term: "
        f"`benchmarks/timing_tree_rules_{machine_slug()}.txt`.",
    ]
    write_section("timing_model", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
