"""Equal-budget comparison of FastDeepIoT compression with what a practitioner would try instead.

    python benchmarks/compressors.py --tree=profiles/this_cpu/timing_tree.json
    python benchmarks/compressors.py --tasks=har --speedups=3 --seeds=0,1
    python benchmarks/compressors.py --quick        # a smoke run of every method, minutes

Per task, one teacher is trained once (cached under --out_dir with its epochs and accuracy);
then, from the same teacher, every compressor gets the same budget of `budget` epochs on the
same data (Adam, batch 64), at each predicted-speedup target (the teacher's latency predicted
on --tree divided by the speedup):

- "uniform (scratch)": one width ratio for every layer, trained from a fresh initialization;
- "L1 uniform": the same ratio, each layer's largest-L1 filters kept, then fine-tuned;
- "knapsack (HALP)": Taylor importance maximized under the tree's latency, gradual;
- "FLOPs cost": the project's method steered by a FLOPs-linear cost fitted on the same
  profile instead of the tree;
- "FastDeepIoT": `fdi_keras.compress.compress` with its defaults.

Every compressed model is saved with its accuracy as soon as it is done (a killed run resumes
where it stopped); then all the task's models, and the teacher twice (the noise floor), are
timed side by side in one interleaved LiteRT run (fp32, 1 thread). Each task writes its section
of benchmarks/RESULTS.md (`compression_<task>`) and a Pareto plot (compression_<task>_<cpu>.png).

Not named compression.py: run as a script, that name would shadow the standard library's
`compression` package (Python 3.14, and its backport, which jax imports under TensorFlow).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import time

import keras
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import baselines  # noqa: E402
from benchmarks.common import (  # noqa: E402
    calibration_model,
    environment,
    machine_slug,
    machine_speed,
    require_float32_single_thread,
    table,
    write_section,
)
from examples import models  # noqa: E402
from fdi_keras import datasets, latency_aware, predict_latency  # noqa: E402
from fdi_keras.atomic import atomic_write_bytes  # noqa: E402
from fdi_keras.compress import compress, finetune  # noqa: E402
from fdi_keras.export import measure_latency, to_tflite  # noqa: E402
from fdi_keras.plots import pareto_figure  # noqa: E402
from fdi_keras.profiling import read_rows  # noqa: E402
from fdi_keras.timing import FlopsLinear, TimingTree, rows_to_dataset  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("tasks", ["mnist", "har", "cifar10_resnet20"], "Tasks (see TASKS).")
flags.DEFINE_string(
    "tree",
    "profiles/this_cpu/timing_tree.json",
    "This CPU's timing tree (`make profile`); its profile.jsonl beside it fits the FLOPs cost.",
)
flags.DEFINE_list("speedups", ["2", "3", "4"], "Predicted speedups asked of every compressor.")
flags.DEFINE_list("methods", None, "Subset of METHODS (default: all).")
flags.DEFINE_list("seeds", ["0"], "Seeds of the compression runs (the teacher's is 0).")
flags.DEFINE_string("out_dir", "benchmarks/out/compression", "Teachers, models and run logs.")
flags.DEFINE_string(
    "data_dir", None, "Folder of the .npz datasets (default: $FDI_DATA, ../shared/data, download)."
)
flags.DEFINE_bool(
    "distill",
    True,
    "Every method trains on the teacher's outputs as well as the labels (compress's default).",
)
flags.DEFINE_bool("quick", False, "2,000 training / 500 test samples, 1-2 epochs, 3x only.")
flags.DEFINE_bool("write", None, "Write RESULTS.md and the plots (default: unless --quick).")
flags.DEFINE_bool(
    "overhead",
    True,
    "Measure the gates' training overhead per epoch (57 interleaved epochs of up to 15,000 "
    "examples: 3-4 minutes on MNIST and UCI HAR, ~35 on CIFAR-10 ResNet-20 on 2 cores).",
)

HERE = os.path.dirname(os.path.abspath(__file__))


# name: (teacher builder, loader, training samples (None: all), teacher epochs, budget epochs)
TASKS = {
    # MNIST is cut to 30,000 training images (an epoch of LeNet-5 takes ~15 s on 2 cores).
    # After 4 epochs (99.12%) an L1 student passed it (99.34%): 12 epochs.
    "mnist": (models.lenet5, datasets.mnist, 30000, 12, 4),
    "har": (models.deepsense_har, datasets.uci_har, None, 15, 8),
    # CIFAR-10 is cut to 20,000 training images (an epoch of ResNet-20 takes ~1 min on 2 cores).
    # After 12 epochs (68.5%) its FLOPs-cost students passed it by 2.5 points: 30 epochs.
    "cifar10_resnet20": (models.resnet20, datasets.cifar10, 20000, 30, 4),
    # MobileNetV2 a0.35 was still climbing after 12 epochs (38.8%; its students passed it by
    # 5 points in 4 more): 30 epochs of ~40 s.
    "cifar10_mobilenetv2": (models.mobilenet_v2_cifar, datasets.cifar10, 20000, 30, 4),
}


# How `compress` is run here; part of its runs' key, so that a changed recipe trains again.
# Its defaults' split (epochs=10, finetune_epochs=3) scaled to the budget: on CIFAR-10
# MobileNetV2 at 3x, half and half reached 34.1% (37.6% distilled while gated too), a quarter
# of fine-tuning 40.4%, and three quarters 34.7% (one seed each).
RECIPE = "gated and fine-tuned 10:3, both distilled"


def recipe_of(method: str) -> str | None:
    """The recipe part of a run's key (None: the baselines, unchanged)."""
    return RECIPE if method in ("FastDeepIoT", "FLOPs cost") else None


