"""The tools' data files (an .npz with x_train, y_train, x_test, y_test) and test accuracy."""

from __future__ import annotations

import numpy as np


def load_npz(path, input_shape):
    """(x, y), (x_test, y_test) shaped for a model's input; uint8 images are scaled to [0, 1]."""
    d = np.load(path)

    def prep(x):
        return (x / 255.0 if x.dtype == np.uint8 else x).astype("float32").reshape(-1, *input_shape)

    return (prep(d["x_train"]), d["y_train"]), (prep(d["x_test"]), d["y_test"])


def accuracy(model, x, y) -> float:
    """Top-1 accuracy of a softmax classifier on (x, y)."""
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=256), -1) == y))
