"""What every example does: train the dense model, compress it to a target, strip, export,
measure it next to the dense model, and print accuracy with predicted and measured latency."""

from __future__ import annotations

import contextlib
import io
import os

import keras
import numpy as np

import fdi_keras
from fdi_keras.compress import compress
from fdi_keras.export import measure_latency, to_tflite


def load_tree(path: str) -> fdi_keras.TimingTree:
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No timing tree at {path}. Profile this CPU first: `make profile` "
            "(or tools/profile_device.py --out_dir=...), then pass --tree."
        )
    return fdi_keras.TimingTree.load(path)


def train(model, x, y, epochs, batch_size=64, lr=1e-3):
    model.compile(
        keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=2)
    return model


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=256), -1) == y))


def run(
    model,
    data,
    tree_path,
    target_speedup,
    epochs,
    compress_epochs,
    finetune_epochs,
    out_dir,
    batch_size=64,
):
    (x, y), (x_test, y_test) = data
    tree = load_tree(tree_path)
    dense = train(model, x, y, epochs, batch_size)
    dense_pred = fdi_keras.predict_latency(dense, tree).total_ms
    result = compress(
        dense,
        tree,
        x,
        y,
        dense_pred / target_speedup,
        epochs=compress_epochs,
        finetune_epochs=finetune_epochs,
        batch_size=batch_size,
        verbose=1,
    )
    small = result.model
    os.makedirs(out_dir, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):
        tflites = [
            to_tflite(m, os.path.join(out_dir, f"{name}.tflite"))
            for m, name in ((dense, "dense"), (small, "compressed"))
        ]
    small.save(os.path.join(out_dir, "compressed.keras"))
    t_dense, t_small = measure_latency(tflites, rounds=15)
    acc_dense, acc_small = accuracy(dense, x_test, y_test), accuracy(small, x_test, y_test)
    print(fdi_keras.predict_latency(small, tree))
    print(f"\n{'':<12}{'accuracy':>10}{'predicted ms':>14}{'measured ms':>13}{'median ms':>11}")
    for name, acc, pred, t in (
        ("dense", acc_dense, dense_pred, t_dense),
        ("compressed", acc_small, result.predicted_ms_after, t_small),
    ):
        print(f"{name:<12}{acc:>10.4f}{pred:>14.3f}{t.min_ms:>13.3f}{t.median_ms:>11.3f}")
    print(
        f"speedup: predicted {dense_pred / result.predicted_ms_after:.2f}x, measured "
        f"{t_dense.min_ms / t_small.min_ms:.2f}x; "
        f"accuracy {100 * (acc_small - acc_dense):+.2f} pp"
    )
    for h in result.strip_history:
        print(f"  {h['layer']}: {h['channels']} -> {h['kept']} channels")
    return result


def define_flags(
    dataset_file: str, out_dir: str, epochs: int, compress_epochs: int, finetune_epochs: int
) -> None:
    """The flags every example takes, with that example's defaults."""
    from absl import flags

    flags.DEFINE_string(
        "data_dir",
        None,
        f"Folder holding {dataset_file} (default: $FDI_DATA, ../shared/data, then download).",
    )
    flags.DEFINE_string("tree", "profiles/this_cpu/timing_tree.json", "This CPU's timing tree.")
    flags.DEFINE_float("target_speedup", 3.0, "Target predicted speedup over the dense model.")
    flags.DEFINE_integer("epochs", epochs, "Epochs of dense training.")
    flags.DEFINE_integer("compress_epochs", compress_epochs, "Epochs of latency-aware training.")
    flags.DEFINE_integer("finetune_epochs", finetune_epochs, "Epochs of fine-tuning after strip.")
    flags.DEFINE_string("out_dir", out_dir, "Where models are written.")


def run_from_flags(model, load) -> None:
    from absl import flags

    f = flags.FLAGS
    try:
        data = load(f.data_dir)
    except FileNotFoundError as e:  # the message says where to put the file; no traceback
        raise SystemExit(f"error: {e}") from None
    run(
        model,
        data,
        f.tree,
        f.target_speedup,
        f.epochs,
        f.compress_epochs,
        f.finetune_epochs,
        f.out_dir,
    )