def finetune_share(budget: int) -> int:
    """Fine-tuning epochs of `compress`'s runs: its defaults' 3 of 13, at least one epoch of
    each phase."""
    return min(budget - 1, max(1, round(budget * 3 / 13)))


def fastdeepiot(teacher, tree, x, y, target_ms, budget, cost_tree=None):
    """`compress` with its defaults, the budget split between gated training and fine-tuning
    as its defaults split their 13 epochs (at least one of each). With a `cost_tree`, the
    target is the same speedup in that cost's own units."""
    tune = finetune_share(budget)
    if cost_tree is not None:
        ratio = target_ms / predict_latency(teacher, tree).total_ms
        target_ms = ratio * predict_latency(teacher, cost_tree).total_ms
    return compress(
        teacher, tree, x, y, target_ms, max(1, budget - tune), tune, cost_tree=cost_tree,
        distill=FLAGS.distill,
    ).model  # fmt: skip


METHODS = {
    "uniform (scratch)": lambda t, tree, flops, x, y, ms, e: baselines.uniform_scratch(
        t, tree, x, y, ms, e, distill=FLAGS.distill
    ),
    "L1 uniform": lambda t, tree, flops, x, y, ms, e: baselines.l1_uniform(
        t, tree, x, y, ms, e, distill=FLAGS.distill
    ),
    "knapsack (HALP)": lambda t, tree, flops, x, y, ms, e: baselines.knapsack(
        t, tree, x, y, ms, e, distill=FLAGS.distill
    ),
    "FLOPs cost": lambda t, tree, flops, x, y, ms, e: fastdeepiot(t, tree, x, y, ms, e, flops),
    "FastDeepIoT": lambda t, tree, flops, x, y, ms, e: fastdeepiot(t, tree, x, y, ms, e),
}


def flops_cost(tree_path: str) -> TimingTree:
    """Seconds per FLOP per kind, fitted (FLOPs-linear) on the rows of the tree's own profile;
    without the per-kernel intercepts, so a 2x target halves the FLOPs as a FLOP-budget
    compressor would (with them it asked MobileNetV2 for the unreachable and pruned every layer
    to its floor at 2x, 3x and 4x alike)."""
    rows = read_rows(os.path.join(os.path.dirname(tree_path), "profile.jsonl"))
    tree = TimingTree.load(tree_path)
    data = {k: v for k, v in rows_to_dataset(rows).items() if k in tree.kinds_}
    specs = [s for sp, _ in data.values() for s in sp]
    times = np.concatenate([t for _, t in data.values()])
    return FlopsLinear().fit(specs, times).as_tree(intercept=False)


