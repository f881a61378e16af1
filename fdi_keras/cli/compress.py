"""Compress a trained Keras model to a latency target on a profiled device.

    fdi-compress --model=in.keras --tree=profiles/this_cpu/timing_tree.json \
        --data=mnist.npz --target_latency_ms=0.05 --epochs=6 --out_dir=out

`python tools/compress.py` takes the same flags. `--data` is an .npz with x_train, y_train,
x_test, y_test (uint8 images are scaled to [0, 1]). Writes OUT_DIR/compressed.keras,
compressed.tflite and report.json (accuracy, predicted and measured latency of the input and
the compressed model, measured side by side).
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import keras
from absl import app, flags

import fdi_keras
from fdi_keras.atomic import atomic_write_bytes
from fdi_keras.cli import accuracy
from fdi_keras.compress import compress
from fdi_keras.datasets import load_npz
from fdi_keras.export import measure_latency, to_tflite

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the tool's flags (called by `entry`, so that importing `run` defines none)."""
    flags.DEFINE_string("model", None, "Trained input model (.keras).")
    flags.DEFINE_string("tree", "profiles/this_cpu/timing_tree.json", "The device's timing tree.")
    flags.DEFINE_string("data", None, ".npz with x_train, y_train, x_test, y_test.")
    flags.DEFINE_float("target_latency_ms", None, "Latency target (predicted) on the device.")
    flags.DEFINE_integer("epochs", 6, "Epochs of latency-aware training.")
    flags.DEFINE_integer("finetune_epochs", 2, "Epochs of fine-tuning after strip.")
    flags.DEFINE_integer("batch_size", 64, "Batch size.")
    flags.DEFINE_enum("gate", "hard_concrete", ["hard_concrete", "straight_through"], "Gates.")
    flags.DEFINE_bool("distill", True, "Train (gated, then fine-tuned) on the model's outputs too.")
    flags.DEFINE_string("out_dir", "compressed", "Output directory.")
    flags.mark_flags_as_required(["model", "data", "target_latency_ms"])


def run(
    model_path,
    tree_path,
    data_path,
    target_latency_ms,
    epochs,
    finetune_epochs,
    out_dir,
    batch_size=64,
    gate="hard_concrete",
    distill=True,
) -> dict:
    """The tool as a function: returns the report dict it writes."""
    model = keras.models.load_model(model_path)
    tree = fdi_keras.TimingTree.load(tree_path)
    (x, y), (x_test, y_test) = load_npz(data_path, model.inputs[0].shape[1:])
    result = compress(
        model,
        tree,
        x,
        y,
        target_latency_ms,
        epochs,
        finetune_epochs,
        batch_size,
        gate=gate,
        verbose=1,
        distill=distill,
    )
    os.makedirs(out_dir, exist_ok=True)
    result.model.save(os.path.join(out_dir, "compressed.keras"))
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffers = [
            to_tflite(model),
            to_tflite(result.model, os.path.join(out_dir, "compressed.tflite")),
        ]
    before, after = measure_latency(flatbuffers)
    acc = [accuracy(m, x_test, y_test) for m in (model, result.model)]
    report = {
        "accuracy": {"input": acc[0], "compressed": acc[1]},
        "predicted_ms": {
            "input": result.predicted_ms_before,
            "compressed": result.predicted_ms_after,
        },
        "measured_ms": {"input": before.min_ms, "compressed": after.min_ms},
        "measured_median_ms": {"input": before.median_ms, "compressed": after.median_ms},
        "measured_spread": {"input": before.spread, "compressed": after.spread},
        "target_latency_ms": target_latency_ms,
        "epochs": result.epochs,
        "seconds": result.seconds,
        "widths": result.strip_history,
        "epoch_log": result.epoch_log,
    }
    atomic_write_bytes(os.path.join(out_dir, "report.json"), json.dumps(report, indent=1).encode())
    return report


def main(argv):
    del argv
    r = run(
        FLAGS.model,
        FLAGS.tree,
        FLAGS.data,
        FLAGS.target_latency_ms,
        FLAGS.epochs,
        FLAGS.finetune_epochs,
        FLAGS.out_dir,
        FLAGS.batch_size,
        FLAGS.gate,
        FLAGS.distill,
    )
    p, m, a = r["predicted_ms"], r["measured_ms"], r["accuracy"]
    print(
        f"accuracy {a['input']:.4f} -> {a['compressed']:.4f}; predicted {p['input']:.3f} -> "
        f"{p['compressed']:.3f} ms ({p['input'] / p['compressed']:.2f}x); measured "
        f"{m['input']:.3f} -> {m['compressed']:.3f} ms ({m['input'] / m['compressed']:.2f}x)"
    )
    print(f"Wrote {FLAGS.out_dir}/compressed.keras, compressed.tflite, report.json")


def entry():
    """The `fdi-compress` console script."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    entry()
