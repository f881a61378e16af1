"""Whole-model latency prediction: a Keras model's kernels through a TimingTree."""

from __future__ import annotations

import dataclasses
import os

import keras

from fdi_keras.features import weight_bytes
from fdi_keras.graph import trace
from fdi_keras.graph.registry import registered
from fdi_keras.kernels import model_kernels
from fdi_keras.timing.tree import TimingTree


@dataclasses.dataclass
class KernelRow:
    """One kernel's prediction: its spec, the Keras layers it runs, the tree leaf used (in
    the tree of `timed_by`: its own kind's, or conv2d's for a Dense over several rows, see
    `fdi_keras.timing.tree.timed_as`)."""

    layers: list[str]
    kind: str
    dims: dict
    leaf: int
    time_us: float
    timed_by: str = ""

    def __post_init__(self):
        self.timed_by = self.timed_by or self.kind

    @property
    def leaf_name(self) -> str:
        """The leaf as `explain()` lists it: its number, after its tree's kind when that is
        not the kernel's own."""
        return str(self.leaf) if self.timed_by == self.kind else f"{self.timed_by}/{self.leaf}"


@dataclasses.dataclass
class LatencyReport:
    """Predicted batch-1 latency: `total_ms` and one row per runtime kernel."""

    rows: list[KernelRow]
    overhead_us: float
    statistic: str = "min"  # over invokes: "min" or "median" (see predict_latency)

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

    def plot(self, measured=None):
        """Per-kernel bars of the predicted time, with the measured time when given
        (`fdi_keras.plots.latency_report_figure`; needs `pip install fdi_keras[plots]`).

        Args:
            measured: microseconds per kernel (a dict keyed by a row's layers joined by '+',
                or a sequence aligned with `rows`), or the whole model's (a float, or the
                `Timing` that `fdi_keras.export.measure_latency` returns).

        Returns:
            A matplotlib Figure.

        Example:
            >>> fdi_keras.predict_latency(model, tree).plot().savefig("kernels.png")
        """
        from fdi_keras.plots import latency_report_figure  # matplotlib is optional

        return latency_report_figure(self, measured)

    def to_dict(self) -> dict:
        return {
            "total_ms": self.total_ms,
            "statistic": self.statistic,
            "overhead_us": self.overhead_us,
            "rows": [dataclasses.asdict(r) for r in self.rows],
        }

    def __str__(self) -> str:
        lines = [f"{'layers':<44} {'kind':<17} {'leaf':>9} {'time_us':>9} {'share':>6}"]
        total = self.total_us
        for r in self.rows:
            name = "+".join(r.layers)
            name = name if len(name) <= 44 else name[:41] + "..."
            lines.append(
                f"{name:<44} {r.kind:<17} {r.leaf_name:>9} {r.time_us:>9.1f} "
                f"{100 * r.time_us / total:>5.1f}%"
            )
        lines.append(f"{'invoke overhead':<44} {'':<17} {'':>9} {self.overhead_us:>9.1f}")
        lines.append(f"{'total':<44} {'':<17} {'':>9} {total:>9.1f}  = {self.total_ms:.3f} ms")
        return "\n".join(lines)


def predict_latency(
    model: keras.Model, tree: TimingTree | str | os.PathLike, statistic: str = "min"
) -> LatencyReport:
    """Predicts the LiteRT latency of `model` (batch 1) on the device `tree` was profiled on.

    Each kernel is predicted by its kind's tree as a single-kernel model, then corrected for
    running inside a model (weights no longer hot in cache: the tree's composition term,
    fitted on random networks timed whole; `tree.explain()` prints it); the invoke overhead
    counts once. Nested models are inlined and a shared layer counts once per call. A gated
    (`latency_aware`) model is predicted as `strip(model)`, its current hard structure.

    Args:
        model: a functional or Sequential Keras model.
        tree: a `TimingTree`, or the path of a saved one.
        statistic: "min", the minimum over invokes (the uncontended time, which reproduces
            best and which compression targets use), or "median", the typical invoke on a
            machine doing other work too: compare this one with `benchmark_model`'s average.
            A tree without a composition term predicts the minimum either way.

    Raises:
        UnsupportedLayerError: a layer has no kernel model (names it and the fix).
        MissingKindError: the tree was not profiled on a kernel kind the model needs.

    Example:
        >>> report = fdi_keras.predict_latency(model, "profiles/this_cpu/timing_tree.json")
        >>> report.total_ms, print(report)
    """
    if not isinstance(tree, TimingTree):
        tree = TimingTree.load(tree)
    graph = trace(model)
    for layer in graph.layers:
        rule = registered(layer)
        if rule is not None and rule.predict_as is not None:
            graph = trace(rule.predict_as(model))
            break
    kernels = model_kernels(graph)
    specs = [tree.profiled(k.spec) for k in kernels]
    model_bytes = weight_bytes(specs)
    rows = []
    for kernel, spec in zip(kernels, specs):
        leaf = tree.leaf(spec)[0]
        time_us = tree.kernel_in_model(spec, statistic, model_bytes)
        timed_by = tree.timed_spec(spec).kind
        rows.append(KernelRow(kernel.layers, spec.kind, dict(spec.dims), leaf, time_us, timed_by))
    return LatencyReport(rows, tree.invoke_overhead(statistic), statistic)
