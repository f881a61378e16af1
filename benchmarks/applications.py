"""Stock keras.applications and everyday Keras patterns: predicted vs measured, and strip.

For every model (weights=None, small inputs as in tests/graph/test_zoo.py plus larger ones
where a family is usually deployed, MobileNetV2 and EfficientNetB0 at their stock 224 px, and
five families no test builds):
the minimum and the median `fdi_keras.predict_latency` predicts with this CPU's tree, each
next to the same statistic measured by `fdi_keras.export.measure_latency` (LiteRT, XNNPack,
float32, with the tree's thread count), and the prediction without
the composition term (the sum of single-kernel times: the ablation); then the same with about
half of every gate group's channels closed at random and stripped (a thinned variant). None
of these models, nor any of their layers' exact shapes by design, was used to fit the tree.
The noise floor is the same models measured a second time in the same run. Every round is
timed beside the profiler's calibration kernel, and retaken while that kernel runs more than
2% off its median over the tree's profile: on this shared VM a slow spell once left
MobileNetV2 stored 14% slow (the calibration kernel 9% slow beside it), which read as a
prediction error.

With `--alone=ResNet50,...` the listed models' kernels are also timed one by one with the
profiler's protocol (resumable, kept under benchmarks/out/applications/alone): that splits a
model's error into the trees' (their sum against the kernels measured alone) and the
composition's (the model measured whole against its kernels measured alone). It times the
kernels fdi_keras maps the layers to, so it cannot see a wrong mapping: ConvNeXt's grouped 7x7
convolutions, once mapped to convs of one input channel, agreed with the tree alone.

    python benchmarks/applications.py --tree=profiles/this_cpu/timing_tree.json   # ~20 min

The tree must hold every kind the zoo needs (`make profile` profiles them); a tree profiled
with `--threads=2` is checked against the zoo measured with 2 threads, an int8 tree
(`--dtype=int8`) against the zoo converted with full-integer post-training quantization (float
input and output, as `to_tflite(quantize="int8")` gives a user), without the recurrent models,
which TensorFlow's int8 calibrator cannot convert.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "graph")]  # the zoo the tests run on

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from zoo import ZOO, close_random_channels  # noqa: E402

from benchmarks.common import (  # noqa: E402
    SAME_SPEED,
    calibration_model,
    environment,
    table,
    write_section,
)
from fdi_keras import TimingTree, latency_aware, predict_latency, strip  # noqa: E402
from fdi_keras.conversion import QUANTIZE_FOR_DTYPE  # noqa: E402
from fdi_keras.errors import UnsupportedLayerError  # noqa: E402
from fdi_keras.export import measure_latency, to_tflite  # noqa: E402
from fdi_keras.features import weight_bytes  # noqa: E402
from fdi_keras.kernels import model_kernels  # noqa: E402
from fdi_keras.profiling import LocalRunner, read_rows, run_profile  # noqa: E402
from fdi_keras.profiling.runners import cpu_model  # noqa: E402
from fdi_keras.profiling.store import ProfileStore  # noqa: E402
from fdi_keras.profiling.timer import Timing  # noqa: E402
from fdi_keras.timing.tree import calibration_reference, rows_to_dataset  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("tree", "profiles/this_cpu/timing_tree.json", "This CPU's timing tree.")
flags.DEFINE_list("models", [], "Names to run (default: all of ZOO and LARGER).")
flags.DEFINE_integer("rounds", 2, "Measurements of every model (2: the second is the noise floor).")
flags.DEFINE_list("alone", [], "Models (and 'X thinned') whose kernels are also timed alone.")
flags.DEFINE_bool(
    "write", True, "Replace this setup's RESULTS.md section (--nowrite: print only, e.g. a subset)."
)
flags.DEFINE_string(
    "measurements",
    os.path.join(ROOT, "benchmarks", "out", "applications", "measurements.jsonl"),
    "Where every model's timings are kept, per CPU: a rerun with another tree measures only "
    "the models this CPU has no timings of.",
)

# Measurements of a round while the calibration kernel runs more than SAME_SPEED off its
# profiled time, RETRY_PAUSE_S apart; the closest to the profiled speed is kept.
ATTEMPTS = 5
RETRY_PAUSE_S = 30
A = keras.applications
# Where a family is usually deployed: larger inputs than the tests' (1 thread, this CPU).
LARGER = {
    "MobileNet_a0.5_128": lambda: A.MobileNet((128, 128, 3), alpha=0.5, weights=None),
    "MobileNetV2_a0.5_128": lambda: A.MobileNetV2((128, 128, 3), alpha=0.5, weights=None),
    "MobileNetV3Small_128": lambda: A.MobileNetV3Small((128, 128, 3), weights=None),
    "EfficientNetB0_128": lambda: A.EfficientNetB0(weights=None, input_shape=(128, 128, 3)),
    "ResNet50_64": lambda: A.ResNet50(weights=None, input_shape=(64, 64, 3)),
    # What a newcomer tries first: the stock models at their default 224 px.
    "MobileNetV2_224": lambda: A.MobileNetV2(weights=None),
    "EfficientNetB0_224": lambda: A.EfficientNetB0(weights=None),
    # Families no test or earlier benchmark builds: nothing was tuned on them.
    "ResNet101V2_32": lambda: A.ResNet101V2(weights=None, input_shape=(32, 32, 3)),
    "DenseNet169_32": lambda: A.DenseNet169(weights=None, input_shape=(32, 32, 3)),
    "EfficientNetB1_64": lambda: A.EfficientNetB1(weights=None, input_shape=(64, 64, 3)),
    "ConvNeXtSmall_32": lambda: A.ConvNeXtSmall(weights=None, input_shape=(32, 32, 3)),
    "VGG19_32": lambda: A.VGG19(weights=None, input_shape=(32, 32, 3)),
}


def thinned(model, seed=0):
    """`model` with about half of every gate group's channels removed at random (stripped)."""
    gated = latency_aware(model)
    close_random_channels(gated, seed)
    return strip(gated)


