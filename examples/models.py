"""The example networks: LeNet-5 (MNIST), a DeepSense-style CNN+GRU (UCI HAR), a small CNN."""

from __future__ import annotations

import keras

L = keras.layers


def lenet5(widths=(20, 50, 500, 84)) -> keras.Model:
    """LeNet-5's layout (two 5x5 convolutions with pooling, three dense layers), ReLU, with
    Caffe's LeNet widths for the convolutions and the first dense layer."""
    x = keras.Input((28, 28, 1))
    h = L.MaxPooling2D()(L.Conv2D(widths[0], 5, padding="same", activation="relu")(x))
    h = L.MaxPooling2D()(L.Conv2D(widths[1], 5, activation="relu")(h))
    h = L.Flatten()(h)
    h = L.Dense(widths[2], activation="relu")(h)
    h = L.Dense(widths[3], activation="relu")(h)
    return keras.Model(x, L.Dense(10, activation="softmax")(h), name="lenet5")


def deepsense_har(widths=(64, 64, 64), units=64, classes=6) -> keras.Model:
    """DeepSense-style: 1-D convolutions over the IMU window, then a GRU over time."""
    x = keras.Input((128, 9))
    h = x
    for i, w in enumerate(widths):
        h = L.Conv1D(w, 5, padding="same", use_bias=False)(h)
        h = L.ReLU()(L.BatchNormalization()(h))
        if i < 2:
            h = L.MaxPooling1D(2)(h)
    h = L.GRU(units)(h)
    return keras.Model(x, L.Dense(classes, activation="softmax")(h), name="deepsense_har")


def cifar_cnn(widths=(64, 64, 128, 128, 256)) -> keras.Model:
    """A VGG-style CNN for 32x32 images."""
    x = keras.Input((32, 32, 3))
    h = x
    for i, w in enumerate(widths):
        h = L.Conv2D(w, 3, padding="same", use_bias=False)(h)
        h = L.ReLU()(L.BatchNormalization()(h))
        if i % 2 == 1:
            h = L.MaxPooling2D()(h)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(x, L.Dense(10, activation="softmax")(h), name="cifar_cnn")
