"""Random small networks, profiled whole to learn how kernels compose (the composition term).

A model runs slower than the sum of its kernels timed one by one: a kernel profiled alone
finds its weights and input in cache on every invoke, while inside a model its weights were
last touched a whole forward pass ago and its input was just written by another kernel. How
much slower depends on the device's caches and memory, so it is measured, not assumed: the
profiler times random networks whole (50 by default) (`LayerSpec("network", {"seed": s})`, a
configuration like any other: resumable, retried, sharded across devices), and
`fdi_keras.timing.composition` fits the correction on them.

The generator is deliberately not a copy of any published architecture (the stock
`keras.applications` models are what the benchmarks validate on): a stem, then 2-14 blocks
drawn from the building blocks mobile networks are made of (plain, depthwise-separable and
inverted-residual convolutions, residual pairs, two-branch concatenations, pooling), with
random widths, kernel sizes, strides, activations and batch norms, and an optional
classifier head. Inputs are 16-224 pixels, up to about 1.2 G multiply-accumulates.

Version v2 adds weight-bound networks (about 40% of them): small inputs (16-48 px), layers up
to 2,048 channels, an optional wide hidden Dense layer, and up to 160 MB of weights, which
is where stock models at small inputs live (ResNet50 at 32 px reads 94 MB of weights for
0.16 G multiply-accumulates) and where v1's networks (at most 40 MB, mostly compute-bound)
never went: more weights than the last-level cache holds. Those few huge layers stream their
weights from memory even when timed alone, though; a deep stock model's many 0.1-10 MB layers
run from cache alone and from memory in the model (2.1-2.8x their kernels alone on the AMD
VM). So version v3 draws half of the other networks deep, 15-40 blocks (60-190 kernels).
Rows of every earlier version stay usable. Narrow networks (NARROW_VERSION, drawn beside
the newest version, NARROW_SHARE as many) are what pruning and small inputs leave: 4-48
channels on 8-64 px inputs, 4-16 blocks of 1-3 us kernels, where a model is mostly the
fixed cost each kernel pays; the other versions' narrowest layers have 8 channels and most
of their networks take tens of microseconds or more per kernel. They are timed whole only
(`profiled_kernels`): they teach the composition term what a kernel saves inside a model.
Tiny networks (TINY_VERSION, TINY_SHARE as many) are narrow ones of 0-2 blocks, 1-18
kernels: every single-kernel time includes one invoke's fixed cost and a model pays one, so a
model of k kernels runs about that cost times k - 1 under their sum alone (0.45 us per kernel
on the AMD EPYC VM, from 1 to 8 kernels of a 3x3 convolution or of a sigmoid); on networks of
16 kernels or more the invoke's term and the per-kernel saving cannot be told apart, and the
fit had set the invoke's to 0 (a one-kernel model predicted 0.45 us short). Timed whole only.
Chains of one kernel repeated (`fdi_keras.profiling.chains`) are `network` specs too, of
generator CHAIN_VERSION.
"""

from __future__ import annotations

import functools

import numpy as np

from fdi_keras.profiling.chains import CHAIN_VERSION, draw_chain
from fdi_keras.specs import KINDS, NETWORK, LayerSpec

# Stored in every network spec: editing the generator must bump it, so that a seed always
# means the network that was timed. Every version listed still draws what it drew.
NARROW_VERSION = "n1"
TINY_VERSION = "t1"
GENERATOR_VERSIONS = tuple(  # of random networks, oldest first (chains, narrow, tiny apart)
    v
    for v in KINDS[NETWORK][1]["generator"]
    if v not in (CHAIN_VERSION, NARROW_VERSION, TINY_VERSION)
)
GENERATOR_VERSION = GENERATOR_VERSIONS[-1]
MAX_MACS = 1.2e9
MAX_PARAMS = {"v1": 10e6, "v2": 40e6, "v3": 40e6, NARROW_VERSION: 10e6, TINY_VERSION: 10e6}
NARROW_SHARE = 0.4  # narrow networks drawn per network of the newest version
TINY_SHARE = 0.4  # tiny networks drawn per network of the newest version
WIDE_SHARE = 0.4  # v2 on: the share of weight-bound networks
DEEP_SHARE = 0.5  # v3: the share of the others drawn deep (15-40 blocks)
# Networks with more kernels are timed whole only (profiler.sample_all): about the deep ones.
PROFILED_NETWORK_KERNELS = 60


