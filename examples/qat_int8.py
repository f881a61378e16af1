"""A small model to a full-int8 TFLite model: train, (compress and strip,) QAT, convert, measure.

python examples/qat_int8.py --dataset=mnist
python examples/qat_int8.py --dataset=mnist --tree=profiles/this_cpu/timing_tree.json

With --tree the trained model is first compressed to --target_speedup (predicted on that tree)
and stripped by `fdi_keras.compress.compress`, and its latency is also predicted; --int8_tree
(profiled with `tools/profile_device.py --dtype=int8`) predicts the int8 model. Then
`fdi_keras.qat.quantize_aware_tflite` fine-tunes it with simulated int8 quantization and
converts it; the fp32 model and its post-training int8 conversion are measured next to it.
Needs the qat extra: `pip install fdi_keras[qat]`. Datasets: MNIST (LeCun et al., 1998), UCI
HAR (Anguita et al., 2013; the HAR model here has no GRU, which tfmot cannot quantize) and
CIFAR-10 (Krizhevsky, 2009); see fdi_keras/datasets.py for where the originals come from.
"""

from __future__ import annotations

import os
import sys

import keras
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fdi_keras  # noqa: E402
from examples import models  # noqa: E402
from fdi_keras import datasets, qat  # noqa: E402
from fdi_keras.export import measure_latency, to_tflite  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "mnist", ["mnist", "har", "cifar10"], "Dataset and model.")
flags.DEFINE_string("data_dir", None, "Folder with the dataset's .npz (default: $FDI_DATA...).")
flags.DEFINE_string("tree", None, "This CPU's timing tree: compress first and predict latency.")
flags.DEFINE_string("int8_tree", None, "A timing tree profiled with --dtype=int8: predict int8.")
flags.DEFINE_float("target_speedup", 2.0, "Predicted speedup asked of compression (--tree).")
flags.DEFINE_integer("epochs", 2, "Epochs of fp32 training.")
flags.DEFINE_integer("compress_epochs", 3, "Epochs of latency-aware training (--tree).")
flags.DEFINE_integer("finetune_epochs", 1, "Epochs of fine-tuning after strip (--tree).")
flags.DEFINE_integer("qat_epochs", 1, "Epochs of quantization-aware fine-tuning.")
flags.DEFINE_float("qat_lr", 1e-4, "Adam learning rate of the quantization-aware fine-tuning.")
flags.DEFINE_enum("io_dtype", "float32", list(qat.IO_DTYPES), "The int8 model's input/output.")
flags.DEFINE_integer("max_train", None, "Use at most this many training samples.")
flags.DEFINE_string("out_dir", "examples/out/qat_int8", "Where the .tflite files are written.")


def har_model() -> keras.Model:
    x = keras.Input((128, 9))
    h = x
    for i, w in enumerate((32, 32, 32)):
        h = keras.layers.Conv1D(w, 5, padding="same", use_bias=False)(h)
        h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
        if i < 2:
            h = keras.layers.MaxPooling1D(2)(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(x, keras.layers.Dense(6, activation="softmax")(h), name="har_conv")


MODELS = {
    "mnist": (datasets.mnist, lambda: models.lenet5((10, 20, 256, 84))),
    "har": (datasets.uci_har, har_model),
    "cifar10": (datasets.cifar10, lambda: models.cifar_cnn((16, 24, 32, 48, 64))),
}


def compressed(model, tree_path, x, y, target_speedup, epochs, finetune_epochs):
    from fdi_keras.compress import compress

    tree = fdi_keras.TimingTree.load(tree_path)
    target = fdi_keras.predict_latency(model, tree).total_ms / target_speedup
    result = compress(model, tree, x, y, target, epochs=epochs, finetune_epochs=finetune_epochs)
    print(
        f"compressed and stripped: predicted {result.predicted_ms_before:.3f} -> "
        f"{result.predicted_ms_after:.3f} ms, {model.count_params()} -> "
        f"{result.model.count_params()} parameters"
    )
    return result.model, tree


def run(
    dataset="mnist",
    data_dir=None,
    tree_path=None,
    int8_tree_path=None,
    target_speedup=2.0,
    epochs=2,
    compress_epochs=3,
    finetune_epochs=1,
    qat_epochs=1,
    qat_lr=1e-4,
    io_dtype="float32",
    max_train=None,
    out_dir="examples/out/qat_int8",
) -> dict:
    """Trains, optionally compresses, quantizes both ways; returns {variant: (accuracy, Timing)}
    and prints the table."""
    load, build = MODELS[dataset]
    (x, y), (x_test, y_test) = load(data_dir)
    x, y = x[:max_train], y[:max_train]
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=2)
    tree = None
    if tree_path:
        model, tree = compressed(
            model, tree_path, x, y, target_speedup, compress_epochs, finetune_epochs
        )
    os.makedirs(out_dir, exist_ok=True)
    calibration = x[np.random.default_rng(0).choice(len(x), min(200, len(x)), replace=False)]
    flatbuffers = {
        "fp32": to_tflite(model, os.path.join(out_dir, "fp32.tflite")),
        "int8 PTQ": to_tflite(model, os.path.join(out_dir, "ptq_int8.tflite"), "int8", calibration),
        "int8 QAT": qat.quantize_aware_tflite(
            model,
            x,
            y,
            optimizer=keras.optimizers.Adam(qat_lr),
            epochs=qat_epochs,
            io_dtype=io_dtype,
            path=os.path.join(out_dir, "qat_int8.tflite"),
            verbose=2,
        ),
    }
    timings = measure_latency(list(flatbuffers.values()), threads=1)
    results = {}
    print(f"\n{'':<10}{'accuracy':>10}{'KB':>8}{'measured ms':>13}{'median ms':>11}")
    for (name, flatbuffer), t in zip(flatbuffers.items(), timings):
        predictions = qat.predict_tflite(flatbuffer, x_test)
        results[name] = (float(np.mean(predictions.argmax(-1) == y_test)), t)
        print(
            f"{name:<10}{results[name][0]:>10.4f}{len(flatbuffer) / 1024:>8.1f}"
            f"{t.min_ms:>13.3f}{t.median_ms:>11.3f}"
        )
    if tree is not None:
        predicted = fdi_keras.predict_latency(model, tree).total_ms
        print(f"predicted ({tree.dtype} tree): {predicted:.3f} ms")
    if int8_tree_path:
        int8_tree = fdi_keras.TimingTree.load(int8_tree_path)
        print(f"int8 tree predicts: {fdi_keras.predict_latency(model, int8_tree).total_ms:.3f} ms")
    else:
        print(
            "int8 tree prediction: not available (pass --int8_tree, a tree profiled with "
            "tools/profile_device.py --dtype=int8)"
        )
    print(f"written to {out_dir}/qat_int8.tflite")
    return results


def main(argv):
    del argv
    run(
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        tree_path=FLAGS.tree,
        int8_tree_path=FLAGS.int8_tree,
        target_speedup=FLAGS.target_speedup,
        epochs=FLAGS.epochs,
        compress_epochs=FLAGS.compress_epochs,
        finetune_epochs=FLAGS.finetune_epochs,
        qat_epochs=FLAGS.qat_epochs,
        qat_lr=FLAGS.qat_lr,
        io_dtype=FLAGS.io_dtype,
        max_train=FLAGS.max_train,
        out_dir=FLAGS.out_dir,
    )


if __name__ == "__main__":
    app.run(main)