def accuracy(model, x, y) -> float:
    return float(np.mean(model.predict(x, batch_size=256, verbose=0).argmax(-1) == y))


def load_task(name):
    build, load, samples, teacher_epochs, budget = TASKS[name]
    (x, y), (x_test, y_test) = load(FLAGS.data_dir)
    x, y = x[:samples], y[:samples]  # the loaders shuffle CIFAR-10's class-grouped rows
    if FLAGS.quick:
        test = np.random.default_rng(0).choice(len(y_test), 500, replace=False)
        x, y, x_test, y_test = x[:2000], y[:2000], x_test[test], y_test[test]
        teacher_epochs, budget = 2, 2
    return build, (x, y), (x_test, y_test), teacher_epochs, budget


def teacher_for(name, build, x, y, x_test, y_test, epochs, task_dir):
    """The task's teacher, trained once (Adam 1e-3, cosine to 0) and cached with its record."""
    path, record_path = (os.path.join(task_dir, f) for f in ("teacher.keras", "teacher.json"))
    wanted = {"epochs": epochs, "samples": len(x), "test_samples": len(x_test), "seed": 0}
    if os.path.exists(record_path):
        with open(record_path) as f:
            record = json.load(f)
        if {k: record.get(k) for k in wanted} == wanted and os.path.exists(path):
            return keras.models.load_model(path), record
    keras.utils.set_random_seed(0)
    teacher = build()
    start = time.time()
    history = finetune(teacher, x, y, epochs, validation_data=(x_test, y_test))
    record = wanted | {
        "seconds": time.time() - start,  # the per-epoch test evaluations included
        "accuracy": accuracy(teacher, x_test, y_test),
        # watched, never used to choose anything: whether the teacher had stopped improving
        "test_accuracy_by_epoch": [round(a, 4) for a in history.history["val_accuracy"]],
    }
    teacher.save(path)
    atomic_write_bytes(record_path, json.dumps(record).encode())
    print(f"{name}: teacher {record}", flush=True)
    return teacher, record


def read_runs(path) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def same_run(record, key) -> bool:
    """Whether a runs.jsonl `record` is the run `key` names (records written before the
    --distill flag were trained without a teacher)."""
    return {k: record.get(k, False if k == "distill" else None) for k in key} == key


