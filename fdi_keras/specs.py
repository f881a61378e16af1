"""LayerSpec: one kernel as the runtime executes it (kind, integer dims, categorical attrs)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

# Kind -> (integer dims, categorical attrs with their allowed values).
KINDS: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "conv2d": (("h", "w", "cin", "cout", "kh", "kw", "sh", "sw"), {"padding": ("same", "valid")}),
    "depthwise_conv2d": (
        ("h", "w", "cin", "mult", "kh", "kw", "sh", "sw"),
        {"padding": ("same", "valid")},
    ),
    "dense": (("m", "cin", "cout"), {}),
    "pool2d": (
        ("h", "w", "c", "kh", "kw", "sh", "sw"),
        {"op": ("max", "avg"), "padding": ("same", "valid")},
    ),
    "global_pool": (("h", "w", "c"), {"op": ("max", "avg")}),
    "add": (("h", "w", "c"), {}),
    # Its own kind, not an "add": int8 LiteRT runs it outside XNNPack, with TFLite's reference
    # kernel (on one AMD EPYC VM, 8x8x96: 45 us in int8 where an ADD takes 1.2 us).
    "squared_difference": (("h", "w", "c"), {}),
    "concat": (("h", "w", "c", "n"), {}),
    "pad": (("h", "w", "c", "ph", "pw"), {}),
    "lrn": (("h", "w", "c", "radius"), {}),
    "activation": (("n",), {"fn": ("relu", "relu6", "sigmoid", "tanh", "hard_swish", "gelu")}),
    "softmax": (("n",), {}),
    "gru": (("t", "cin", "units"), {}),
    "lstm": (("t", "cin", "units"), {}),
    # Not a kernel: a whole random network (fdi_keras.profiling.networks), profiled to learn
    # how kernels compose inside a model (fdi_keras.timing.composition); the generator
    # versions it knows, the newest last, then n1: a narrow network (drawn beside the newest)
    # and c1: a chain of one kernel repeated (fdi_keras.profiling.chains).
    "network": (("seed",), {"generator": ("v1", "v2", "v3", "n1", "t1", "c1")}),
}
NETWORK = "network"
# The channel dimension whose staircase a kind's tree learns (and the profiler sweeps).
SWEEP_DIMS = {
    "conv2d": "cout",
    "depthwise_conv2d": "cin",
    "dense": "cout",
    "gru": "units",
    "lstm": "units",
}
DTYPES = ("float32", "float16", "int8")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One runtime kernel: e.g. `LayerSpec("conv2d", dict(h=28, w=28, cin=32, cout=64, ...))`.

    Args:
        kind: a key of `KINDS`.
        dims: integer dimensions of the kernel (input spatial size, channels, kernel, stride...).
        attrs: categorical attributes (padding, pooling op, activation function).
        dtype: numeric type the kernel runs in ("float32", "float16" or "int8").
        threads: number of runtime threads.
    """

    kind: str
    dims: Mapping[str, int]
    attrs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    dtype: str = "float32"
    threads: int = 1

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(
                f"Unknown kernel kind. Expected one of {sorted(KINDS)}. "
                f"Received: kind={self.kind!r}"
            )
        dim_names, attr_values = KINDS[self.kind]
        if set(self.dims) != set(dim_names):
            raise ValueError(
                f"A {self.kind} spec needs exactly the dims {list(dim_names)}. "
                f"Received: dims={dict(self.dims)}"
            )
        bad = {k: v for k, v in self.dims.items() if int(v) != v or v < 0}
        if bad:
            raise ValueError(f"Dims must be non-negative integers. Received: {bad}")
        attrs = {k: self.attrs.get(k, values[0]) for k, values in attr_values.items()}
        for name, value in attrs.items():
            if value not in attr_values[name]:
                raise ValueError(
                    f"{self.kind} attr {name!r} must be one of {attr_values[name]}. "
                    f"Received: {name}={value!r}"
                )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}. Received: dtype={self.dtype!r}")
        object.__setattr__(self, "dims", {k: int(self.dims[k]) for k in dim_names})
        object.__setattr__(self, "attrs", attrs)

    def __hash__(self):  # dims and attrs are in their kind's canonical order (__post_init__)
        return hash(
            (self.kind, *self.dims.values(), *self.attrs.values(), self.dtype, self.threads)
        )

    def key(self) -> str:
        """A canonical string identifying this configuration (used to resume profiling)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "dims": dict(self.dims),
            "attrs": dict(self.attrs),
            "dtype": self.dtype,
            "threads": self.threads,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> LayerSpec:
        return cls(
            d["kind"], d["dims"], d.get("attrs", {}), d.get("dtype", "float32"), d.get("threads", 1)
        )

    def replace(self, **dims) -> LayerSpec:
        """A copy with some dims changed, e.g. `spec.replace(cout=65)`."""
        return LayerSpec(self.kind, {**self.dims, **dims}, self.attrs, self.dtype, self.threads)


def conv_output_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of a convolution/pooling along one axis, as Keras and TFLite compute it."""
    if padding == "same":
        return -(-size // stride)
    return max(0, (size - kernel) // stride + 1)
