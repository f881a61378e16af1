"""Figures of predictions and measurements: a model's per-kernel times, a kind's staircase,
the accuracy/latency Pareto front of compression runs.

Each function returns a `matplotlib.figure.Figure` (not registered with pyplot, so nothing is
shown or kept open behind your back: `fig.savefig(path)`, or let a notebook display it), or
draws into an `ax` you pass and returns its figure. matplotlib is the `plots` extra:
`pip install fdi_keras[plots]`.

Example:
    >>> report = fdi_keras.predict_latency(model, tree)
    >>> report.plot(measured=fdi_keras.export.measure_latency(to_tflite(model))).savefig("k.png")
    >>> staircase_figure(tree, read_rows("profile.jsonl"), "conv2d", sweep="cout")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fdi_keras.specs import KINDS, LayerSpec
from fdi_keras.timing.tree import rows_to_dataset

LABEL_CHARS = 40


def _figure(ax, size):
    """(figure, axes): a new figure of `size` inches, or `ax`'s own."""
    if ax is not None:
        return ax.figure, ax
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("fdi_keras.plots needs matplotlib: pip install fdi_keras[plots]") from e
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def _label(layers) -> str:
    name = "+".join(layers)
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 3] + "..."


def _measured_per_row(rows, measured) -> np.ndarray:
    """Measured microseconds aligned with `rows` (NaN where a row has none)."""
    if isinstance(measured, Mapping):
        out = np.full(len(rows), np.nan)
        used = set()
        for i, r in enumerate(rows):
            for key in ("+".join(r.layers), *r.layers):
                if key in measured:
                    out[i] = float(measured[key])
                    used.add(key)
                    break
        unknown = sorted(set(measured) - used)
        if unknown:
            raise ValueError(
                "measured_us names kernels the report does not have; keys are a row's layers "
                f"joined by '+' (as in print(report)) or one of its layers. Received unknown "
                f"keys: {unknown}"
            )
        return out
    values = np.asarray(measured, dtype=float)
    if values.shape != (len(rows),):
        raise ValueError(
            f"measured_us as a sequence needs one time per kernel row ({len(rows)}). Received: "
            f"{values.shape[0] if values.ndim == 1 else values.shape} values"
        )
    return values


def latency_report_figure(report, measured_us=None, ax=None):
    """Horizontal bars of each kernel's predicted time, with its measured time next to it.

    Args:
        report: a `LatencyReport` (`fdi_keras.predict_latency(model, tree)`).
        measured_us: optional measurements in microseconds: per kernel, a dict keyed by a
            row's layers joined by '+' (or one of its layers), or a sequence aligned with
            `report.rows`, drawn as a second bar per kernel; or the whole model's time, a
            float or a `Timing` (its `min_us` or `median_us`, the report's statistic), written
            under the predicted total in the title with the prediction's error.
        ax: a matplotlib Axes to draw into (default: a new figure).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: per-kernel measurements that do not match the report's rows.
    """
    rows = report.rows
    fig, ax = _figure(ax, (7.5, max(2.5, 0.32 * len(rows) + 1.4)))
    y = np.arange(len(rows))
    predicted = np.array([r.time_us for r in rows], dtype=float)
    per_row = None
    total = None
    if measured_us is not None:
        if hasattr(measured_us, "min_us"):
            total = float(getattr(measured_us, f"{report.statistic}_us"))
        elif np.isscalar(measured_us):
            total = float(measured_us)
        else:
            per_row = _measured_per_row(rows, measured_us)
    height = 0.8 if per_row is None else 0.4
    offset = 0.0 if per_row is None else height / 2
    ax.barh(y - offset, predicted, height, color="tab:blue", label="predicted")
    if per_row is not None:
        ax.barh(y + offset, per_row, height, color="tab:orange", label="measured")
        ax.legend(loc="lower right")
    ax.set_yticks(y, [_label(r.layers) for r in rows], fontsize=8)
    ax.invert_yaxis()  # the first kernel on top, as in print(report)
    ax.set_xlabel("time per kernel (us)")
    ax.grid(axis="x", alpha=0.3)
    title = (
        f"predicted {report.total_ms:.3f} ms ({len(rows)} kernels + "
        f"{report.overhead_us:.0f} us invoke overhead)"
    )
    if per_row is not None and not np.isnan(per_row).any():
        title += f"; measured kernels {per_row.sum() / 1000:.3f} ms"
    if total is not None:
        title += f"\nmeasured {total / 1000:.3f} ms ({100 * (report.total_us / total - 1):+.0f}%)"
    ax.set_title(title, fontsize=9)
    return fig