def file_digest(path) -> str:
    """A short content hash: runs made with another tree (a new profile at the same path) are
    other runs, since the tree sets every target."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def run_task(name, tree, flops, tree_digest):
    build, (x, y), (x_test, y_test), teacher_epochs, budget = load_task(name)
    task_dir = os.path.join(FLAGS.out_dir, name + ("_quick" if FLAGS.quick else ""))
    os.makedirs(task_dir, exist_ok=True)
    teacher, record = teacher_for(name, build, x, y, x_test, y_test, teacher_epochs, task_dir)
    teacher_ms = predict_latency(teacher, tree).total_ms
    # Timed before the compression runs: after 50 of them in the same process the gated arm
    # measured +9.2% on MNIST where a fresh process measured +5.7% (the same code, minutes
    # apart); a user's training process holds one model, not fifty.
    overhead = None
    if FLAGS.overhead and not FLAGS.quick:
        overhead = epoch_overhead(teacher, tree, teacher_ms / 3, x, y)
    runs_path = os.path.join(task_dir, "runs.jsonl")
    speedups = ["3"] if FLAGS.quick else FLAGS.speedups
    for speedup in map(float, speedups):
        for method in FLAGS.methods or METHODS:
            for seed in map(int, FLAGS.seeds):
                key = {"method": method, "speedup": speedup, "seed": seed, "budget": budget}
                key |= {"distill": FLAGS.distill, "tree": tree_digest, "recipe": recipe_of(method)}
                if any(same_run(r, key) for r in read_runs(runs_path)):
                    continue  # done by an earlier, interrupted run
                keras.utils.set_random_seed(seed)
                start = time.time()
                with contextlib.redirect_stdout(io.StringIO()):
                    model = METHODS[method](
                        teacher, tree, flops, x, y, teacher_ms / speedup, budget
                    )
                seconds = time.time() - start
                kd = "_kd" if FLAGS.distill else ""
                file = f"{method.split()[0]}_{speedup:g}x_seed{seed}{kd}_{key['tree']}.keras"
                model.save(os.path.join(task_dir, file))
                run = key | {
                    "file": file,
                    "accuracy": accuracy(model, x_test, y_test),
                    "predicted_ms": predict_latency(model, tree).total_ms,
                    "params": model.count_params(),
                    "seconds": seconds,
                }
                print(name, run, flush=True)
                with open(runs_path, "a") as f:  # one line per finished run
                    f.write(json.dumps(run) + "\n")
    wanted = (set(map(float, speedups)), set(FLAGS.methods or METHODS), set(map(int, FLAGS.seeds)))
    runs = [
        r
        for r in read_runs(runs_path)
        if r["budget"] == budget
        and r.get("distill", False) == FLAGS.distill
        and r.get("tree") == tree_digest
        and r.get("recipe") == recipe_of(r["method"])
        and (r["speedup"], r["method"], r["seed"])
        in {(s, m, d) for s in wanted[0] for m in wanted[1] for d in wanted[2]}
    ]
    result = measured(teacher, tree, runs, task_dir)
    if overhead is not None:
        result["overhead"] = overhead
    return result, record, teacher_ms, budget


OVERHEAD_SAMPLES = 15000  # examples per timed epoch of the training-overhead measurement
OVERHEAD_ROUNDS = 18  # interleaved epochs of each arm (after one warm-up round)


def epoch_overhead(dense, tree, target_ms, x, y, rounds=OVERHEAD_ROUNDS, samples=OVERHEAD_SAMPLES):
    """Seconds per epoch (over up to `samples` examples) of the plain model, of a second copy
    of it (the noise floor: two identical arms in the same rounds) and of the gated model with
    the callback steering toward `target_ms`: `rounds` epochs of each, interleaved (the order
    rotating from round to round) after a warm-up one, from the start to the end of the epoch
    (the callback's per-epoch work included, its once-per-fit setup not). Returns the medians
    and the per-round ratios of the gated and the second plain arm to the first."""
    from fdi_keras import FastDeepIoTCallback

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    x, y = x[:samples], y[:samples]
    setups = {
        "plain": (keras.models.clone_model(dense), []),
        "plain again": (keras.models.clone_model(dense), []),
        "gated": (latency_aware(dense), [FastDeepIoTCallback(tree, target_ms, verbose=0)]),
    }
    times = {name: [] for name in setups}
    for model, _ in setups.values():
        model.compile("adam", "sparse_categorical_crossentropy")
    names = list(setups)
    for round_ in range(rounds + 1):
        # Each round starts with the next arm: an arm always timed last (or first) in its
        # round would carry the position's bias (caches, clock) as overhead.
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            model, callbacks = setups[name]
            timer = EpochTimer()
            model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[*callbacks, timer])
            if round_:  # the first round builds and traces
                times[name].append(timer.seconds)
    plain = np.array(times["plain"])
    return {name: float(np.median(t)) for name, t in times.items()} | {
        "ratios": np.array(times["gated"]) / plain,
        "floor": np.array(times["plain again"]) / plain,
    }


def overhead_line(overhead) -> str:
    """The section's line on the training overhead, next to its noise floor."""

    def summary(ratios):
        q25, q50, q75 = 100 * (np.percentile(ratios, [25, 50, 75]) - 1)
        return f"{q50:+.1f}% (interquartile {q25:+.1f}% to {q75:+.1f}%)"

    return (
        f"- Training overhead of the gates + callback: {overhead['gated']:.2f} s vs "
        f"{overhead['plain']:.2f} s per epoch of up to {OVERHEAD_SAMPLES:,} examples, median "
        f"of {len(overhead['ratios'])} interleaved epochs {summary(overhead['ratios'])}; "
        f"noise floor, a second plain copy timed in the same rounds: "
        f"{summary(overhead['floor'])}."
    )


def measured(teacher, tree, runs, task_dir):
    """Times the teacher (twice: the noise floor), the profiler's calibration kernel (the
    machine's speed against the profile's) and every run's model side by side."""
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffers = [to_tflite(teacher)] * 2 + [calibration_model()]
        flatbuffers += [
            to_tflite(keras.models.load_model(os.path.join(task_dir, r["file"]))) for r in runs
        ]
    timings = measure_latency(flatbuffers, rounds=21)
    for run, t in zip(runs, timings[3:]):
        run |= {"ms": t.min_ms, "median": t.median_ms, "spread": t.spread}
    return {
        "teacher": timings[0],
        "teacher again": timings[1],
        "calibration": timings[2],
        "runs": runs,
    }


def fastest_at(runs, method, accuracy_floor):
    ok = [r["ms"] for r in runs if r["method"] == method and r["accuracy"] >= accuracy_floor]
    return min(ok) if ok else None


def verdict(speedup, runs, teacher_ms, floor) -> str:
    """FastDeepIoT at one target against the most accurate other model measured at least as
    fast (within the noise floor), whatever target that model was asked for: a method that
    overshot its target is compared with the others' faster targets, and one that missed it
    is not credited with the accuracy a slower model keeps. Each (method, target) is the mean
    over its seeds."""
    points = {}  # (method, target) -> (accuracy, ms), means over seeds
    for key in {(r["method"], r["speedup"]) for r in runs}:
        chosen = [r for r in runs if (r["method"], r["speedup"]) == key]
        points[key] = (
            np.mean([r["accuracy"] for r in chosen]),
            np.mean([r["ms"] for r in chosen]),
        )
    if ("FastDeepIoT", speedup) not in points:
        return f"- {speedup:g}x: no FastDeepIoT run."
    acc, ms = points["FastDeepIoT", speedup]
    ours = f"FastDeepIoT {100 * acc:.2f}% at {teacher_ms / ms:.2f}x"
    as_fast = [k for k, (_, t) in points.items() if k[0] != "FastDeepIoT" and t <= ms * (1 + floor)]
    if not as_fast:
        return f"- {speedup:g}x: {ours}; no other model measured as fast."
    best = max(as_fast, key=lambda k: points[k][0])
    (method, target), (best_acc, best_ms) = best, points[best]
    return (
        f"- {speedup:g}x: {ours} vs the most accurate other at least as fast, {method} "
        f"(asked {target:g}x), {100 * best_acc:.2f}% at {teacher_ms / best_ms:.2f}x "
        f"({100 * (acc - best_acc):+.2f} points)."
    )


def section(name, env, result, record, teacher_ms, budget) -> str:
    runs, t0, t1 = result["runs"], result["teacher"], result["teacher again"]
    floor = abs(t0.min_ms - t1.min_ms) / min(t0.min_ms, t1.min_ms)
    header = [
        "target",
        "method",
        "seed",
        "accuracy",
        "measured ms (min)",
        "median ms (spread)",
        "predicted ms",
        "measured speedup",
        "params",
        "wall s",
    ]
    rows = [
        ["-", "teacher", 0, f"{100 * record['accuracy']:.2f}%", f"{t0.min_ms:.3f}",
         f"{t0.median_ms:.3f} ({100 * t0.spread:.1f}%)", f"{teacher_ms:.3f}", "1.00x",
         "-", f"{record['seconds']:.0f}"]
    ]  # fmt: skip
    for r in sorted(runs, key=lambda r: (r["speedup"], list(METHODS).index(r["method"]))):
        rows.append(
            [
                f"{r['speedup']:g}x",
                r["method"],
                r["seed"],
                f"{100 * r['accuracy']:.2f}%",
                f"{r['ms']:.3f}",
                f"{r['median']:.3f} ({100 * r['spread']:.1f}%)",
                f"{r['predicted_ms']:.3f}",
                f"{t0.min_ms / r['ms']:.2f}x",
                r["params"],
                f"{r['seconds']:.0f}",
            ]
        )
    verdicts = [verdict(speedup, runs, t0.min_ms, floor) for speedup in
                sorted({r["speedup"] for r in runs})]  # fmt: skip
    near = record["accuracy"] - 0.01
    fastest = {m: fastest_at(runs, m, near) for m in METHODS}
    listed = ", ".join(f"{m} {v:.3f} ms" if v else f"{m} none" for m, v in fastest.items())
    verdicts.append(f"- Fastest model within 1 point of the teacher ({100 * near:.2f}%): {listed}.")
    ours, simple = fastest["FastDeepIoT"], [fastest[m] for m in ("uniform (scratch)", "L1 uniform")]
    if ours and fastest["FLOPs cost"]:
        verdicts.append(
            "- At that accuracy, FastDeepIoT is "
            f"{100 * (1 - ours / fastest['FLOPs cost']):+.0f}% faster than FLOPs cost (goal: +30%)"
            + (
                f", {100 * (1 - ours / min(v for v in simple if v)):+.0f}% than the best of "
                "uniform / L1 (goal: +15%)."
                if any(simple)
                else "."
            )
        )
    overhead = result.get("overhead")
    if overhead:
        verdicts.append(overhead_line(overhead))
    return "\n".join(
        [
            f"### Compression on {name} (`benchmarks/compressors.py --tasks={name}`)",
            "",
            f"Run: {env}{' (--quick)' if FLAGS.quick else ''}. Teacher: {record['epochs']} "
            f"epochs on {record['samples']:,} training images/windows, tested on "
            f"{record['test_samples']:,}. Every compressor: {budget} epochs after the teacher "
            "(Adam 1e-3, batch 64; FastDeepIoT and FLOPs cost: gated training, then "
            f"{finetune_share(budget)} of fine-tuning with the rate "
            "annealed to 0; the others' fine-tuning or training is annealed the same way; "
            + (
                "every method's training distilled from the teacher (FastDeepIoT's gated "
                "training too), T=4, labels and teacher weighted equally"
                if FLAGS.distill
                else "labels only, no distillation"
            )
            + "). Targets: the teacher's latency predicted on "
            f"`{FLAGS.tree}` divided by the speedup. LiteRT XNNPack, 1 thread, fp32, batch 1; "
            "every model timed side by side (21 interleaved rounds); noise floor, the teacher "
            f"timed twice in the same run: {100 * floor:.1f}% apart. "
            + machine_speed(os.path.dirname(FLAGS.tree), result["calibration"].min_us),
            "",
            table(header, rows),
            "",
            *verdicts,
            "",
            f"![pareto {name}](compression_{name}_{machine_slug()}.png)",
        ]
    )


def pareto_plot(name, result):
    runs = [
        dict(
            method=r["method"],
            accuracy=100 * r["accuracy"],
            latency_ms=r["ms"],
            predicted_ms=r["predicted_ms"],
        )
        for r in result["runs"]
    ]
    fig = pareto_figure(runs, title=name)
    fig.axes[0].set(xlabel="measured latency (ms, LiteRT fp32, 1 thread)", ylabel="accuracy (%)")
    fig.savefig(os.path.join(HERE, f"compression_{name}_{machine_slug()}.png"), dpi=110)


def main(argv):
    del argv
    env = environment()
    tree = TimingTree.load(FLAGS.tree)
    require_float32_single_thread(tree, FLAGS.tree)
    tree_digest = file_digest(FLAGS.tree)  # read with the tree: every run of this call keys on it
    flops = flops_cost(FLAGS.tree)
    for name in FLAGS.tasks:
        result, record, teacher_ms, budget = run_task(name, tree, flops, tree_digest)
        text = section(name, env, result, record, teacher_ms, budget)
        print(text, flush=True)
        if FLAGS.write if FLAGS.write is not None else not FLAGS.quick:
            pareto_plot(name, result)
            write_section(f"compression_{name}", text)


if __name__ == "__main__":
    app.run(main)
