"""Shared by the pruning tests: a synthetic staircase device, a small LeNet and a depthwise net."""

import keras

from fdi_keras.features import compute_features

KINDS = (
    "conv2d",
    "depthwise_conv2d",
    "dense",
    "pool2d",
    "global_pool",
    "add",
    "concat",
    "softmax",
    "activation",
    "gru",
)


def staircase_time(spec):
    """A device whose kernels step at multiples of 16 channels: 1 us + work on padded channels."""
    f = compute_features(spec, tile=16)
    return 1.0 + 1e-3 * f["flops"] / 2 + 1e-4 * (f["bytes_in"] + f["bytes_out"])


def lenet(width=(16, 32, 64)):
    L = keras.layers
    x = keras.Input((28, 28, 1))
    h = L.Conv2D(width[0], 5, activation="relu")(x)
    h = L.MaxPooling2D()(h)
    h = L.Conv2D(width[1], 5, activation="relu")(h)
    h = L.MaxPooling2D()(h)
    h = L.Flatten()(h)
    h = L.Dense(width[2], activation="relu")(h)
    return keras.Model(x, L.Dense(10, activation="softmax")(h))


def depthwise_net(multiplier=3, shape=(12, 12, 3)):
    """Conv2D -> DepthwiseConv2D(multiplier) + BN + ReLU -> 1x1 Conv2D -> pooling -> Dense, with
    a random depthwise bias (so closed upstream channels leave constants behind)."""
    L = keras.layers
    x = keras.Input(shape)
    h = L.Conv2D(6, 3, padding="same", activation="relu")(x)
    h = L.DepthwiseConv2D(
        3, depth_multiplier=multiplier, padding="same", bias_initializer="random_normal"
    )(h)
    h = L.ReLU()(L.BatchNormalization()(h))
    h = L.Conv2D(8, 1)(h)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(x, L.Dense(4)(h))


def swish_net(shape=(12, 12, 3)):
    """Swish in all three places EfficientNet has it (a Conv2D's own activation, a
    DepthwiseConv2D's, and an Activation after BN): each adds a sigmoid and a multiply kernel."""
    L = keras.layers
    x = keras.Input(shape)
    h = L.Conv2D(12, 3, padding="same", activation="swish")(x)
    h = L.DepthwiseConv2D(3, padding="same", activation="swish")(h)
    h = L.Conv2D(10, 1)(h)
    h = L.Activation("swish")(L.BatchNormalization()(h))
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(x, L.Dense(4)(h))
