"""From a profile store to a timing tree: every row of one setup, never a mix of setups.

A tree models one device with one runtime, dtype and thread count. `check_one_setup` refuses
rows of several setups with `MixedProfileError` rather than fitting (or silently dropping)
them: times from another phone or thread count are not noise to average over, and which rows
the user meant to keep is theirs to say (one `--out_dir`, or one `fit_tree --profiles` set, per
setup). Rows of identical devices profiled in parallel (`--serials=A,B`) differ only in the
per-unit fields (`serial`, `host`, `node`) and are one setup.
"""

from __future__ import annotations

import json
import os
from collections import Counter

from fdi_keras.atomic import atomic_write_bytes
from fdi_keras.errors import MixedProfileError
from fdi_keras.profiling.networks import network_kernels
from fdi_keras.timing import TimingTree
from fdi_keras.timing.report import profile_report

# Fields of a runner's description that name one unit of a device model, not the model.
PER_UNIT_FIELDS = ("serial", "host", "node")


def setup_of(row: dict) -> dict:
    """What a row's time depends on besides its configuration: device, runtime, dtype, threads."""
    device = {k: v for k, v in (row.get("device") or {}).items() if k not in PER_UNIT_FIELDS}
    return {"device": device, "dtype": row.get("dtype"), "threads": row.get("threads")}


def check_one_setup(rows: list[dict], sources: list[str] | None = None) -> dict | None:
    """The one setup of `rows` (None if there are no rows).

    Args:
        rows: profile rows.
        sources: where each row came from (e.g. its file), for the error message.

    Raises:
        MixedProfileError: the rows come from several setups; names each with its row count
            and sources.
    """
    counts, where = Counter(), {}
    for i, row in enumerate(rows):
        setup = json.dumps(setup_of(row), sort_keys=True)
        counts[setup] += 1
        if sources is not None:
            where.setdefault(setup, set()).add(sources[i])
    if len(counts) <= 1:
        return json.loads(next(iter(counts))) if counts else None
    described = [
        f"  {n} rows of {setup}" + (f" (from {', '.join(sorted(where[setup]))})" if where else "")
        for setup, n in counts.most_common()
    ]
    raise MixedProfileError(
        f"These profile rows come from {len(counts)} different setups, and a timing tree "
        "models one device, runtime, dtype and thread count:\n"
        + "\n".join(described)
        + "\nProfile each setup into its own --out_dir, and fit each from its own profiles."
    )


def fit_profile(
    rows: list[dict],
    tree_options: dict | None = None,
    drift_correction: bool = True,
    seconds: float | None = None,
    measured: int | None = None,
) -> tuple[TimingTree, str]:
    """Fits a `TimingTree` on every row and writes nothing; returns (tree, report).

    Args:
        rows: profile rows of one setup (checked).
        tree_options: `TimingTree` arguments (max_depth, min_samples_leaf, ...).
        drift_correction: divide each row by its batch's calibration-kernel time.
        seconds: how long this profiling run took, for the report.
        measured: how many rows this run measured, for the report.

    Raises:
        MixedProfileError: the rows come from several setups.
        ValueError: no row was timed successfully.
    """
    check_one_setup(rows)
    tree = TimingTree(**(tree_options or {})).fit_rows(
        rows, drift_correction=drift_correction, network_kernels=network_kernels
    )
    if seconds is not None:
        tree.metadata_["profiling_seconds"] = seconds
    return tree, profile_report(rows, tree, seconds, measured)


def write_tree(tree: TimingTree, report: str, tree_path: str, report_path: str) -> None:
    """Saves the tree and its report (each atomically)."""
    for path in (tree_path, report_path):
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    tree.save(tree_path)
    atomic_write_bytes(report_path, report.encode())


def define_fit_flags(flag_values=None) -> None:
    """Defines the fitting flags that `profile_device` and `fit_tree` share."""
    from absl import flags

    fv = flag_values if flag_values is not None else flags.FLAGS
    defaults = TimingTree()
    flags.DEFINE_integer(
        "max_depth", defaults.max_depth, "Depth limit of each kind's tree.", flag_values=fv
    )
    flags.DEFINE_integer(
        "min_samples_leaf", defaults.min_samples_leaf, "Fewest rows in a leaf.", flag_values=fv
    )
    flags.DEFINE_float(
        "validation_fraction",
        defaults.validation_fraction,
        "Share of rows each cross-validation fold holds out (1 / folds), to choose the tile "
        "and the pruning, and whether last-tile splits earn their place; 0: no pruning.",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "drift_correction",
        True,
        "Divide each row by its batch's calibration-kernel time (machine drift).",
        flag_values=fv,
    )


def fit_options(flag_values) -> tuple[dict, bool]:
    """(TimingTree arguments, drift_correction) from the flags of `define_fit_flags`."""
    options = {
        "max_depth": flag_values.max_depth,
        "min_samples_leaf": flag_values.min_samples_leaf,
        "validation_fraction": flag_values.validation_fraction,
    }
    return options, flag_values.drift_correction
