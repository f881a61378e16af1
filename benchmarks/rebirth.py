"""Benchmark of DeepRebirth slimming, step by step, on GoogLeNet trained on CIFAR-10.

    python benchmarks/rebirth.py            # about 40 minutes on 2 cores

The teacher is GoogLeNet (Inception v1, with its two LRN layers and BN) at `--width`, trained
on CIFAR-10 (cached in --out_dir, so a rerun skips it). Then, cumulatively: fold BN (exact),
streamline (LRN and pooling merged into convolutions, layer-wise), branch (the Inception
modules the timing tree predicts faster when their thin branches are merged, layer-wise; every
module merged, the paper's choice, is measured alongside), reduction (1x1 reduces folded into
the kxk convolution after them, where the tree predicts that faster), whole-network fine-tuning with
distillation, and latency-aware pruning (FastDeepIoT) of the slimmed model. After each step:
measured TFLite latency (minimum, and median with spread) at 32x32 and at 224x224, predicted
latency, top-1 and top-5 test accuracy, parameters, and the interpreter's peak memory.
Results go to the `rebirth` section of RESULTS.md.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time

import keras
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import COUNTS, environment, table, write_section  # noqa: E402
from examples import models  # noqa: E402
from fdi_keras import datasets, predict_latency, rebirth  # noqa: E402
from fdi_keras.compress import compress  # noqa: E402
from fdi_keras.export import measure_latency, measure_memory, to_tflite, with_input_shape  # noqa: E402
from fdi_keras.profiling import LocalRunner, run_profile, sample_all  # noqa: E402
from fdi_keras.timing import TimingTree  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "data_dir", None, "Folder of the .npz datasets (default: $FDI_DATA, ../shared/data, download)."
)
flags.DEFINE_string(
    "profile_dir",
    "benchmarks/out/timing_model/profile",
    "Profile of this CPU (extended with the kinds GoogLeNet needs: lrn, concat).",
)
flags.DEFINE_string("out_dir", "benchmarks/out/rebirth", "Cached teacher and exported models.")
flags.DEFINE_float("width", 0.25, "GoogLeNet width multiplier.")
flags.DEFINE_integer("epochs", 15, "Teacher training epochs.")
flags.DEFINE_integer("layerwise_epochs", 2, "Epochs of each layer-wise step.")
flags.DEFINE_integer("layerwise_samples", 10000, "Training images used by layer-wise steps.")
flags.DEFINE_integer("finetune_epochs", 4, "Whole-network fine-tuning epochs after slimming.")
flags.DEFINE_float("finetune_lr", 3e-4, "Learning rate of the whole-network fine-tuning.")
flags.DEFINE_float("prune_speedup", 4.5, "Predicted speedup over the teacher asked of pruning.")
flags.DEFINE_integer("prune_epochs", 6, "Latency-aware pruning epochs.")
flags.DEFINE_integer("prune_finetune_epochs", 2, "Fine-tuning epochs after pruning.")
flags.DEFINE_float("min_saving_ms", 0.002, "Branch/reduction merges must save this much.")
flags.DEFINE_integer("train_samples", 0, "Use only this many training images (0: all).")

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = {**COUNTS, "lrn": 200, "concat": 200}


def device_tree() -> TimingTree:
    rows = run_profile([LocalRunner()], sample_all(list(KINDS), KINDS), FLAGS.profile_dir).rows
    return TimingTree().fit_rows(rows)


def teacher_model(x, y):
    path = os.path.join(FLAGS.out_dir, f"googlenet_w{FLAGS.width:g}_e{FLAGS.epochs}.keras")
    if os.path.exists(path):
        return keras.saving.load_model(path), 0.0
    keras.utils.set_random_seed(0)
    model = models.googlenet(width=FLAGS.width)
    steps = FLAGS.epochs * -(-len(x) // 64)
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, steps, alpha=0.05)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy")
    start = time.time()
    model.fit(x, y, epochs=FLAGS.epochs, batch_size=64, verbose=2)
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    model.save(path)
    return model, time.time() - start


def top_k(model, x, y, k):
    p = model.predict(x, verbose=0, batch_size=256)
    return float(np.mean(np.any(np.argsort(-p, -1)[:, :k] == y[:, None], -1)))


def _slim(current, teacher, tree, xs, kind, min_saving_ms=None):
    start = time.time()
    chosen = rebirth.plan(current, tree).select(kinds=[kind], min_saving_ms=min_saving_ms)
    result = rebirth.slim(
        current,
        xs,
        None,
        chosen,
        teacher=teacher,
        layerwise_epochs=FLAGS.layerwise_epochs,
        finetune_epochs=0,
    )
    return result.model, time.time() - start, result.history


def slim_steps(teacher, tree, x, y):
    """(label, model, seconds, history) after each cumulative step, and the pruning target.

    Branch merges are chosen by the tree (those predicted to save time); the paper's choice,
    every module merged, is measured alongside (after its layer-wise steps only)."""
    xs = x[: FLAGS.layerwise_samples]
    steps = [("GoogLeNet (teacher)", teacher, 0.0, [])]
    folded = _slim(teacher, teacher, tree, xs, "fold_bn")
    steps.append(("+ fold BN (exact)", *folded))
    streamlined = _slim(folded[0], teacher, tree, xs, "streamline")
    steps.append(("+ streamline (LRN, pools)", *streamlined))
    every = _slim(streamlined[0], teacher, tree, xs, "branch")
    steps.append(("(paper's choice: all modules branch-merged, layer-wise only)", *every))
    chosen = _slim(streamlined[0], teacher, tree, xs, "branch", FLAGS.min_saving_ms)
    merged = sum(s.kind == "branch" for s in chosen[2])
    steps.append((f"+ branch ({merged} modules the tree predicts faster)", *chosen))
    chosen = _slim(chosen[0], teacher, tree, xs, "reduction", FLAGS.min_saving_ms)
    merged = sum(s.kind == "reduction" for s in chosen[2])
    steps.append((f"+ reduction ({merged} 1x1 reduces the tree predicts faster folded)", *chosen))
    start = time.time()
    tuned = keras.models.clone_model(chosen[0])
    tuned.set_weights(chosen[0].get_weights())
    rebirth.finetune(tuned, teacher, x, y, epochs=FLAGS.finetune_epochs, lr=FLAGS.finetune_lr)
    steps.append(("+ fine-tune (labels + distillation)", tuned, time.time() - start, []))
    start = time.time()
    target = predict_latency(teacher, tree).total_ms / FLAGS.prune_speedup
    keras.utils.set_random_seed(0)
    pruned = compress(tuned, tree, x, y, target, FLAGS.prune_epochs, FLAGS.prune_finetune_epochs)
    steps.append(("+ latency-aware pruning", pruned.model, time.time() - start, []))
    return steps, target


def measure(steps, size):
    with contextlib.redirect_stdout(io.StringIO()):
        models_ = [
            m if size == 32 else with_input_shape(m, (size, size, 3)) for _, m, _, _ in steps
        ]
        flatbuffers = [to_tflite(m) for m in models_]
    timings = measure_latency(flatbuffers, rounds=15 if size == 32 else 9)
    memory = [measure_memory(f) for f in flatbuffers]
    return models_, timings, memory


def main(argv):
    del argv
    env = environment()
    (x, y), (x_test, y_test) = datasets.cifar10(FLAGS.data_dir)
    if FLAGS.train_samples:
        x, y = x[: FLAGS.train_samples], y[: FLAGS.train_samples]
    tree = device_tree()
    teacher, teacher_seconds = teacher_model(x, y)
    first_plan = rebirth.plan(teacher, tree)
    steps, target = slim_steps(teacher, tree, x, y)
    rows = []
    per_size = {size: measure(steps, size) for size in (32, 224)}
    for i, (label, model, seconds, _) in enumerate(steps):
        row = dict(
            label=label,
            top1=top_k(model, x_test, y_test, 1),
            top5=top_k(model, x_test, y_test, 5),
            params=model.count_params(),
            seconds=seconds,
        )
        for size, (sized, timings, memory) in per_size.items():
            t = timings[i]
            row[size] = dict(
                ms=t.min_ms,
                median=t.median_ms,
                spread=t.spread,
                mem=memory[i],
                pred=predict_latency(sized[i], tree).total_ms,
            )
        rows.append(row)
    write_section("rebirth", report(env, rows, steps, first_plan, target, teacher_seconds))


def report(env, rows, steps, first_plan, target, teacher_seconds):
    base = rows[0]
    header = ["step", "top-1", "top-5", "params"]
    for size in (32, 224):
        header += [
            f"{size}px ms (min)",
            f"{size}px median (spread)",
            f"{size}px predicted",
            f"{size}px speedup",
            f"{size}px peak MB",
        ]
    header += ["wall s"]
    body = []
    for r in rows:
        cells = [r["label"], f"{100 * r['top1']:.2f}%", f"{100 * r['top5']:.2f}%", r["params"]]
        for size in (32, 224):
            m = r[size]
            cells += [
                f"{m['ms']:.3f}",
                f"{m['median']:.3f} ({100 * m['spread']:.0f}%)",
                f"{m['pred']:.3f}",
                f"{base[size]['ms'] / m['ms']:.2f}x",
                f"{m['mem']:.1f}",
            ]
        cells.append(f"{r['seconds']:.0f}")
        body.append(cells)
    errors = [
        [s.name, f"{s.error_before:.4g}", f"{s.error_after:.4g}", f"{s.seconds:.0f}"]
        for _, _, _, history in steps
        for s in history
        if s.error_before is not None
    ]
    lines = [
        "## DeepRebirth slimming (`benchmarks/rebirth.py`)",
        "",
        f"Run: {env}. GoogLeNet (Inception v1 with LRN and BN, 3x3 stem) at width "
        f"{FLAGS.width:g}, trained {FLAGS.epochs} epochs on CIFAR-10 "
        f"({'cached' if not teacher_seconds else f'{teacher_seconds / 60:.0f} min'}); "
        "steps are cumulative. LiteRT XNNPack, 1 thread, fp32, batch 1, every model timed "
        "side by side (interleaved rounds) at the training resolution (32x32) and, with the "
        "same weights, at 224x224. Peak MB: resident memory that loading and running the "
        "interpreter adds to a fresh process. Pruning target: "
        f"{target:.3f} ms predicted at 32x32 ({FLAGS.prune_speedup:g}x below the teacher).",
        "",
        table(header, body),
        "",
        "Layer-wise steps: reconstruction MSE of each new block against the teacher's "
        "activations on 512 held-out training images, before and after its training.",
        "",
        table(["merge", "MSE before", "MSE after", "s"], errors),
        "",
        "The plan on the teacher, with the tree's predicted saving per merge (BN folds save "
        "nothing at run time: the converter folds BN anyway):",
        "",
        "```",
        "\n".join(line for line in str(first_plan).splitlines() if not line.startswith("fold_bn")),
        "```",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    app.run(main)
