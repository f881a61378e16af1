"""Slim a trained Keras model with DeepRebirth: merge non-tensor layers and parallel branches.

    fdi-slim --model=in.keras --data=cifar10.npz \
        --tree=profiles/this_cpu/timing_tree.json --out_dir=slimmed        # plan + slim
    fdi-slim --model=in.keras --data=... --dry_run                         # only the plan
    fdi-slim --model=in.keras --data=... --plan=slimmed/plan.json          # an edited plan

`python tools/slim.py` takes the same flags. Writes OUT_DIR/plan.json (every merge found,
with the tree's predicted saving, and what was skipped and why), slimmed.keras, slimmed.tflite
and report.json (accuracy, predicted and measured latency and peak memory of the input and the
slimmed model, the step history).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os

import keras
from absl import app, flags

import fdi_keras
from fdi_keras import rebirth
from fdi_keras.atomic import atomic_write_bytes
from fdi_keras.cli import accuracy
from fdi_keras.datasets import load_npz
from fdi_keras.export import measure_latency, measure_memory, to_tflite

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the tool's flags (called by `entry`, so that importing `run` defines none)."""
    flags.DEFINE_string("model", None, "Trained input model (.keras).")
    flags.DEFINE_string("data", None, ".npz with x_train, y_train, x_test, y_test.")
    flags.DEFINE_string("tree", None, "The device's timing tree (predicted savings, optional).")
    flags.DEFINE_string("plan", None, "A plan.json to apply instead of planning anew.")
    flags.DEFINE_list("kinds", list(rebirth.transforms.KIND_ORDER), "Merge kinds to apply.")
    flags.DEFINE_float("min_saving_ms", None, "Skip merges predicted to save less (needs --tree).")
    flags.DEFINE_integer("layerwise_epochs", 1, "Epochs of each layer-wise step.")
    flags.DEFINE_integer("layerwise_samples", 10000, "Training samples used by layer-wise steps.")
    flags.DEFINE_integer("finetune_epochs", 1, "Whole-network fine-tuning epochs.")
    flags.DEFINE_bool("dry_run", False, "Write and print the plan only.")
    flags.DEFINE_string("out_dir", "slimmed", "Output directory.")
    flags.mark_flags_as_required(["model", "data"])


def run(
    model_path,
    data_path,
    out_dir,
    tree_path=None,
    plan_path=None,
    kinds=None,
    min_saving_ms=None,
    layerwise_epochs=1,
    layerwise_samples=10000,
    finetune_epochs=1,
    dry_run=False,
) -> dict:
    """The tool as a function: returns the report dict it writes (only the plan on a dry run)."""
    model = keras.saving.load_model(model_path)
    tree = fdi_keras.TimingTree.load(tree_path) if tree_path else None
    if plan_path:
        with open(plan_path) as f:
            chosen = rebirth.Plan.from_json(f.read())
    else:
        chosen = rebirth.plan(model, tree).select(kinds=kinds, min_saving_ms=min_saving_ms)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_bytes(os.path.join(out_dir, "plan.json"), chosen.to_json().encode())
    print(chosen)
    if dry_run:
        return {"plan": json.loads(chosen.to_json())}
    (x, y), (x_test, y_test) = load_npz(data_path, model.inputs[0].shape[1:])
    small, history, skipped = rebirth.slim(
        model,
        x[:layerwise_samples],
        None,
        chosen,
        layerwise_epochs=layerwise_epochs,
        finetune_epochs=0,
    )
    if finetune_epochs and history:
        rebirth.finetune(small, model, x, y, epochs=finetune_epochs)
    small.save(os.path.join(out_dir, "slimmed.keras"))
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffers = [to_tflite(model), to_tflite(small, os.path.join(out_dir, "slimmed.tflite"))]
    timings = measure_latency(flatbuffers)
    report = {"input": {}, "slimmed": {}}
    for key, m, t, fb in zip(report, (model, small), timings, flatbuffers):
        report[key] = {
            "accuracy": accuracy(m, x_test, y_test),
            "measured_ms": t.min_ms,
            "measured_median_ms": t.median_ms,
            "measured_spread": t.spread,
            "peak_memory_mb": measure_memory(fb),
            "params": m.count_params(),
            "predicted_ms": fdi_keras.predict_latency(m, tree).total_ms if tree else None,
        }
    report["history"] = [dataclasses.asdict(s) for s in history]
    report["skipped"] = [dataclasses.asdict(s) for s in skipped]
    atomic_write_bytes(os.path.join(out_dir, "report.json"), json.dumps(report, indent=1).encode())
    return report


def main(argv):
    del argv
    r = run(
        FLAGS.model,
        FLAGS.data,
        FLAGS.out_dir,
        FLAGS.tree,
        FLAGS.plan,
        FLAGS.kinds,
        FLAGS.min_saving_ms,
        FLAGS.layerwise_epochs,
        FLAGS.layerwise_samples,
        FLAGS.finetune_epochs,
        FLAGS.dry_run,
    )
    if FLAGS.dry_run:
        print(f"Wrote {FLAGS.out_dir}/plan.json")
        return
    a, b = r["input"], r["slimmed"]
    print(
        f"accuracy {a['accuracy']:.4f} -> {b['accuracy']:.4f}; measured {a['measured_ms']:.3f} "
        f"-> {b['measured_ms']:.3f} ms ({a['measured_ms'] / b['measured_ms']:.2f}x); peak "
        f"memory {a['peak_memory_mb']:.1f} -> {b['peak_memory_mb']:.1f} MB"
    )
    print(f"Wrote {FLAGS.out_dir}/plan.json, slimmed.keras, slimmed.tflite, report.json")


def entry():
    """The `fdi-slim` console script."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    entry()
