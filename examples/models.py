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


def deepsense_har(widths=(64, 64, 64), units=64, classes=6, name="deepsense_har") -> keras.Model:
    """DeepSense-style: 1-D convolutions over the IMU window, then a GRU over time (`units`
    None: global average pooling over time instead, a model int8 converters can take)."""
    x = keras.Input((128, 9))
    h = x
    for i, w in enumerate(widths):
        h = L.Conv1D(w, 5, padding="same", use_bias=False)(h)
        h = L.ReLU()(L.BatchNormalization()(h))
        if i < 2:
            h = L.MaxPooling1D(2)(h)
    h = L.GlobalAveragePooling1D()(h) if units is None else L.GRU(units)(h)
    return keras.Model(x, L.Dense(classes, activation="softmax")(h), name=name)


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


def _conv_bn_relu(h, filters, kernel, strides=1, name=None):
    h = L.Conv2D(filters, kernel, strides, padding="same", use_bias=False, name=name)(h)
    return L.ReLU()(L.BatchNormalization()(h))


def _inception(h, c1, c3r, c3, c5r, c5, cp):
    """GoogLeNet's module: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1, concatenated."""
    b1 = _conv_bn_relu(h, c1, 1)
    b3 = _conv_bn_relu(_conv_bn_relu(h, c3r, 1), c3, 3)
    b5 = _conv_bn_relu(_conv_bn_relu(h, c5r, 1), c5, 5)
    bp = _conv_bn_relu(L.MaxPooling2D(3, 1, padding="same")(h), cp, 1)
    return L.Concatenate()([b1, b3, b5, bp])


# Inception v1's module widths (Szegedy et al., 2015, table 1): 1x1, 3x3 reduce, 3x3,
# 5x5 reduce, 5x5, pool proj.
GOOGLENET_MODULES = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def googlenet(input_shape=(32, 32, 3), width=1.0, classes=10) -> keras.Model:
    """GoogLeNet (Inception v1) with its two LRN layers, BN after every convolution.

    The stem's first convolution is 3x3 with stride 1 instead of 7x7 with stride 2, so the net
    keeps enough resolution for 32x32 images; at 224x224 input its feature maps have the
    original's sizes from the 3x3 stem convolution on (112, 56, 28, 14, 7). `width` scales
    every channel count.
    """
    from fdi_keras.layers import LocalResponseNormalization as LRN

    c = lambda n: max(4, int(round(n * width)))  # noqa: E731
    x = keras.Input(input_shape)
    h = _conv_bn_relu(x, c(64), 3)
    h = LRN(depth_radius=2, alpha=1e-4, beta=0.75)(L.MaxPooling2D(3, 2, padding="same")(h))
    h = _conv_bn_relu(h, c(64), 1)
    h = _conv_bn_relu(h, c(192), 3)
    h = L.MaxPooling2D(3, 2, padding="same")(LRN(depth_radius=2, alpha=1e-4, beta=0.75)(h))
    for stage in ("3a", "3b", "pool", "4a", "4b", "4c", "4d", "4e", "pool", "5a", "5b"):
        if stage == "pool":
            h = L.MaxPooling2D(3, 2, padding="same")(h)
        else:
            h = _inception(h, *(c(n) for n in GOOGLENET_MODULES[stage]))
    h = L.Dropout(0.4)(L.GlobalAveragePooling2D()(h))
    return keras.Model(x, L.Dense(classes, activation="softmax")(h), name="googlenet")


def vgg_pool(input_shape=(32, 32, 3), widths=(32, 64, 128), classes=10) -> keras.Model:
    """VGG-style: blocks of 3x3 convolutions (with bias, ReLU), each ending in a 2x2 max pool."""
    x = keras.Input(input_shape)
    h = x
    for w in widths:
        h = L.Conv2D(w, 3, padding="same", activation="relu")(h)
        h = L.Conv2D(w, 3, padding="same", activation="relu")(h)
        h = L.MaxPooling2D(2, padding="same")(h)
    h = L.Dense(128, activation="relu")(L.Flatten()(h))
    return keras.Model(x, L.Dense(classes, activation="softmax")(h), name="vgg_pool")


def resnet_bn(input_shape=(32, 32, 3), widths=(32, 64, 128), classes=10) -> keras.Model:
    """ResNet-style with BatchNormalization: a strided stem, then per stage one basic block."""
    x = keras.Input(input_shape)
    h = _conv_bn_relu(x, widths[0], 3)
    for i, w in enumerate(widths):
        stride = 1 if i == 0 else 2
        shortcut = h
        if stride != 1 or shortcut.shape[-1] != w:
            shortcut = L.BatchNormalization()(L.Conv2D(w, 1, stride, use_bias=False)(shortcut))
        r = _conv_bn_relu(h, w, 3, stride)
        r = L.BatchNormalization()(L.Conv2D(w, 3, padding="same", use_bias=False)(r))
        h = L.ReLU()(L.Add()([shortcut, r]))
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(x, L.Dense(classes, activation="softmax")(h), name="resnet_bn")


def resnet20(input_shape=(32, 32, 3), widths=(16, 32, 64), blocks=3, classes=10) -> keras.Model:
    """ResNet-20 for CIFAR-10 (He et al., 2016, section 4.2): a 3x3 stem, three stages of
    `blocks` basic blocks (BN, identity shortcuts, a 1x1 projection where the width or the
    resolution changes), global average pooling."""
    x = keras.Input(input_shape)
    h = _conv_bn_relu(x, widths[0], 3)
    for i, w in enumerate(widths):
        for b in range(blocks):
            stride = 2 if i > 0 and b == 0 else 1
            shortcut = h
            if stride != 1 or shortcut.shape[-1] != w:
                shortcut = L.BatchNormalization()(L.Conv2D(w, 1, stride, use_bias=False)(h))
            r = _conv_bn_relu(h, w, 3, stride)
            r = L.BatchNormalization()(L.Conv2D(w, 3, padding="same", use_bias=False)(r))
            h = L.ReLU()(L.Add()([shortcut, r]))
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(x, L.Dense(classes, activation="softmax")(h), name="resnet20")


def mobilenet_v2_cifar(alpha=0.35, classes=10, bn_momentum=0.9) -> keras.Model:
    """keras.applications.MobileNetV2 at CIFAR-10's 32x32 input, width `alpha`, untrained.

    The stock batch normalization momentum, 0.999, suits ImageNet's 20,000 steps an epoch; in
    a few thousand steps its moving statistics still remember their initial values and the
    trained model predicts one class at inference (10.2% after 4 epochs of 20,000 images while
    its training-mode accuracy was 33%; 31% at inference with 0.9)."""
    stock = keras.applications.MobileNetV2(
        (32, 32, 3), alpha=alpha, weights=None, classes=classes, name=f"mobilenetv2_{alpha:g}"
    )
    config = stock.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "BatchNormalization":
            layer["config"]["momentum"] = bn_momentum
    return keras.Model.from_config(config)
