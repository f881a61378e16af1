"""Small-input versions of the keras.applications families and everyday Keras patterns."""

import keras
import numpy as np

from fdi_keras.prune.regularizer import gate_groups

A, L = keras.applications, keras.layers


def transfer_learning():
    """The most common Keras model: a nested base called with training=False, then a head."""
    base = A.MobileNetV2((32, 32, 3), alpha=0.35, weights=None, include_top=False)
    x = keras.Input((32, 32, 3))
    y = base(x, training=False)
    y = L.GlobalAveragePooling2D()(y)
    y = L.Dropout(0.2)(y)
    return keras.Model(x, L.Dense(10)(y))


def shared_layer():
    """One Conv2D called on two branches, whose outputs are added."""
    x = keras.Input((16, 16, 3))
    stem = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    shared = L.Conv2D(8, 3, padding="same", name="shared")
    a = shared(stem)
    b = shared(L.MaxPooling2D(1)(stem))
    y = L.Add()([a, b])
    y = L.Conv2D(12, 1, activation="relu")(y)
    y = L.GlobalAveragePooling2D()(y)
    return keras.Model(x, L.Dense(4, activation="softmax")(y))


def sequential_swish():
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            L.Conv2D(8, 3, activation="swish"),
            L.BatchNormalization(),
            L.Conv2D(16, 3, activation="gelu"),
            L.GlobalAveragePooling2D(),
            L.Dense(5, activation="softmax"),
        ]
    )


def conv1d_recurrent(cell):
    x = keras.Input((32, 6), batch_size=1)
    y = L.Conv1D(16, 5, activation="relu")(x)
    y = L.Conv1D(16, 3, activation="relu")(y)
    y = cell(12)(y)
    return keras.Model(x, L.Dense(6, activation="softmax")(y))


ZOO = {
    "MobileNet": lambda: A.MobileNet((32, 32, 3), alpha=0.25, weights=None, classes=10),
    "MobileNetV2": lambda: A.MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=10),
    "MobileNetV3Small": lambda: A.MobileNetV3Small(
        (32, 32, 3), alpha=0.75, weights=None, classes=10
    ),
    "MobileNetV3Large": lambda: A.MobileNetV3Large(
        (32, 32, 3), alpha=0.75, weights=None, classes=10
    ),
    "EfficientNetB0": lambda: A.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=10),
    "EfficientNetV2B0": lambda: A.EfficientNetV2B0(
        weights=None, input_shape=(32, 32, 3), classes=10
    ),
    "ResNet50": lambda: A.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10),
    "ResNet50V2": lambda: A.ResNet50V2(weights=None, input_shape=(32, 32, 3), classes=10),
    "DenseNet121": lambda: A.DenseNet121(weights=None, input_shape=(32, 32, 3), classes=10),
    "InceptionV3": lambda: A.InceptionV3(weights=None, input_shape=(75, 75, 3), classes=10),
    "Xception": lambda: A.Xception(weights=None, input_shape=(71, 71, 3), classes=10),
    "InceptionResNetV2": lambda: A.InceptionResNetV2(
        weights=None, input_shape=(75, 75, 3), classes=10
    ),
    "NASNetMobile": lambda: A.NASNetMobile(weights=None, input_shape=(32, 32, 3), classes=10),
    "VGG16": lambda: A.VGG16(weights=None, input_shape=(32, 32, 3), classes=10),
    "ConvNeXtTiny": lambda: A.ConvNeXtTiny(weights=None, input_shape=(32, 32, 3), classes=10),
    "transfer_learning": transfer_learning,
    "shared_layer": shared_layer,
    "sequential_swish": sequential_swish,
    "conv1d_gru": lambda: conv1d_recurrent(L.GRU),
    "conv1d_lstm": lambda: conv1d_recurrent(L.LSTM),
}


def close_random_channels(gated, seed=0) -> int:
    """Closes about half the channels of every gate group (the same ones for all of a group's
    members, at least one open); returns the number of groups."""
    rng = np.random.default_rng(seed)
    groups = gate_groups(gated)
    for members in groups.values():
        n = members[0].channels
        logits = np.where(rng.random(n) < 0.5, -5.0, 5.0)
        logits[rng.integers(n)] = 5.0
        for w in members:
            w.set_gate_logits(logits)
    return len(groups)
