"""Small models with (and without) DeepRebirth's patterns, and BN layers with real statistics."""

import keras
import numpy as np

from fdi_keras.layers import LocalResponseNormalization

L = keras.layers


def randomize_batchnorm(model, seed=0):
    """Gives every BatchNormalization non-trivial statistics, so folding is really tested."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.get_weights()[0].shape
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c),
                    rng.normal(0, 0.1, c),
                    rng.normal(0, 0.1, c),
                    rng.uniform(0.5, 2.0, c),
                ]
            )
    return model


def stem():
    """Conv + BN + ReLU + LRN + pool (a streamline), then Conv + BN (a BN fold)."""
    x = keras.Input((16, 16, 3))
    h = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(x)
    h = L.ReLU()(L.BatchNormalization()(h))
    h = LocalResponseNormalization(2, alpha=1e-4, beta=0.75)(h)
    h = L.MaxPooling2D(3, 2, padding="same")(h)
    h = L.BatchNormalization()(L.Conv2D(12, 3, padding="same", name="c2")(h))
    h = L.GlobalAveragePooling2D()(L.ReLU()(h))
    return randomize_batchnorm(keras.Model(x, L.Dense(10, activation="softmax")(h)))


def inception(shape=(8, 8, 16), bn=False):
    """One Inception module: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | pool -> 1x1."""

    def conv(h, c, k, name=None):
        if bn:
            h = L.BatchNormalization()(L.Conv2D(c, k, padding="same", use_bias=False)(h))
            return L.ReLU()(h)
        return L.Conv2D(c, k, padding="same", activation="relu", name=name)(h)

    x = keras.Input(shape)
    b1 = conv(x, 4, 1)
    b3 = conv(conv(x, 6, 1), 8, 3, name="wide3")
    b5 = conv(conv(x, 2, 1), 4, 5, name="wide5")
    bp = conv(L.MaxPooling2D(3, 1, padding="same")(x), 4, 1)
    h = L.Concatenate(name="module")([b1, b3, b5, bp])
    h = L.GlobalAveragePooling2D()(h)
    return randomize_batchnorm(keras.Model(x, L.Dense(10, activation="softmax")(h)))


def plain_mlp():
    x = keras.Input((20,))
    return keras.Model(x, L.Dense(3)(L.Dense(16, activation="relu")(x)))