class Machine(NamedTuple):
    """The profiler's calibration kernel as a flatbuffer, and its median time (us) over the
    profile the tree was fitted on: timed beside every model, it says whether the shared
    machine ran at its profiled speed."""

    calibration: bytes
    reference_us: float

    def change(self, calibration_us: float) -> float:
        return calibration_us / self.reference_us - 1

    def off_speed(self, calibration_us: float) -> bool:
        """Whether a round ran more than SAME_SPEED off the profiled speed (never, when the
        profile has no calibration times to compare with: nothing to retake for)."""
        return (
            bool(np.isfinite(self.reference_us)) and abs(self.change(calibration_us)) > SAME_SPEED
        )


def measured(store, key, model, machine, threads=1, dtype="float32"):
    """[first, *again] timings of the model `key` on this CPU with `threads` interpreter
    threads, converted for `dtype` kernels, and the calibration kernel's time (us) beside the
    first: from `store` when this CPU timed it before, else `model` converted, measured
    FLAGS.rounds times and appended to it. Each round is timed side by side with the
    calibration kernel and retaken (up to ATTEMPTS times) while that runs more than
    SAME_SPEED off its profiled time: on a shared VM a slow hour is not the model's time
    (one model was once stored 16% slow, against 0.5% between its rounds)."""
    key = (
        f"{cpu_model()}|{FLAGS.rounds} rounds, calibrated|{key}"
        + (f"|{threads} threads" if threads > 1 else "")
        + ("" if dtype == "float32" else f"|{dtype}")
    )
    if key not in store.done:
        flat = to_tflite(model, quantize=QUANTIZE_FOR_DTYPE[dtype])
        timings, calibration_us = [], []
        for _ in range(FLAGS.rounds):
            tries = []
            for attempt in range(ATTEMPTS):
                if attempt:
                    time.sleep(RETRY_PAUSE_S)
                tries.append(measure_latency([flat, machine.calibration], threads=threads))
                if not machine.off_speed(tries[-1][1].min_us):
                    break
            model_timing, calibration = min(tries, key=lambda t: abs(machine.change(t[1].min_us)))
            timings.append(dataclasses.asdict(model_timing))
            calibration_us.append(calibration.min_us)
        store.append([{"key": key, "timings": timings, "calibration_us": calibration_us}])
    row = next(r for r in store.rows if r["key"] == key)
    return [Timing(**t) for t in row["timings"]], row["calibration_us"][0]


