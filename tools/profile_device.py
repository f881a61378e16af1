"""Profile a device's kernels with LiteRT and fit its timing tree.

    python tools/profile_device.py --backend=local --kinds=conv2d,dense,depthwise_conv2d \
        --num_configs=300 --threads=1 --out_dir=profiles/this_cpu

Writes OUT_DIR/profile.jsonl (resumable: rerun the same command after an interruption),
OUT_DIR/timing_tree.json and OUT_DIR/report.txt, and prints the report.
"""

from __future__ import annotations

import os

from absl import app, flags

from fdi_keras.atomic import atomic_write_bytes
from fdi_keras.profiling import LocalRunner, run_profile, sample_all
from fdi_keras.specs import DTYPES, KINDS
from fdi_keras.timing import TimingTree
from fdi_keras.timing.report import profile_report

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the tool's flags (only when run as a tool, so that tests can import several
    tools' `run` functions into one process)."""
    flags.DEFINE_enum("backend", "local", ["local", "adb", "ssh"], "Where the kernels run.")
    flags.DEFINE_list(
        "kinds",
        ["conv2d", "dense", "depthwise_conv2d"],
        f"Kernel kinds to profile, of: {', '.join(KINDS)}.",
    )
    flags.DEFINE_integer("num_configs", 300, "Configurations per kind.")
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
    runners, kinds, num_configs, out_dir, threads=1, dtype="float32", seed=0, progress=True
) -> tuple[TimingTree, str]:
    """Profiles, fits the tree and writes the three output files; returns (tree, report)."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"Unknown kinds {unknown}. Supported kinds: {', '.join(KINDS)}.")
    specs = sample_all(kinds, num_configs, seed, dtype, threads)
    result = run_profile(runners, specs, out_dir, progress=progress)
    tree = TimingTree().fit_rows(result.rows)
    tree.metadata_["profiling_seconds"] = result.seconds
    tree.save(os.path.join(out_dir, "timing_tree.json"))
    report = profile_report(result.rows, tree, result.seconds)
    atomic_write_bytes(os.path.join(out_dir, "report.txt"), report.encode())
    return tree, report


def main(argv):
    del argv
    runners = make_runners(FLAGS.backend, FLAGS.serials, FLAGS.hosts, FLAGS.benchmark_binary)
    _, report = run(
        runners,
        FLAGS.kinds,
        FLAGS.num_configs,
        FLAGS.out_dir,
        FLAGS.threads,
        FLAGS.dtype,
        FLAGS.seed,
        FLAGS.progress,
    )
    print(report)
    print(f"Wrote {FLAGS.out_dir}/profile.jsonl, timing_tree.json, report.txt")


if __name__ == "__main__":
    define_flags()
    app.run(main)
