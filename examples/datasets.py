"""Loaders of the real datasets the examples use, from `--data_dir` (default ../shared/data).

Originals: MNIST (LeCun et al., 1998; http://yann.lecun.com/exdb/mnist/, also Keras's
mnist.npz); UCI HAR "Human Activity Recognition Using Smartphones" (Anguita et al., ESANN
2013; https://archive.ics.uci.edu/dataset/240, the raw Inertial Signals); CIFAR-10
(Krizhevsky, 2009; https://www.cs.toronto.edu/~kriz/cifar.html). Each .npz holds x_train,
y_train, x_test, y_test.
"""

from __future__ import annotations

import os

import numpy as np

DEFAULT_DATA_DIR = os.environ.get(
    "FDI_DATA",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"),
)

FILES = {"mnist": "mnist.npz", "har": "uci_har.npz", "cifar10": "cifar10.npz"}


def _load(data_dir, name):
    path = os.path.join(data_dir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found. Pass --data_dir (or set FDI_DATA) to the folder "
            f"holding {name}; see examples/datasets.py for the original source."
        )
    return np.load(path)


def mnist(data_dir=DEFAULT_DATA_DIR):
    d = _load(data_dir, FILES["mnist"])
    scale = lambda x: (x[..., None] / 255.0).astype("float32")  # noqa: E731
    return (scale(d["x_train"]), d["y_train"].astype("int64")), (
        scale(d["x_test"]),
        d["y_test"].astype("int64"),
    )


def uci_har(data_dir=DEFAULT_DATA_DIR):
    """(128 steps x 9 channels) windows, standardized with the training split's statistics."""
    d = _load(data_dir, FILES["har"])
    mean, std = d["x_train"].mean(axis=(0, 1)), d["x_train"].std(axis=(0, 1))
    norm = lambda x: ((x - mean) / std).astype("float32")  # noqa: E731
    return (norm(d["x_train"]), d["y_train"].astype("int64")), (
        norm(d["x_test"]),
        d["y_test"].astype("int64"),
    )


def cifar10(data_dir=DEFAULT_DATA_DIR, seed=0):
    d = _load(data_dir, FILES["cifar10"])
    order = np.random.default_rng(seed).permutation(len(d["y_train"]))  # rows grouped by class
    scale = lambda x: (x / 255.0).astype("float32")  # noqa: E731
    return (scale(d["x_train"][order]), d["y_train"][order].astype("int64")), (
        scale(d["x_test"]),
        d["y_test"].astype("int64"),
    )
