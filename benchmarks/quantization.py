"""fp32 vs int8 post-training quantization (PTQ) vs int8 quantization-aware training (QAT)
of models compressed by the project.

On MNIST (LeNet-5), UCI HAR (DeepSense-style Conv1D + GRU, and the same without the GRU) and
CIFAR-10 (VGG-style CNN), a teacher is trained, compressed to --target_speedup (predicted on
--tree) and stripped by `fdi_keras.compress.compress`; the compressed model is then exported in
fp32, int8 PTQ and int8 QAT. Reported: test accuracy, flatbuffer size, measured latency
(LiteRT XNNPack, 1 thread, batch 1, every variant of a model timed side by side in one
interleaved run) and the predicted latency (fp32 tree for fp32, --int8_tree for the int8
variants), written to the "quantization" section of benchmarks/RESULTS.md. With --int8_tree,
the teacher is also compressed steered by the int8 tree (to the same speedup of its int8
prediction) and quantized: the model a user deploying int8 would steer for, timed with the rest.

python benchmarks/quantization.py --tree=profiles/this_cpu/timing_tree.json \
    --int8_tree=profiles/this_cpu_int8/timing_tree.json    # about 20 minutes on 2 cores
python benchmarks/quantization.py --quick ...     # a few minutes; writes nothing unless --write
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version

import keras
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import environment, table, write_section  # noqa: E402
from examples import models  # noqa: E402
from fdi_keras import TimingTree, datasets, predict_latency, qat  # noqa: E402
from fdi_keras.compress import CosineAnnealing, compress  # noqa: E402
from fdi_keras.errors import MissingKindError, UnsupportedLayerError  # noqa: E402
from fdi_keras.export import measure_latency, to_tflite  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["mnist", "har", "cifar10"], "Datasets to run.")
flags.DEFINE_string("data_dir", None, "Folder with mnist.npz, uci_har.npz, cifar10.npz.")
flags.DEFINE_bool("quick", False, "4,000 training and 500 test samples, one epoch each.")
flags.DEFINE_bool("write", None, "Write RESULTS.md (default: yes, unless --quick).")
flags.DEFINE_float("qat_lr", 1e-4, "Initial Adam learning rate of the QAT fine-tuning.")
flags.DEFINE_integer("calibration", 200, "Training samples that calibrate int8 conversion.")
flags.DEFINE_string(
    "tree", "profiles/this_cpu/timing_tree.json", "This CPU's fp32 tree: steers compression."
)
flags.DEFINE_float("target_speedup", 2.0, "Predicted speedup asked of compression.")
flags.DEFINE_string(
    "int8_tree", None, "A timing tree profiled with --dtype=int8: predict the int8 variants too."
)

L = keras.layers
NO_TREE = "int8 tree prediction: not available (no int8 profile on this machine in this run)"
STEERED = "int8 PTQ, steered by the int8 tree"


def har_conv_only(widths=(16, 16, 16), classes=6) -> keras.Model:
    """The DeepSense-style HAR model with global average pooling in place of the GRU."""
    return models.deepsense_har(widths, units=None, classes=classes, name="har_conv_only")


# name: (loader, teacher builder, training samples, teacher epochs, compression epochs,
# fine-tuning epochs after strip, QAT epochs); the teachers are benchmarks/compressors.py's and
# the training sets are cut to keep the whole run near 25 minutes on 2 cores.
CASES = {
    "mnist": [(datasets.mnist, models.lenet5, None, 3, 2, 1, 1)],
    "har": [
        (datasets.uci_har, models.deepsense_har, None, 10, 6, 2, 2),
        (datasets.uci_har, lambda: har_conv_only((64, 64, 64)), None, 10, 6, 2, 2),
    ],
    "cifar10": [
        (datasets.cifar10, lambda: models.cifar_cnn((32, 32, 64, 64, 128)), 20000, 6, 3, 1, 1)
    ],
}


# Post-training conversion runs in a subprocess: the converter's calibrator has crashed the
# whole process (SIGSEGV) on the GRU model here, which must be reported, not end the run.
_PTQ = """
import sys, keras, numpy as np
from fdi_keras.export import to_tflite
to_tflite(keras.models.load_model(sys.argv[1]), sys.argv[3], "int8", np.load(sys.argv[2]))
"""


def post_training_int8(model: keras.Model, calibration: np.ndarray) -> bytes:
    with tempfile.TemporaryDirectory() as work:
        paths = [os.path.join(work, f) for f in ("model.keras", "calibration.npy", "int8.tflite")]
        model.save(paths[0])
        np.save(paths[1], calibration)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
        done = subprocess.run(
            [sys.executable, "-c", _PTQ, *paths], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            crash = f"crashed with signal {-done.returncode}" if done.returncode < 0 else last
            raise RuntimeError(f"the post-training int8 conversion failed: {crash}")
        with open(paths[2], "rb") as f:
            return f.read()


def accuracy(predictions: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(predictions.argmax(-1) == y))


def first_line(e: Exception, limit: int = 160) -> str:
    text = f"{type(e).__name__}: " + next((s for s in str(e).splitlines() if s.strip()), "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def finetune_optimizer(samples: int, epochs: int) -> keras.optimizers.Optimizer:
    """Adam from --qat_lr annealed to 0 along a cosine (rebuilt as such in tf_keras for QAT)."""
    steps = epochs * -(-samples // 64)
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(FLAGS.qat_lr, steps))


def control(model, x, y, x_test, y_test, epochs: int) -> list:
    """fp32 fine-tuned like QAT (same epochs, optimizer, learning rate), without quantization:
    separates what quantization costs from what the extra training gains."""
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    twin.compile(finetune_optimizer(len(x), epochs), "sparse_categorical_crossentropy")
    twin.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    acc = accuracy(twin.predict(x_test, batch_size=256, verbose=0), y_test)
    note = f"control: +{epochs} fp32 epochs like QAT's; timing as fp32"
    return ["fp32 + QAT's epochs", f"{100 * acc:.2f}%", "-", "-", "-", "-", note]


def compressed(teacher, x, y, x_test, y_test, epochs, finetune_epochs) -> tuple:
    """The teacher compressed to --target_speedup (predicted) and stripped; its description."""
    tree = TimingTree.load(FLAGS.tree)
    before = predict_latency(teacher, tree).total_ms
    keras.utils.set_random_seed(0)  # the int8-steered model's too
    result = compress(teacher, tree, x, y, before / FLAGS.target_speedup, epochs, finetune_epochs)
    teacher_acc = accuracy(teacher.predict(x_test, batch_size=256, verbose=0), y_test)
    note = (
        f"teacher {teacher.count_params()} parameters, {100 * teacher_acc:.2f}%, predicted "
        f"{before:.3f} ms; compressed ({epochs} + {finetune_epochs} fine-tuning epochs, "
        f"{result.seconds:.0f} s) to predicted {result.predicted_ms_after:.3f} ms "
        f"({before / result.predicted_ms_after:.2f}x)"
    )
    return result.model, tree, note


def int8_steered(teacher, x, y, epochs, finetune_epochs, calibration) -> tuple:
    """What a user deploying int8 would rather do: compress the teacher steered by the int8
    tree, to --target_speedup of its int8 prediction (same seed, epochs and recipe as the
    fp32-steered model), then quantize it post-training. (flatbuffer or None, model or None,
    note)."""
    tree = TimingTree.load(FLAGS.int8_tree)
    try:
        before = predict_latency(teacher, tree).total_ms
    except MissingKindError as e:  # e.g. no int8 GRU profile: no int8 GRU kernel converts here
        return None, None, f"miss: {str(e).split(';')[0]}"
    keras.utils.set_random_seed(0)
    result = compress(teacher, tree, x, y, before / FLAGS.target_speedup, epochs, finetune_epochs)
    note = (
        f"compressed like the fp32 row's model, steered by the int8 tree: predicted {before:.3f}"
        f" -> {result.predicted_ms_after:.3f} ms int8 ({before / result.predicted_ms_after:.2f}"
        f"x), {result.model.count_params()} parameters; then PTQ"
    )
    try:
        return post_training_int8(result.model, calibration), result.model, note
    except RuntimeError as e:
        return None, None, f"miss: {first_line(e)}"


def run_case(
    loader, build, samples, epochs, compress_epochs, finetune_epochs, qat_epochs
) -> tuple[str, list[list]]:
    (x, y), (x_test, y_test) = loader(FLAGS.data_dir, download=False)
    x, y = x[:samples], y[:samples]  # the loaders shuffle CIFAR-10's class-grouped rows
    if FLAGS.quick:
        test = np.random.default_rng(0).choice(len(y_test), 500, replace=False)  # mixed classes
        x, y, x_test, y_test = x[:4000], y[:4000], x_test[test], y_test[test]
        epochs = compress_epochs = finetune_epochs = qat_epochs = 1
    keras.utils.set_random_seed(0)
    teacher = build()
    start = time.time()
    teacher.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    teacher.fit(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=[CosineAnnealing()])
    train_s = time.time() - start
    model, tree, how = compressed(teacher, x, y, x_test, y_test, compress_epochs, finetune_epochs)
    calibration = x[np.random.default_rng(0).choice(len(x), FLAGS.calibration, replace=False)]
    variants = {"fp32": (to_tflite(model), f"teacher trained {epochs} epochs, {train_s:.0f} s")}
    start = time.time()
    try:
        ptq = post_training_int8(model, calibration)
        variants["int8 PTQ"] = (ptq, f"{time.time() - start:.0f} s to convert (subprocess)")
    except Exception as e:  # the converter raises several types; reported as a miss
        variants["int8 PTQ"] = (None, f"miss: {first_line(e)}")
    start = time.time()
    try:
        flatbuffer = qat.quantize_aware_tflite(
            model,
            x,
            y,
            optimizer=finetune_optimizer(len(x), qat_epochs),
            epochs=qat_epochs,
            batch_size=64,
            representative_samples=FLAGS.calibration,
        )
        seconds = time.time() - start
        variants["int8 QAT"] = (flatbuffer, f"+{qat_epochs} QAT epochs, {seconds:.0f} s in all")
    except (UnsupportedLayerError, ValueError) as e:
        variants["int8 QAT"] = (None, f"miss: {first_line(e, 400)}")
    predicted = dict.fromkeys(variants, predictions_ms(model, tree))  # one model, until STEERED
    if FLAGS.int8_tree:
        flatbuffer, steered, note = int8_steered(
            teacher, x, y, compress_epochs, finetune_epochs, calibration
        )
        variants[STEERED] = (flatbuffer, note)
        predicted[STEERED] = predictions_ms(steered, tree) if steered else ("-", "-")
    built = {k: v for k, v in variants.items() if v[0] is not None}
    timings = dict(zip(built, measure_latency([v[0] for v in built.values()], threads=1)))
    rows = []
    for name, (flatbuffer, note) in variants.items():
        if flatbuffer is None:
            rows.append([name, "-", "-", "-", "-", "-", note])
            continue
        predictions = (
            model.predict(x_test, batch_size=256, verbose=0)
            if name == "fp32"
            else qat.predict_tflite(flatbuffer, x_test)
        )
        t = timings[name]
        rows.append(
            [
                name,
                f"{100 * accuracy(predictions, y_test):.2f}%",
                f"{len(flatbuffer) / 1024:.1f}",
                f"{t.min_ms:.3f}",
                f"{t.median_ms:.3f} ({100 * t.spread:.1f}%)",
                predicted[name][name == "fp32"],
                note,
            ]
        )
        print(model.name, rows[-1], flush=True)
    rows.append(control(model, x, y, x_test, y_test, qat_epochs))
    params = model.count_params()
    title = (
        f"{model.name}, compressed: {params} parameters, {len(x)} training / "
        f"{len(x_test)} test samples"
    )
    return title, how, rows


def predictions_ms(model: keras.Model, tree: TimingTree) -> tuple[str, str]:
    """(int8 prediction, fp32 prediction) as table cells, minima like the measured column."""
    fp32 = f"{predict_latency(model, tree).total_ms:.3f}"
    if not FLAGS.int8_tree:
        return "-", fp32
    try:
        return f"{predict_latency(model, TimingTree.load(FLAGS.int8_tree)).total_ms:.3f}", fp32
    except MissingKindError as e:  # e.g. no int8 GRU profile: no int8 GRU kernel converts here
        return f"- ({str(e).split(';')[0]})", fp32


def report(results: list[tuple[str, str, list[list]]], wall_s: float) -> str:
    header = [
        "variant",
        "test accuracy",
        "KB",
        "measured ms (min)",
        "median ms (spread)",
        "predicted ms (min)",
        "notes",
    ]
    lines = [
        "## Quantization: fp32 vs int8 PTQ vs int8 QAT (`benchmarks/quantization.py`)",
        "",
        f"Run: {environment()}; tf_keras {version('tf_keras')}, "
        f"tensorflow-model-optimization {version('tensorflow-model-optimization')}"
        f"{' (--quick)' if FLAGS.quick else ''}. LiteRT XNNPack, 1 thread, batch 1; the "
        "variants of each model timed side by side in one interleaved run. PTQ: "
        "`fdi_keras.export.to_tflite(model, quantize='int8', representative_data=...)`; QAT: "
        f"`fdi_keras.qat.quantize_aware_tflite` (Adam, cosine decay from {FLAGS.qat_lr:g}, batch "
        f"64), both calibrated on {FLAGS.calibration} training samples, float input/output "
        "(int8 inside). fp32 training: Adam 1e-3 annealed to 0 along a cosine "
        "(`fdi_keras.compress.CosineAnnealing`). Control row: the fp32 model fine-tuned exactly "
        "as QAT fine-tunes, without quantization, to separate the extra training from the "
        "quantization. Each model is a teacher compressed by `fdi_keras.compress.compress` to "
        f"{FLAGS.target_speedup:g}x predicted speed on {FLAGS.tree} (the fp32 tree, which "
        f"also predicts the fp32 row) and stripped. With an int8 tree, the row `{STEERED}` is "
        "the same teacher compressed by the same recipe and seed, steered by the int8 tree to "
        "the same speedup of its int8 prediction: whether steering with the deployed numeric "
        f"type's staircase buys a faster int8 model. Wall: {wall_s:.0f} s.",
        "",
        f"int8 rows predicted by {FLAGS.int8_tree}." if FLAGS.int8_tree else f"{NO_TREE}.",
    ]
    for title, how, rows in results:
        lines += ["", f"### {title}", "", f"{how}.", "", table(header, rows)]
    return "\n".join(lines)


def main(argv):
    del argv
    start = time.time()
    results = []
    for name in FLAGS.datasets:
        for case in CASES[name]:
            results.append(run_case(*case))
    text = report(results, time.time() - start)
    print(text)
    if FLAGS.write if FLAGS.write is not None else not FLAGS.quick:
        write_section("quantization", text)


if __name__ == "__main__":
    app.run(main)
