"""Whole models the timing tree never saw: MobileNet v1/v2 and randomly channel-thinned ones."""

from __future__ import annotations

import keras
import numpy as np

# Pointwise convolutions whose output width can change without breaking a residual Add.
_THINNABLE = ("conv1", "conv_pw_", "_expand", "Conv1")


def mobilenet(version: int, alpha: float, size: int) -> keras.Model:
    build = keras.applications.MobileNet if version == 1 else keras.applications.MobileNetV2
    return build(input_shape=(size, size, 3), alpha=alpha, weights=None)


def thinned(model: keras.Model, seed: int, low: float = 0.4) -> keras.Model:
    """The model with each thinnable conv's width scaled by a random factor in [low, 1],
    not rounded to a multiple of 8 (as a pruned network's widths are)."""
    rng = np.random.default_rng(seed)

    def clone(layer):
        config = layer.get_config()
        if (
            isinstance(layer, keras.layers.Conv2D)
            and not isinstance(layer, keras.layers.DepthwiseConv2D)
            and any(t in layer.name for t in _THINNABLE)
        ):
            config["filters"] = max(1, int(config["filters"] * rng.uniform(low, 1.0)))
        return type(layer).from_config(config)

    out = keras.models.clone_model(model, clone_function=clone)
    out.name = f"{model.name}_thin{seed}"
    return out
