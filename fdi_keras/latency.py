"""Whole-model latency prediction: a Keras model's kernels through a TimingTree."""

from __future__ import annotations

import dataclasses

import keras

from fdi_keras.kernels import model_kernels
from fdi_keras.timing.tree import TimingTree


@dataclasses.dataclass
class KernelRow:
    """One kernel's prediction: its spec, the Keras layers it runs, the tree leaf used."""

    layers: list[str]
    kind: str
    dims: dict
    leaf: int
    time_us: float


@dataclasses.dataclass
class LatencyReport:
    """Predicted batch-1 latency: `total_ms` and one row per runtime kernel."""

    rows: list[KernelRow]
    overhead_us: float

    @property
    def total_us(self) -> float:
        return self.overhead_us + sum(r.time_us for r in self.rows)

    @property
    def total_ms(self) -> float:
        return self.total_us / 1000.0

    def by_kind(self) -> dict[str, float]:
        """Predicted microseconds per kernel kind."""
        out: dict[str, float] = {}
        for r in self.rows:
            out[r.kind] = out.get(r.kind, 0.0) + r.time_us
        return out

    def to_dict(self) -> dict:
        return {
            "total_ms": self.total_ms,
            "overhead_us": self.overhead_us,
            "rows": [dataclasses.asdict(r) for r in self.rows],
        }

    def __str__(self) -> str:
        lines = [f"{'layers':<44} {'kind':<17} {'leaf':>4} {'time_us':>9} {'share':>6}"]
        total = self.total_us
        for r in self.rows:
            name = "+".join(r.layers)
            name = name if len(name) <= 44 else name[:41] + "..."
            lines.append(
                f"{name:<44} {r.kind:<17} {r.leaf:>4} {r.time_us:>9.1f} "
                f"{100 * r.time_us / total:>5.1f}%"
            )
        lines.append(f"{'invoke overhead':<44} {'':<17} {'':>4} {self.overhead_us:>9.1f}")
        lines.append(f"{'total':<44} {'':<17} {'':>4} {total:>9.1f}  = {self.total_ms:.3f} ms")
        return "\n".join(lines)


def predict_latency(model: keras.Model, tree: TimingTree) -> LatencyReport:
    """Predicts the LiteRT latency of `model` (batch 1) on the device `tree` was profiled on.

    Each kernel is predicted as a single-kernel model's invoke (which includes one invoke's
    overhead); the total counts that overhead once. A gated (`latency_aware`) model is
    predicted as `strip(model)`, its current hard structure.

    Example:
        >>> report = fdi_keras.predict_latency(model, fdi_keras.TimingTree.load("tree.json"))
        >>> report.total_ms, print(report)
    """
    from fdi_keras.prune.strip import strip  # a gated model is predicted as it would be stripped
    from fdi_keras.prune.wrapper import LatencyAware

    if any(isinstance(layer, LatencyAware) for layer in model.layers):
        model = strip(model)
    dtype = tree.metadata_.get("dtype") or "float32"
    threads = tree.metadata_.get("threads") or 1
    rows = []
    for kernel in model_kernels(model):
        s = kernel.spec
        spec = type(s)(s.kind, s.dims, s.attrs, dtype, threads)
        leaf = tree.leaf(spec)[0]
        time_us = max(0.0, tree.predict_one(spec) - tree.overhead_us_)
        rows.append(KernelRow(kernel.layers, spec.kind, dict(spec.dims), leaf, time_us))
    return LatencyReport(rows, tree.overhead_us_)