def main(argv):
    del argv
    tree = TimingTree.load(FLAGS.tree)
    threads, dtype = tree.threads, tree.dtype  # measured as the tree was profiled
    ablation = TimingTree.from_dict({**tree.to_dict(), "composition": {}})
    profile = read_rows(os.path.join(os.path.dirname(FLAGS.tree), "profile.jsonl"))
    machine = Machine(calibration_model(dtype), calibration_reference(profile))
    builders = {**ZOO, **LARGER}
    names = FLAGS.models or list(builders)
    unknown = sorted(set(names) - set(builders))
    if unknown:  # every model is run with its thinned variant: name the base model only
        raise app.UsageError(f"Unknown --models {unknown}. Known: {sorted(builders)}")
    os.makedirs(os.path.dirname(FLAGS.measurements), exist_ok=True)
    store = ProfileStore(FLAGS.measurements)
    rows, errors, errors_median, errors_sum, floor, floor_median = [], [], [], [], [], []
    speed = []  # per model: its calibration kernel's time against the profile's
    skipped = {}
    for name in tqdm(names, desc="zoo"):
        base = builders[name]()
        for variant, model in (("", base), (" thinned", thinned(base))):
            try:
                timings, calibration_us = measured(
                    store, name + variant, model, machine, threads, dtype
                )
                first, *again = timings
            except Exception as e:  # noqa: BLE001 - int8: listed with the reason, not fatal
                if dtype == "float32":
                    raise
                reason = str(e).split(":")[0] if isinstance(e, UnsupportedLayerError) else e
                skipped[name + variant] = f"{reason}"[:160]
                break
            predicted = predict_latency(model, tree).total_ms
            predicted_median = predict_latency(model, tree, "median").total_ms
            predicted_sum = predict_latency(model, ablation).total_ms
            error = predicted / first.min_ms - 1
            errors.append(error)
            errors_median.append(predicted_median / first.median_ms - 1)
            errors_sum.append(predicted_sum / first.min_ms - 1)
            floor += [abs(t.min_ms / first.min_ms - 1) for t in again]
            floor_median += [abs(t.median_ms / first.median_ms - 1) for t in again]
            speed.append(machine.change(calibration_us))
            rows.append(
                [
                    name + variant,
                    f"{model.count_params():,}",
                    f"{first.min_ms:.3f}",
                    f"{predicted:.3f}",
                    f"{100 * error:+.1f}%",
                    f"{100 * errors_sum[-1]:+.1f}%",
                    f"{first.median_ms:.3f}",
                    f"{100 * first.spread:.1f}%",
                    f"{100 * errors_median[-1]:+.1f}%",
                    f"{100 * speed[-1]:+.1f}%",
                ]
            )
    signed_min, signed_median = np.mean(errors), np.mean(errors_median)
    errors, errors_median, errors_sum = map(np.abs, (errors, errors_median, errors_sum))
    body = "\n".join(
        [
            "## Stock keras.applications and everyday patterns (`benchmarks/applications.py`)"
            + ("" if threads == 1 else f", {threads} threads")
            + ("" if dtype == "float32" else f", {dtype}"),
            "",
            f"{environment()}. Tree: `{FLAGS.tree}`. Every model predicted with the tree and",
            f"measured (LiteRT, XNNPack, {dtype}, {threads} thread{'s' if threads > 1 else ''}, "
            "as the tree was profiled): the minimum over invokes and the median",
            "(with its IQR spread), each against its own prediction; `no composition`: the",
            "minimum predicted as the sum of single-kernel times (the ablation); `thinned`:",
            "about half of every gate group's channels closed at random, then stripped. The",
            "timings are this CPU's in the measurements file, taken once and reused by reruns",
            "with other trees. `machine`: the profiler's calibration kernel timed beside the",
            "model, against its median over the profile (a round more than "
            f"{100 * SAME_SPEED:.0f}% off is retaken, up",
            f"to {ATTEMPTS} times {RETRY_PAUSE_S} s apart).",
            "",
            table(
                [
                    "model",
                    "params",
                    "min ms",
                    "predicted",
                    "error",
                    "no composition",
                    "median ms",
                    "spread",
                    "error (median)",
                    "machine",
                ],
                rows,
            ),
            "",
            f"{len(errors)} models. Minimum: MAPE {100 * errors.mean():.1f}%, mean signed "
            f"{100 * signed_min:+.1f}%, within 10% {100 * np.mean(errors <= 0.10):.0f}%, within "
            f"5% {100 * np.mean(errors <= 0.05):.0f}%. Median: MAPE "
            f"{100 * errors_median.mean():.1f}%, mean signed {100 * signed_median:+.1f}%, within "
            f"10% {100 * np.mean(errors_median <= 0.10):.0f}%. Without the composition term: "
            f"MAPE {100 * errors_sum.mean():.1f}%, within 10% "
            f"{100 * np.mean(errors_sum <= 0.10):.0f}%. Noise floor (the same models measured "
            f"again): minimum median {100 * np.median(floor):.1f}% (max "
            f"{100 * np.max(floor):.1f}%), median median {100 * np.median(floor_median):.1f}% "
            f"(max {100 * np.max(floor_median):.1f}%). Machine speed: the calibration kernel "
            f"within {100 * SAME_SPEED:.0f}% of its profiled time for "
            f"{np.sum(np.abs(speed) <= SAME_SPEED)} of {len(speed)} models (worst "
            f"{100 * speed[int(np.argmax(np.abs(speed)))]:+.1f}%).",
        ]
        + (
            [
                "",
                f"Not converted to {dtype}: "
                + "; ".join(f"{name} ({why})" for name, why in skipped.items())
                + ".",
            ]
            if skipped
            else []
        )
    )
    if FLAGS.alone:
        body += "\n\n" + alone_table(tree, builders, store, machine)
    section = "applications" + ("" if threads == 1 else f"_{threads}_threads")
    if FLAGS.write:
        write_section(section + ("" if dtype == "float32" else f"_{dtype}"), body)
    print(body)