def _logint(rng, low, high):
    return int(round(np.exp(rng.uniform(np.log(low), np.log(high)))))


def _width(rng, low=8, high=512):
    c = _logint(rng, low, high)
    return max(low, int(round(c / 8)) * 8) if rng.random() < 0.6 else c


class _Builder:
    """Draws one network from `rng`, block by block, with the Keras functional API."""

    def __init__(self, rng, version):
        import keras

        self.keras, self.L, self.rng = keras, keras.layers, rng
        self.activation = [None, "relu", "relu6", "hard_swish", "swish"][rng.integers(5)]
        self.batch_norm = rng.random() < 0.5
        self.tiny = version == TINY_VERSION
        self.narrow = version in (NARROW_VERSION, TINY_VERSION)
        self.wide = not self.narrow and version != "v1" and rng.random() < WIDE_SHARE
        self.deep = version == "v3" and not self.wide and rng.random() < DEEP_SHARE
        self.max_width = 2048 if self.wide else 48 if self.narrow else 512

    def width(self):
        return _width(self.rng, 128 if self.wide else 4 if self.narrow else 8, self.max_width)

    def branch_width(self):
        """One branch of a two-branch block: narrower than a layer of a wide network."""
        return _width(self.rng, 4, 48) if self.narrow else _width(self.rng, 8, 256)

    def act(self, x):
        if self.batch_norm:
            x = self.L.BatchNormalization()(x)
        return self.L.Activation(self.activation)(x) if self.activation else x

    def conv(self, x, width, kernel=1, stride=1):
        return self.act(self.L.Conv2D(width, kernel, stride, padding="same")(x))

    def stride(self, x):
        return 2 if x.shape[1] >= 4 and self.rng.random() < 0.3 else 1

    def block(self, x):
        rng, L = self.rng, self.L
        kind = rng.choice(
            ["conv", "separable", "inverted", "residual", "branches", "pool"],
            p=[0.25, 0.2, 0.2, 0.15, 0.1, 0.1],
        )
        c, k, s = x.shape[-1], int(rng.choice([1, 3, 5], p=[0.3, 0.6, 0.1])), self.stride(x)
        if kind == "conv":
            return self.conv(x, self.width(), k, s)
        if kind == "separable":
            x = self.act(L.DepthwiseConv2D(max(k, 3), s, padding="same")(x))
            return self.conv(x, self.width())
        if kind == "inverted":
            y = self.conv(x, _width(rng, c, min(6 * c, 3 * self.max_width)))
            y = self.act(L.DepthwiseConv2D(max(k, 3), s, padding="same")(y))
            same = s == 1 and rng.random() < 0.6
            y = L.Conv2D(c if same else self.width(), 1)(y)
            return L.Add()([x, y]) if same else y
        if kind == "residual":
            y = self.conv(x, self.width(), 3)
            y = L.Conv2D(c, 3, padding="same")(y)
            return self.act(L.Add()([x, y]))
        if kind == "branches":
            a = self.conv(x, self.branch_width(), 1, s)
            b = self.conv(x, self.branch_width(), 3, s)
            return L.Concatenate()([a, b])
        pool = L.MaxPooling2D if rng.random() < 0.6 else L.AveragePooling2D
        return pool(int(rng.choice([2, 3])), 2, padding="same")(x) if x.shape[1] >= 2 else x

    def build(self):
        rng, L = self.rng, self.L
        if self.narrow:
            size, stem = _logint(rng, 8, 64), _width(rng, 4, 32)
            blocks = int(rng.integers(0, 3)) if self.tiny else int(rng.integers(4, 17))
        else:
            size, stem = _logint(rng, 16, 48 if self.wide else 224), _width(rng, 8, 64)
            blocks = _logint(rng, 15, 40) if self.deep else int(rng.integers(2, 15))
        inputs = self.keras.Input((size, size, 3), batch_size=1)
        x = self.conv(inputs, stem, 3, 2 if size >= 32 else 1)
        for _ in range(blocks):
            x = self.block(x)
        if rng.random() < 0.7:
            x = L.GlobalAveragePooling2D()(x)
            if self.wide and rng.random() < 0.5:
                x = L.Dense(_logint(rng, 256, 4096), activation="relu")(x)
            x = L.Dense(_logint(rng, 10, 1000), activation="softmax")(x)
        return self.keras.Model(inputs, x)


