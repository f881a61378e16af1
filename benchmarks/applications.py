"""Stock keras.applications and everyday Keras patterns: predicted vs measured, and strip.

For every model (weights=None, small inputs as in tests/graph/test_zoo.py plus larger ones
where a family is usually deployed): the latency `fdi_keras.predict_latency` predicts with this
CPU's tree next to the minimum and median measured by `fdi_keras.export.measure_latency`
(LiteRT, XNNPack, 1 thread), all models of a round timed side by side and interleaved; then
the same with about half of every gate group's channels closed at random and stripped (a
thinned variant). The noise floor is the same models measured a second time in the same run.

    python benchmarks/applications.py --tree=profiles/this_cpu/timing_tree.json   # ~20 min

The tree must hold every kind the zoo needs (`make profile` profiles them).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "graph")]  # the zoo the tests run on

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from zoo import ZOO, close_random_channels  # noqa: E402

from benchmarks.common import environment, table, write_section  # noqa: E402
from fdi_keras import TimingTree, latency_aware, predict_latency, strip  # noqa: E402
from fdi_keras.export import measure_latency, to_tflite  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("tree", "profiles/this_cpu/timing_tree.json", "This CPU's timing tree.")
flags.DEFINE_list("models", [], "Names to run (default: all of ZOO and LARGER).")
flags.DEFINE_integer("rounds", 2, "Measurements of every model (2: the second is the noise floor).")

A = keras.applications
# Where a family is usually deployed: larger inputs than the tests' (1 thread, this CPU).
LARGER = {
    "MobileNet_a0.5_128": lambda: A.MobileNet((128, 128, 3), alpha=0.5, weights=None),
    "MobileNetV2_a0.5_128": lambda: A.MobileNetV2((128, 128, 3), alpha=0.5, weights=None),
    "MobileNetV3Small_128": lambda: A.MobileNetV3Small((128, 128, 3), weights=None),
    "EfficientNetB0_128": lambda: A.EfficientNetB0(weights=None, input_shape=(128, 128, 3)),
    "ResNet50_64": lambda: A.ResNet50(weights=None, input_shape=(64, 64, 3)),
}


def thinned(model, seed=0):
    """`model` with about half of every gate group's channels removed at random (stripped)."""
    gated = latency_aware(model)
    close_random_channels(gated, seed)
    return strip(gated)


def main(argv):
    del argv
    tree = TimingTree.load(FLAGS.tree)
    builders = {**ZOO, **LARGER}
    names = FLAGS.models or list(builders)
    rows, errors, floor = [], [], []
    for name in tqdm(names, desc="zoo"):
        base = builders[name]()
        for variant, model in (("", base), (" thinned", thinned(base))):
            predicted = predict_latency(model, tree).total_ms
            flat = to_tflite(model)
            first, *again = [measure_latency([flat])[0] for _ in range(FLAGS.rounds)]
            error = predicted / first.min_ms - 1
            errors.append(error)
            floor += [abs(t.min_ms / first.min_ms - 1) for t in again]
            rows.append(
                [
                    name + variant,
                    f"{model.count_params():,}",
                    f"{predicted:.3f}",
                    f"{first.min_ms:.3f}",
                    f"{first.median_ms:.3f}",
                    f"{100 * first.spread:.1f}%",
                    f"{100 * error:+.1f}%",
                ]
            )
    errors = np.abs(errors)
    body = "\n".join(
        [
            "## Stock keras.applications and everyday patterns (`benchmarks/applications.py`)",
            "",
            f"{environment()}. Tree: `{FLAGS.tree}`. Every model predicted with the tree and",
            "measured (LiteRT, XNNPack, 1 thread; the minimum over invokes, which the tree",
            "predicts, and the median with its IQR spread); `thinned`: about half of every",
            "gate group's channels closed at random, then stripped.",
            "",
            table(
                ["model", "params", "predicted ms", "min ms", "median ms", "spread", "error"],
                rows,
            ),
            "",
            f"{len(errors)} models: MAPE {100 * errors.mean():.1f}%, within 10% "
            f"{100 * np.mean(errors <= 0.10):.0f}%, within 5% {100 * np.mean(errors <= 0.05):.0f}%;"
            f" noise floor (the same models measured again, minimum): median "
            f"{100 * np.median(floor):.1f}%, max {100 * np.max(floor):.1f}%.",
        ]
    )
    write_section("applications", body)
    print(body)


if __name__ == "__main__":
    app.run(main)
