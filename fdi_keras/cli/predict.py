"""Predict a Keras model's latency, kernel by kernel, on a profiled device.

    fdi-predict --model=model.keras --tree=profiles/this_cpu/timing_tree.json
    fdi-predict --model=model.keras --tree=... --json      # the report as JSON

Prints the table of `fdi_keras.predict_latency`: one row per runtime kernel (the Keras layers
it runs, its kind, the tree leaf, the predicted time and share), the invoke overhead and the
total. The model may hold fdi_keras layers (LocalResponseNormalization, gated wrappers).
"""

from __future__ import annotations

import json
import os

import keras
from absl import app, flags

import fdi_keras

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the tool's flags (called by `entry`, so that importing `run` defines none)."""
    flags.DEFINE_string("model", None, "The model (.keras).")
    flags.DEFINE_string("tree", "profiles/this_cpu/timing_tree.json", "The device's timing tree.")
    flags.DEFINE_bool("json", False, "Print the report as JSON instead of a table.")
    flags.DEFINE_enum(
        "statistic",
        "min",
        ["min", "median"],
        "Latency over invokes to predict: min (uncontended) or median (compare with "
        "benchmark_model's average).",
    )
    flags.mark_flags_as_required(["model"])


def run(model_path: str, tree_path: str, statistic: str = "min") -> fdi_keras.LatencyReport:
    """The tool as a function: the predicted latency report of the saved model.

    Raises:
        FileNotFoundError: when the model or the tree file does not exist.
    """
    for what, path in (("model", model_path), ("timing tree", tree_path)):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No {what} at {path}. Expected an existing file (a timing tree comes from "
                f"`fdi-profile --out_dir=...`). Received: {path!r}"
            )
    model = keras.saving.load_model(model_path)  # fdi_keras's layers are registered on import
    return fdi_keras.predict_latency(model, fdi_keras.TimingTree.load(tree_path), statistic)


def main(argv):
    del argv
    report = run(FLAGS.model, FLAGS.tree, FLAGS.statistic)
    print(json.dumps(report.to_dict(), indent=1) if FLAGS.json else report)


def entry():
    """The `fdi-predict` console script."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    entry()