def _draw(seed: int, version: str = GENERATOR_VERSION):
    """(model, its runtime kernels) of the random network of `seed` as generator `version`
    draws it: draws are redrawn from the same seed's stream until one fits the MAC and weight
    budget."""
    from fdi_keras.features import compute_features
    from fdi_keras.kernels import model_kernels

    if version == CHAIN_VERSION:
        model = draw_chain(seed)
        return model, model_kernels(model)
    rng = np.random.default_rng([seed, 0x6E6574])
    while True:
        model = _Builder(rng, version).build()
        kernels = model_kernels(model)
        macs = sum(
            compute_features(k.spec)["flops"] / 2
            for k in kernels
            if k.spec.kind in ("conv2d", "depthwise_conv2d", "dense")
        )
        if model.count_params() <= MAX_PARAMS[version] and macs <= MAX_MACS:
            return model, kernels


def random_network(seed: int, version: str = GENERATOR_VERSION):
    """The random network of `seed` (deterministic), within the MAC and weight budget."""
    return _draw(seed, version)[0]


def network_of(spec: LayerSpec):
    """The Keras model a `network` spec stands for."""
    return random_network(spec.dims["seed"], _version(spec))


@functools.lru_cache(maxsize=4096)
def network_kernel_specs(
    seed: int, dtype: str = "float32", threads: int = 1, version: str = GENERATOR_VERSION
) -> tuple:
    """The runtime kernels of network `seed` as `LayerSpec`s in `dtype` and `threads`."""
    return tuple(
        LayerSpec(k.spec.kind, k.spec.dims, k.spec.attrs, dtype, threads)
        for k in _draw(seed, version)[1]
    )


def network_kernels(spec: LayerSpec) -> tuple:
    """The kernels of a `network` spec, in its dtype and threads (for `TimingTree.fit_rows`).

    Raises:
        ValueError: the spec was drawn by a generator version this fdi_keras does not know.
    """
    return network_kernel_specs(spec.dims["seed"], spec.dtype, spec.threads, _version(spec))


def profiled_kernels(spec: LayerSpec) -> list[LayerSpec]:
    """The kernels of a `network` spec that the profiler also times alone: a chain's one
    kernel; every kernel of a random network of at most PROFILED_NETWORK_KERNELS, none of a
    deeper one (timed whole only: profiling them would cost more than the rest of a profile),
    none of a narrow or tiny one. Narrow networks are timed whole only: with their 1-3 us
    kernels in the trees too, the trees' small leaves moved and the zoo's small models went from
    over- to under-predicted (zoo MAPE 11.6% against 11.2% whole only, on the AMD VM)."""
    version = _version(spec)
    if version in (NARROW_VERSION, TINY_VERSION):  # decided before drawing: none is needed
        return []
    kernels = network_kernels(spec)
    if version == CHAIN_VERSION:
        return [kernels[0]]
    return list(kernels) if len(kernels) <= PROFILED_NETWORK_KERNELS else []


def _version(spec: LayerSpec) -> str:
    version = spec.attrs.get("generator")
    known = (*GENERATOR_VERSIONS, NARROW_VERSION, TINY_VERSION, CHAIN_VERSION)
    if version not in known:
        raise ValueError(
            f"Network {spec.dims} was drawn by generator {version!r}; this fdi_keras draws "
            f"{known}, whose seeds mean other networks. Use the fdi_keras that drew them, "
            "or profile the networks again (--kinds=network)."
        )
    return version


def network_specs(
    count: int,
    first_seed: int = 0,
    dtype: str = "float32",
    threads: int = 1,
    generator: str = GENERATOR_VERSION,
) -> list[LayerSpec]:
    """`count` network configurations of `generator` (CHAIN_VERSION for chains, NARROW_VERSION
    for narrow networks, TINY_VERSION for tiny ones), seeds from `first_seed` on (a prefix
    property holds)."""
    return [
        LayerSpec("network", {"seed": s}, {"generator": generator}, dtype, threads)
        for s in range(first_seed, first_seed + count)
    ]