def alone_table(tree, builders, store, machine) -> str:
    """Each of FLAGS.alone's models against its kernels timed alone (see the docstring), with
    the interpreter threads and kernel dtype `tree` was profiled with."""
    threads, dtype = tree.threads, tree.dtype
    folder = "alone" + ("" if threads == 1 else f"_{threads}_threads")  # one setup per store
    folder += "" if dtype == "float32" else f"_{dtype}"
    out_dir = os.path.join(os.path.dirname(FLAGS.measurements), folder)
    models = {}
    for name in FLAGS.alone:
        base = builders[name.removesuffix(" thinned")]()
        models[name] = thinned(base) if name.endswith(" thinned") else base
    specs = {name: [tree.profiled(k.spec) for k in model_kernels(m)] for name, m in models.items()}
    unique = {s.key(): s for ss in specs.values() for s in ss}
    run_profile([LocalRunner()], list(unique.values()), out_dir)
    # At the profile's machine speed, as the trees predict and the whole models are measured.
    alone_rows = read_rows(os.path.join(out_dir, "profile.jsonl"))
    alone_data = rows_to_dataset(alone_rows, reference=machine.reference_us)
    alone = {
        s.key(): t for kind_specs, times in alone_data.values() for s, t in zip(kind_specs, times)
    }
    rows = []
    for name, ss in specs.items():
        whole = measured(store, name, models[name], machine, threads, dtype)[0][0].min_us
        kernels_alone = sum(alone[s.key()] for s in ss)
        trees = sum(tree.predict_one(s) for s in ss)
        rows.append(
            [
                name,
                len(ss),
                f"{weight_bytes(ss) / 1e6:.1f}",
                f"{whole / 1e3:.3f}",
                f"{kernels_alone / 1e3:.3f}",
                f"{whole / kernels_alone:.2f}",
                f"{100 * (trees / kernels_alone - 1):+.1f}%",
            ]
        )
    return "\n".join(
        [
            "### Where the error comes from: every kernel timed alone",
            "",
            "The model measured whole against the sum of its kernels measured alone (the",
            "profiler's protocol, at the profile's machine speed): what the composition term",
            "must supply; the trees' single-kernel sum against that same sum: their own error.",
            "",
            table(
                [
                    "model",
                    "kernels",
                    "weights MB",
                    "whole ms",
                    "kernels alone ms",
                    "whole / alone",
                    "trees vs alone",
                ],
                rows,
            ),
        ]
    )


if __name__ == "__main__":
    app.run(main)
