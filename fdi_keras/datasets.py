"""The real datasets of the examples, tests and benchmarks: MNIST, CIFAR-10 and UCI HAR.

Each dataset is an .npz with `x_train`, `y_train`, `x_test`, `y_test` (MNIST as in Keras's
mnist.npz, uint8 28x28; CIFAR-10 uint8 32x32x3 RGB; UCI HAR float32 (N, 128, 9)). It is looked
for, in order:

1. in `data_dir` (the `--data_dir` flag of the examples and benchmarks), then in the folder
   named by the `FDI_DATA` environment variable;
2. in `../shared/data` next to the repository (`<repo>/../shared/data`);
3. by the standard download, cached in ~/.keras/datasets: `keras.datasets.mnist.load_data()`,
   `keras.datasets.cifar10.load_data()`, and UCI HAR's official archive, whose raw Inertial
   Signals are parsed once into `uci_har.npz` in the same cache.

Originals: MNIST (LeCun et al., 1998); CIFAR-10 (Krizhevsky, 2009,
https://www.cs.toronto.edu/~kriz/cifar.html); UCI HAR "Human Activity Recognition Using
Smartphones" (Anguita et al., ESANN 2013, https://archive.ics.uci.edu/dataset/240, research
and non-commercial use). The `cifar10.npz` in `../shared/data` is a class-balanced subset of
30,000 training images rebuilt from a JPEG copy (lossy, about 30 dB PSNR to the originals); the
Keras download is the full 50,000 original training images. Both have the full 10,000-image
test set. Benchmark figures in RESULTS.md were computed on the shared subset.

Example:

    from fdi_keras import datasets
    (x, y), (x_test, y_test) = datasets.mnist()      # (60000, 28, 28, 1) float32 in [0, 1]
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np

FILES = {"mnist": "mnist.npz", "cifar10": "cifar10.npz", "uci_har": "uci_har.npz"}
SHARED_DATA_DIR = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
)
HAR_URL = (
    "https://archive.ics.uci.edu/static/public/240/human+activity+recognition+using+smartphones.zip"
)
# No checksum: this loader was written on a machine without network access, so the archive's
# hash could not be computed; keras.utils.get_file skips the check when file_hash is None.
HAR_HASH = None
HAR_CHANNELS = tuple(f"{s}_{a}" for s in ("body_acc", "body_gyro", "total_acc") for a in "xyz")
HAR_ACTIVITIES = (
    "WALKING",
    "WALKING_UPSTAIRS",
    "WALKING_DOWNSTAIRS",
    "SITTING",
    "STANDING",
    "LAYING",
)


def search_dirs(data_dir: str | None = None) -> list[str]:
    """The folders searched for the .npz files, in order: `data_dir`, `$FDI_DATA`, shared."""
    return [d for d in (data_dir, os.environ.get("FDI_DATA"), SHARED_DATA_DIR) if d]


def find(name: str, data_dir: str | None = None) -> str | None:
    """The path of dataset `name`'s .npz in the first folder of `search_dirs` holding it.

    Args:
        name: one of `FILES` ("mnist", "cifar10", "uci_har").
        data_dir: a folder searched before `$FDI_DATA` and `../shared/data`.

    Returns:
        The path, or None when no searched folder holds the file (nothing is downloaded).

    Raises:
        ValueError: for an unknown dataset name.
    """
    if name not in FILES:
        raise ValueError(f"Unknown dataset. Expected one of {sorted(FILES)}. Received: {name=}")
    for folder in search_dirs(data_dir):
        path = os.path.join(folder, FILES[name])
        if os.path.isfile(path):
            return path
    return None


def load_arrays(name: str, data_dir: str | None = None, download: bool = True) -> dict:
    """Dataset `name` as raw arrays `x_train`, `y_train`, `x_test`, `y_test` (labels 1-D).

    Args:
        name: one of `FILES` ("mnist", "cifar10", "uci_har").
        data_dir: a folder searched before `$FDI_DATA` and `../shared/data`.
        download: whether to fall back to the standard download when no folder holds the file.

    Returns:
        A dict of NumPy arrays, as stored (uint8 images, unscaled HAR signals).

    Raises:
        ValueError: for an unknown dataset name.
        FileNotFoundError: when the file is in no searched folder and `download` is False or
            the download failed; the message says where to put the file.
    """
    path = find(name, data_dir)
    if path is not None:
        with np.load(path) as d:
            return {k: d[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    if download:
        try:
            return _download(name)
        except Exception as e:  # keras.utils.get_file raises a bare Exception when offline
            raise FileNotFoundError(_not_found(name, data_dir, f"the download failed ({e})")) from e
    raise FileNotFoundError(_not_found(name, data_dir, "downloads are disabled"))


def mnist(data_dir: str | None = None, download: bool = True):
    """MNIST as `(x_train, y_train), (x_test, y_test)`: (N, 28, 28, 1) float32 in [0, 1], int64.

    Args:
        data_dir: a folder searched before `$FDI_DATA` and `../shared/data`.
        download: whether to fall back to `keras.datasets.mnist.load_data()`.
    """
    d = load_arrays("mnist", data_dir, download)
    scale = lambda x: (x[..., None] / 255.0).astype("float32")
    return (scale(d["x_train"]), d["y_train"].astype("int64")), (
        scale(d["x_test"]),
        d["y_test"].astype("int64"),
    )


def uci_har(data_dir: str | None = None, download: bool = True):
    """UCI HAR windows (N, 128, 9) float32, standardized with the training split's per-channel
    mean and deviation, and activity labels 0..5 (int64).

    Args:
        data_dir: a folder searched before `$FDI_DATA` and `../shared/data`.
        download: whether to fall back to the official archive (about 60 MB).
    """
    d = load_arrays("uci_har", data_dir, download)
    mean, std = d["x_train"].mean(axis=(0, 1)), d["x_train"].std(axis=(0, 1))
    norm = lambda x: ((x - mean) / std).astype("float32")
    return (norm(d["x_train"]), d["y_train"].astype("int64")), (
        norm(d["x_test"]),
        d["y_test"].astype("int64"),
    )


def cifar10(data_dir: str | None = None, seed: int = 0, download: bool = True):
    """CIFAR-10 (N, 32, 32, 3) float32 in [0, 1] and int64 labels, training rows shuffled.

    The shared `cifar10.npz` holds 30,000 training images rebuilt from JPEG and grouped by
    class; `keras.datasets.cifar10` (the download) holds the 50,000 originals. Either way the
    training rows are permuted with `seed`, so that any slice of them mixes the classes.

    Args:
        data_dir: a folder searched before `$FDI_DATA` and `../shared/data`.
        seed: the seed of the training rows' permutation.
        download: whether to fall back to `keras.datasets.cifar10.load_data()` (170 MB).
    """
    d = load_arrays("cifar10", data_dir, download)
    order = np.random.default_rng(seed).permutation(len(d["y_train"]))
    scale = lambda x: (x / 255.0).astype("float32")
    return (scale(d["x_train"][order]), d["y_train"][order].astype("int64")), (
        scale(d["x_test"]),
        d["y_test"].astype("int64"),
    )


def load_npz(path: str, input_shape) -> tuple:
    """A tool's `--data` file: `(x, y), (x_test, y_test)` reshaped to a model's input shape.

    Args:
        path: an .npz with `x_train`, `y_train`, `x_test`, `y_test`.
        input_shape: the model's input shape without the batch axis.

    Returns:
        float32 inputs (uint8 images scaled to [0, 1]) and the labels as stored.
    """
    with np.load(path) as d:

        def prep(x):
            x = x / 255.0 if x.dtype == np.uint8 else x
            return x.astype("float32").reshape(-1, *input_shape)

        return (prep(d["x_train"]), d["y_train"]), (prep(d["x_test"]), d["y_test"])


def parse_har_archive(path: str) -> dict:
    """Parses UCI HAR's official zip (or the inner `UCI HAR Dataset.zip`) into arrays.

    Args:
        path: the archive downloaded from `HAR_URL` (a path or a binary file object).

    Returns:
        `x_train`, `x_test` (N, 128, 9) float32 in the channel order of `HAR_CHANNELS`;
        `y_train`, `y_test` int64 in 0..5 (the order of `HAR_ACTIVITIES`); `subject_train`,
        `subject_test` int16.

    Raises:
        ValueError: when the archive lacks the Inertial Signals files.
    """
    with zipfile.ZipFile(path) as outer:
        inner = [n for n in outer.namelist() if n.endswith("UCI HAR Dataset.zip")]
        if inner:  # the static archive wraps the original zip
            return parse_har_archive(io.BytesIO(outer.read(inner[0])))
        names = outer.namelist()

        def table(suffix, dtype):
            hits = [n for n in names if n.endswith(suffix) and "__MACOSX" not in n]
            if not hits:
                raise ValueError(
                    f"Not a UCI HAR archive: no member ends with {suffix!r}. Expected the "
                    f"archive from {HAR_URL}. Received: {path}"
                )
            return np.loadtxt(io.BytesIO(outer.read(hits[0])), dtype=dtype, ndmin=2)

        out = {}
        for split in ("train", "test"):
            signals = [
                table(f"{split}/Inertial Signals/{c}_{split}.txt", "float32") for c in HAR_CHANNELS
            ]
            out[f"x_{split}"] = np.stack(signals, axis=-1)
            out[f"y_{split}"] = table(f"{split}/y_{split}.txt", "int64")[:, 0] - 1
            out[f"subject_{split}"] = table(f"{split}/subject_{split}.txt", "int16")[:, 0]
        return out


def _download(name: str) -> dict:
    if name == "uci_har":
        return _download_har()
    import keras

    (x, y), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    return {"x_train": x, "y_train": y.ravel(), "x_test": x_test, "y_test": y_test.ravel()}


def _download_har() -> dict:
    import keras

    archive = keras.utils.get_file(
        "human+activity+recognition+using+smartphones.zip", HAR_URL, file_hash=HAR_HASH
    )
    cached = os.path.join(os.path.dirname(archive), FILES["uci_har"])
    if not os.path.isfile(cached):
        arrays = parse_har_archive(archive)
        np.savez(
            cached + ".tmp.npz",
            **arrays,
            channels=np.array(HAR_CHANNELS),
            activity_labels=np.array(HAR_ACTIVITIES),
        )
        os.replace(cached + ".tmp.npz", cached)  # a killed parse leaves no half-written cache
    with np.load(cached) as d:
        return {k: d[k] for k in ("x_train", "y_train", "x_test", "y_test")}


def _not_found(name: str, data_dir: str | None, why: str) -> str:
    return (
        f"Dataset {name} not found: {FILES[name]} is in none of {search_dirs(data_dir)} and "
        f"{why}. Set FDI_DATA (or pass --data_dir) to a folder holding it, or place it in "
        f"{SHARED_DATA_DIR}; the .npz holds x_train, y_train, x_test, y_test (see "
        "fdi_keras/datasets.py for the layout and the original sources)."
    )
