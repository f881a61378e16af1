"""Refit a timing tree from one or more profile stores, without measuring anything.

    fdi-fit-tree --profiles=profiles/this_cpu/profile.jsonl \
        --out=profiles/this_cpu/timing_tree.json
    fdi-fit-tree --profiles=run1/profile.jsonl,run2/profile.jsonl --out=tree.json \
        --min_samples_leaf=30

Fits on every row of every file (a configuration stored in several files counts once: the
first file's row), writes the tree to --out and the report to --report (by default next to
--out, as report.txt when --out is a profile directory's timing_tree.json, else as
<out>.report.txt), and prints the report. All rows must come from one device, runtime, dtype
and thread count; profiles of several setups are refused, naming them.
"""

from __future__ import annotations

import os
import warnings

from absl import app, flags

from fdi_keras.profiling import check_one_setup, fit_profile, read_rows
from fdi_keras.profiling.fitting import define_fit_flags, fit_options, write_tree
from fdi_keras.profiling.store import torn_tail_bytes
from fdi_keras.timing import TimingTree

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the tool's flags (called by `entry`, so that importing `run` defines none)."""
    flags.DEFINE_list("profiles", None, "profile.jsonl files to fit on, comma-separated.")
    flags.DEFINE_string("out", None, "Where to write the timing tree (.json).")
    flags.DEFINE_string("report", None, "Where to write the report (default: next to --out).")
    define_fit_flags()
    flags.mark_flags_as_required(["profiles", "out"])


def default_report_path(out: str) -> str:
    """report.txt beside a profile directory's timing_tree.json, else <out>.report.txt."""
    if os.path.basename(out) == "timing_tree.json":
        return os.path.join(os.path.dirname(out), "report.txt")
    return os.path.splitext(out)[0] + ".report.txt"


def load_profiles(paths: list[str]) -> list[dict]:
    """Every row of the files, each configuration once (the first file's row wins).

    Raises:
        ValueError: no file given, a file is missing, or a line is corrupt.
        MixedProfileError: the rows come from several setups.
    """
    if not paths:
        raise ValueError("fit_tree needs at least one profile file. Received: profiles=[]")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ValueError(
            f"No such profile file: {', '.join(missing)}. Pass the profile.jsonl files that "
            "fdi-profile (tools/profile_device.py) wrote (OUT_DIR/profile.jsonl)."
        )
    rows, sources, seen = [], [], set()
    for path in paths:
        if torn_tail_bytes(path):
            warnings.warn(
                f"{path} ends with a torn line (a run killed mid-write, or one writing now); "
                "fitting without it.",
                stacklevel=2,
            )
        for row in read_rows(path):
            if row["key"] not in seen:
                seen.add(row["key"])
                rows.append(row)
                sources.append(path)
    check_one_setup(rows, sources)
    return rows


def run(
    profiles: list[str],
    out: str,
    report_path: str | None = None,
    tree_options: dict | None = None,
    drift_correction: bool = True,
) -> tuple[TimingTree, str]:
    """Fits a tree on every row of `profiles`, writes it to `out` and the report to
    `report_path` (default: `default_report_path(out)`); returns (tree, report)."""
    rows = load_profiles(profiles)
    tree, report = fit_profile(rows, tree_options, drift_correction)
    tree.metadata_["profiles"] = list(profiles)
    write_tree(tree, report, out, report_path or default_report_path(out))
    return tree, report


def main(argv):
    del argv
    tree_options, drift_correction = fit_options(FLAGS)
    report_path = FLAGS.report or default_report_path(FLAGS.out)
    _, report = run(FLAGS.profiles, FLAGS.out, report_path, tree_options, drift_correction)
    print(report)
    print(f"Wrote {FLAGS.out} and {report_path}")


def entry():
    """The `fdi-fit-tree` console script."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    entry()