def _sweeps(specs: list[LayerSpec], dim=None, base=None) -> dict:
    """{(dim, fixed part): indices} of the specs equal in everything but `dim`, with at least
    three values of it; `base` keeps those whose other dims match it."""
    out: dict = {}
    for d in [dim] if dim else list(specs[0].dims):
        for i, s in enumerate(specs):
            rest = tuple((k, v) for k, v in s.dims.items() if k != d)
            if base and any(dict(rest).get(k, v) != v for k, v in base.items()):
                continue
            if base and d in base:
                continue
            key = (d, rest, tuple(sorted(s.attrs.items())), s.dtype, s.threads)
            out.setdefault(key, []).append(i)
    return {k: v for k, v in out.items() if len({specs[i].dims[k[0]] for i in v}) >= 3}


def staircase_figure(tree, rows, kind, sweep=None, others=None, ax=None, reference=None):
    """Measured time of one sweep (profile rows equal but for one dim, e.g. output channels)
    against that dim, with the tree's prediction at every value in between.

    Args:
        tree: a fitted `TimingTree` that knows `kind`.
        rows: profile rows (dicts as in `profile.jsonl`: `spec`, `time_us`, `status`), e.g.
            `fdi_keras.profiling.read_rows(path)`; failed rows are left out and the drift of
            the calibration kernel is divided out, as for fitting (`rows_to_dataset`).
        kind: the kernel kind, e.g. "conv2d".
        sweep: which sweep: None, the longest over any dim; a dim name ("cout"), the longest
            over that dim; or a dict of dims the sweep's other dims must equal
            (`{"cin": 32, "h": 28}`).
        others: optional {label: model with `predict(specs)`} drawn dashed next to the tree
            (e.g. `{"FLOPs-linear": FlopsLinear().fit(...)}`).
        ax: a matplotlib Axes to draw into (default: a new figure).
        reference: the calibration time (us) to draw the measured times at (`rows_to_dataset`);
            rows of another run than the tree's profile need the profile's.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: no sweep of `kind` (with `sweep`'s constraint) in the rows; the message
            lists the kinds the rows have.
    """
    data = rows_to_dataset(rows, reference=reference)
    dim = sweep if isinstance(sweep, str) else None
    base = dict(sweep) if isinstance(sweep, Mapping) else None
    if sweep is not None and dim is None and base is None:
        raise TypeError(f"sweep must be None, a dim name or a dict of dims. Received: {sweep!r}")
    dims = KINDS[kind][0] if kind in KINDS else ()
    unknown = sorted({dim} - set(dims) if dim else set(base or ()) - set(dims))
    if unknown:
        raise ValueError(
            f"sweep names dims a {kind} kernel does not have: {unknown}; its dims are "
            f"{list(dims)}. Received: sweep={sweep!r}"
        )
    specs, times = data.get(kind, ([], np.array([])))
    groups = _sweeps(specs, dim, base) if specs else {}
    if not groups:
        raise ValueError(
            f"No sweep of {kind!r} in the rows (specs equal but for one dim, at least three "
            f"values{'' if sweep is None else f', matching sweep={sweep!r}'}). Kinds in the "
            f"rows: {sorted(data)}. Received: {len(specs)} {kind} rows"
        )
    (d, rest, _, _, _), members = max(groups.items(), key=lambda kv: len(kv[1]))
    by_value: dict[int, list[float]] = {}
    for i in members:
        by_value.setdefault(specs[i].dims[d], []).append(float(times[i]))
    x = np.array(sorted(by_value))
    measured = np.array([np.median(by_value[v]) for v in x])
    template = specs[members[0]]
    grid = np.arange(x[0], x[-1] + 1)
    grid_specs = [template.replace(**{d: int(v)}) for v in grid]

    fig, ax = _figure(ax, (6.5, 4.2))
    ax.plot(x, measured, "k.", label="measured")
    steps = dict(drawstyle="steps-mid")  # a prediction per integer value: stairs, not ramps
    ax.plot(grid, tree.predict(grid_specs), "-", color="tab:blue", label="TimingTree", **steps)
    for (label, model), style in zip((others or {}).items(), ("--", "-.", ":")):
        ax.plot(grid, model.predict(grid_specs), style, label=label, **steps)
    fixed = " ".join(f"{k}={v}" for k, v in rest)
    attrs = " ".join(f"{k}={v}" for k, v in sorted(template.attrs.items()))
    ax.set_title(f"{kind}: {fixed} {attrs}".strip(), fontsize=9)
    ax.set(xlabel=d, ylabel="time (us)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _field(run, name, default=None):
    if isinstance(run, Mapping):
        return run.get(name, default)
    return getattr(run, name, default)


def pareto_front(latency: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """Indices of the runs no other run beats (faster and at least as accurate, or as fast and
    more accurate), ordered by latency."""
    order = sorted(range(len(latency)), key=lambda i: (latency[i], -accuracy[i]))
    front, best = [], -np.inf
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return np.array(front, dtype=int)


def pareto_figure(runs, title=None, ax=None):
    """Accuracy against measured latency of compression runs, a colour and a Pareto front per
    method; where a run has its prediction, a hollow marker at the predicted latency joined to
    the measured one.

    Args:
        runs: dicts or objects with `method`, `accuracy`, `latency_ms` (measured) and
            optionally `predicted_ms`.
        title: the axes' title.
        ax: a matplotlib Axes to draw into (default: a new figure).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: a run without `method`, `accuracy` or `latency_ms` (names which run).
    """
    by_method: dict[str, list] = {}
    for i, run in enumerate(runs):
        values = {k: _field(run, k) for k in ("method", "accuracy", "latency_ms")}
        missing = [k for k, v in values.items() if v is None]
        if missing:
            raise ValueError(
                f"Each run needs method, accuracy and latency_ms. Run {i} lacks {missing}. "
                f"Received: {run!r}"
            )
        by_method.setdefault(str(values["method"]), []).append(run)
    fig, ax = _figure(ax, (6.5, 4.5))
    any_predicted = False
    for method, group in by_method.items():
        ms = np.array([float(_field(r, "latency_ms")) for r in group])
        acc = np.array([float(_field(r, "accuracy")) for r in group])
        points = ax.plot(ms, acc, "o", label=method)[0]
        color = points.get_color()
        front = pareto_front(ms, acc)
        ax.plot(
            ms[front],
            acc[front],
            "-",
            drawstyle="steps-post",
            color=color,
            alpha=0.6,
            label=f"_front {method}",  # "_": not in the legend
        )
        for m, p, a in zip(ms, [_field(r, "predicted_ms") for r in group], acc):
            if p is not None:
                ax.plot([m, p], [a, a], ":", color=color, linewidth=1, label="_")
                ax.plot([p], [a], "o", mfc="none", color=color, label=f"_predicted {method}")
                any_predicted = True
    if any_predicted:
        ax.plot([], [], "o", mfc="none", color="gray", label="predicted (hollow)")
    ax.set(xlabel="latency (ms)", ylabel="accuracy")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
