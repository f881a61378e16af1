"""Profile a device's kernels with LiteRT and fit its timing tree.

    fdi-profile --backend=local --kinds=conv2d,dense,depthwise_conv2d \
        --num_configs=300 --threads=1 --out_dir=profiles/this_cpu

Writes OUT_DIR/profile.jsonl (resumable: rerun the same command after an interruption),
OUT_DIR/timing_tree.json and OUT_DIR/report.txt, and prints the report. The tree is fitted on
every row of OUT_DIR/profile.jsonl, so profiling more kinds into the same OUT_DIR keeps the
kinds profiled before; rows of another device, runtime, dtype or thread count are refused.
One run at a time holds OUT_DIR (OUT_DIR/profile.lock). A device that stops answering is
retried with growing waits (--retries, --retry_delay), then the run stops: rerun to resume.
"""

from __future__ import annotations

import os

from absl import app, flags

from fdi_keras.profiling import (
    LocalRunner,
    ProfileLock,
    RetryPolicy,
    read_rows,
    run_profile,
    sample_all,
)
from fdi_keras.profiling.conversion_pool import DEFAULT_TIMEOUT_S
from fdi_keras.profiling.fitting import (
    define_fit_flags,
    fit_options,
    fit_profile,
    write_tree,
)
from fdi_keras.specs import DTYPES, KINDS
from fdi_keras.timing import TimingTree

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the tool's flags (called by `entry`, so that importing `run` defines none)."""
    flags.DEFINE_enum("backend", "local", ["local", "adb", "ssh"], "Where the kernels run.")
    flags.DEFINE_list(
        "kinds",
        ["conv2d", "dense", "depthwise_conv2d"],
        f"Kernel kinds to profile, of: {', '.join(KINDS)}.",
    )
    flags.DEFINE_integer(
        "num_configs",
        None,
        "Configurations per kind (default: fdi_keras.profiling.sampling.DEFAULT_COUNTS, more "
        "for convolutions than for element-wise kinds).",
    )
    flags.DEFINE_integer("threads", 1, "Runtime threads.")
    flags.DEFINE_enum(
        "dtype", "float32", list(DTYPES), "Kernel numeric type (int8: post-training quantization)."
    )
    flags.DEFINE_string("out_dir", "profiles/this_cpu", "Output directory (resumes if it exists).")
    flags.DEFINE_integer("seed", 0, "Sampling seed.")
    flags.DEFINE_list("serials", [], "adb: device serials, profiled in parallel, one shard each.")
    flags.DEFINE_string(
        "benchmark_binary",
        "/data/local/tmp/benchmark_model",
        "adb: path of LiteRT's benchmark_model on the phone.",
    )
    flags.DEFINE_list("hosts", [], "ssh: hosts (user@host) with python3 and ai_edge_litert.")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")
    flags.DEFINE_integer(
        "retries", RetryPolicy.retries, "Retries of a device that stops answering.", lower_bound=0
    )
    flags.DEFINE_float(
        "retry_delay",
        RetryPolicy.delay,
        "Seconds before the first retry; each next wait doubles, up to 30 s.",
        lower_bound=0,
    )
    flags.DEFINE_float(
        "convert_timeout",
        DEFAULT_TIMEOUT_S,
        "Seconds a batch of configurations, then each one alone, may take to convert; one "
        "that hangs is recorded as failed and the profile goes on.",
        lower_bound=1,
    )
    define_fit_flags()


def make_runners(backend: str, serials=(), hosts=(), benchmark_binary=None) -> list:
    """The runners of a backend: one local runner, or one per phone / board."""
    if backend == "local":
        return [LocalRunner()]
    from fdi_keras.profiling import remote

    if backend == "adb":
        if not serials:
            raise ValueError(
                "--backend=adb needs --serials=SERIAL[,SERIAL...] (see `adb devices`)."
            )
        return [remote.AdbRunner(s, benchmark_binary=benchmark_binary) for s in serials]
    if not hosts:
        raise ValueError("--backend=ssh needs --hosts=user@host[,...].")
    return [remote.SshRunner(h) for h in hosts]


def run(
    runners,
    kinds,
    num_configs,
    out_dir,
    threads=1,
    dtype="float32",
    seed=0,
    progress=True,
    retry=None,
    tree_options=None,
    drift_correction=True,
    conversion_timeout_s=DEFAULT_TIMEOUT_S,
) -> tuple[TimingTree, str]:
    """Profiles `kinds` into `out_dir`, fits the tree on every row of its store and writes
    timing_tree.json and report.txt; returns (tree, report).

    Raises:
        ProfileLockedError: another run is using `out_dir`.
        MixedProfileError: `out_dir` holds rows of another device, runtime, dtype or threads.
        DeviceUnavailableError: a device stayed unreachable through `retry`; rerun to resume.
    """
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"Unknown kinds {unknown}. Supported kinds: {', '.join(KINDS)}.")
    specs = sample_all(kinds, num_configs, seed, dtype, threads)
    os.makedirs(out_dir, exist_ok=True)
    with ProfileLock(out_dir):
        result = run_profile(
            runners,
            specs,
            out_dir,
            progress=progress,
            retry=retry,
            conversion_timeout_s=conversion_timeout_s,
        )
        # Every row of the store, not only this run's: kinds profiled before stay in the tree.
        rows = read_rows(result.path)
        tree, report = fit_profile(
            rows, tree_options, drift_correction, result.seconds, result.measured
        )
        write_tree(
            tree,
            report,
            os.path.join(out_dir, "timing_tree.json"),
            os.path.join(out_dir, "report.txt"),
        )
    return tree, report


def main(argv):
    del argv
    runners = make_runners(FLAGS.backend, FLAGS.serials, FLAGS.hosts, FLAGS.benchmark_binary)
    tree_options, drift_correction = fit_options(FLAGS)
    _, report = run(
        runners,
        FLAGS.kinds,
        FLAGS.num_configs,
        FLAGS.out_dir,
        FLAGS.threads,
        FLAGS.dtype,
        FLAGS.seed,
        FLAGS.progress,
        RetryPolicy(FLAGS.retries, FLAGS.retry_delay, max(30.0, FLAGS.retry_delay)),
        tree_options,
        drift_correction,
        FLAGS.convert_timeout,
    )
    print(report)
    print(f"Wrote {FLAGS.out_dir}/profile.jsonl, timing_tree.json, report.txt")


def entry():
    """The `fdi-profile` console script."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    entry()
