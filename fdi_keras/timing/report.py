"""The human-readable report of a profile and its tree (written next to timing_tree.json)."""

from __future__ import annotations

import collections
import zlib

import numpy as np

from fdi_keras.timing.composition import STATISTICS
from fdi_keras.timing.evaluate import accuracy, format_accuracy
from fdi_keras.timing.tree import TimingTree, held_out_sweeps, rows_to_dataset


def holdout_accuracy(rows: list[dict], tree_factory=TimingTree, fraction=0.2, seed=1) -> dict:
    """Per kind, accuracy of a tree fitted without about `fraction` of the rows, on them; whole
    sweeps are held out (`held_out_sweeps`), never near-copies of fitted rows."""
    data = rows_to_dataset(rows)
    specs_tr, y_tr, held = [], [], {}
    for kind, (specs, y) in data.items():
        # A stream per kind: rows added to one kind leave the others' splits as they were.
        rng = np.random.default_rng([seed, zlib.crc32(kind.encode())])
        is_held = held_out_sweeps(specs, fraction, rng) & (len(y) >= 20)  # none of few rows
        held[kind] = ([s for s, h in zip(specs, is_held) if h], y[is_held])
        specs_tr += [s for s, h in zip(specs, is_held) if not h]
        y_tr += list(y[~is_held])
    tree = tree_factory().fit(specs_tr, y_tr)
    return {kind: accuracy(y, tree.predict(s)) for kind, (s, y) in held.items() if len(y)}


def _this_run(seconds, measured) -> str:
    if seconds is None:
        return ""
    if measured is None:
        return f"  profiling time: {seconds / 60:.1f} min"
    if measured == 0:
        return "  this run: nothing left to measure (every configuration was in the store)"
    return f"  this run: {measured} measured in {seconds / 60:.1f} min"


def profile_report(
    rows: list[dict], tree: TimingTree, seconds: float | None = None, measured: int | None = None
) -> str:
    """Rows and failures per kind, held-out accuracy per kind, and the tree's rules; with
    `seconds` (and `measured`), how long this run took and how many rows it measured (a
    resumed run measures only what the store lacked)."""
    counts = collections.Counter((r["spec"]["kind"], r["status"]) for r in rows)
    kinds = sorted({k for k, _ in counts})
    meta = tree.metadata_
    lines = [
        "# fdi_keras device profile",
        "",
        f"device: {meta.get('device')}",
        f"threads: {meta.get('threads')}  dtype: "
        f"{meta.get('dtype')}  rows: {len(rows)}" + _this_run(seconds, measured),
        "",
    ]
    for kind in kinds:
        lines.append(f"{kind:<18} {counts[kind, 'ok']:>5} timed, {counts[kind, 'error']:>3} failed")
    failures = [r for r in rows if r["status"] == "error"][:5]
    lines += [
        f"  failed: {r['spec']['kind']} {r['spec']['dims']}: {r['error'][:160]}" for r in failures
    ]
    lines += [
        "",
        "Held-out accuracy (tree refitted without 20% of the rows, whole sweeps, scored on them):",
    ]
    lines += [format_accuracy(k, s) for k, s in holdout_accuracy(rows).items()]
    overheads = ", ".join(f"{s} {tree.invoke_overhead(s):.2f} us" for s in STATISTICS)
    lines += ["", f"Per-invoke overhead of a model: {overheads}", "", "Rules:", tree.explain()]
    return "\n".join(lines) + "\n"
