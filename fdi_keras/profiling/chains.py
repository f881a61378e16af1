"""Chains of one kernel repeated: how a kernel slows when the rest of a model evicts its weights.

Timed alone, a kernel finds its weights in cache on every invoke. Inside a model, between two
invokes of the kernel the model reads all of its other weights: when they exceed a cache
level, the kernel reads its own from the next one. A stock model's weights pass such a level
somewhere between a few hundred kilobytes and a few hundred megabytes, and on one 2-core Xeon
VM (2 MB of L2 per core) MobileNetV3Small at 32 px (4 MB of weights) runs 8x the time of the
same network with half its channels (1 MB). Random networks (`fdi_keras.profiling.networks`)
show the composition term this only indirectly, mixed with everything else a network does.

A chain isolates it: `copies` convolutions (or dense layers) of one shape, each with its own
weights and as many output channels as input channels, so that between two invokes of any
copy the others read `copies - 1` times its weights. Its copies' kernel is profiled alone too,
so the chain's time over `copies` times the kernel's is the slow-down of that kernel once
the model's weights total the chain's; drawn over 0.25-160 MB of weights in all (and 2-48
copies), chains trace each cache level's cliff for the composition term's memory curve
(`fdi_keras.timing.composition`). A chain is a `network` spec whose
generator is CHAIN_VERSION; its seed means one chain forever (a new draw needs a new version).
"""

from __future__ import annotations

import numpy as np

CHAIN_VERSION = "c1"
# Chains profiled per random network (`sampling.sample_configs("network", n)` draws both).
# 60 chains beside the default 50 networks: with 30, the memory curve between 4 and 16 MB rested
# on a handful of chains, and once the dense tree learned which output counts run a slow
# code path (`fdi_keras.features.LAST_TILE_DIMS`), the dense chains there no longer asked
# for a memory term, the curve rose to 162 GB/s and the zoo's 10-30 MB models lost theirs.
CHAIN_SHARE = 1.2
MAX_WEIGHT_BYTES = 160e6  # all copies' weights (float32): the zoo's largest reach 134 MB
MAX_COPY_BYTES = 16e6  # one copy, the single-kernel sampler's tensor cap
MAX_COPY_MACS = 2e8  # one copy, the single-kernel sampler's cap
MAX_MACS = 1.2e9  # all copies, the random networks' cap
OPS = ("conv1x1", "conv3x3", "dense")


def _loguniform(rng, low, high) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _shape(rng):
    """(op, channels, size, copies, relu), drawn until one fits the caps."""
    while True:
        op = str(rng.choice(OPS, p=[0.35, 0.35, 0.3]))
        copies = int(round(_loguniform(rng, 2, 48)))
        weight_bytes = _loguniform(rng, 0.25e6, MAX_WEIGHT_BYTES)
        taps = 9 if op == "conv3x3" else 1
        channels = int(round(np.sqrt(weight_bytes / copies / 4 / taps)))
        if rng.random() < 0.6:
            channels = int(round(channels / 8)) * 8
        size = 1 if op == "dense" else int(round(_loguniform(rng, 1, 16)))
        relu = bool(rng.random() < 0.5)
        copy_params = taps * channels * channels + channels
        copy_macs = size * size * taps * channels * channels
        if (
            16 <= channels <= 4096
            and 4 * copy_params <= MAX_COPY_BYTES
            and copy_macs <= MAX_COPY_MACS
            and copies * copy_macs <= MAX_MACS
            and 4 * size * size * channels <= MAX_COPY_BYTES
        ):
            return op, channels, size, copies, relu


def draw_chain(seed: int):
    """The Keras model of chain `seed` (deterministic): `copies` layers of one shape, each
    mapping its channels to as many, so every copy is the same runtime kernel."""
    import keras

    op, channels, size, copies, relu = _shape(np.random.default_rng([seed, 0x636861696E]))
    activation = "relu" if relu else None
    if op == "dense":
        x = inputs = keras.Input((channels,), batch_size=1)
        for _ in range(copies):
            x = keras.layers.Dense(channels, activation=activation)(x)
    else:
        x = inputs = keras.Input((size, size, channels), batch_size=1)
        kernel = 3 if op == "conv3x3" else 1
        for _ in range(copies):
            x = keras.layers.Conv2D(channels, kernel, padding="same", activation=activation)(x)
    return keras.Model(inputs, x, name=f"chain_{seed}")
