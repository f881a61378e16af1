"""Shared by the benchmark scripts: the machine/version header and RESULTS.md sections."""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import time

import numpy as np

from fdi_keras.atomic import atomic_write_bytes
from fdi_keras.profiling.convert import CALIBRATION_SPEC, convert_spec
from fdi_keras.profiling.runners import cpu_model
from fdi_keras.profiling.store import read_rows
from fdi_keras.timing.tree import calibration_reference

# Configurations per kernel kind in the timing benchmark's profile of this CPU, which the
# compression and rebirth benchmarks extend with the kinds their models need.
COUNTS = {
    "conv2d": 1500,
    "depthwise_conv2d": 1000,
    "dense": 600,
    "pool2d": 300,
    "global_pool": 200,
    "add": 300,
    "softmax": 100,
}
# A calibration time within this fraction of the profile's: the same speed (the VM's noise).
SAME_SPEED = 0.02
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def environment() -> str:
    """One line: date, machine, CPU, and the versions that decide the timings."""
    import ai_edge_litert
    import keras
    import numpy
    import tensorflow

    return (
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {platform.node()}, {cpu_model()}, "
        f"{os.cpu_count()} cores; Python {platform.python_version()}, TensorFlow "
        f"{tensorflow.__version__}, Keras {keras.__version__}, ai_edge_litert "
        f"{ai_edge_litert.__version__}, NumPy {numpy.__version__}"
    )


def machine_slug() -> str:
    """This machine's CPU as a file-name part (`intel_xeon_processor`, `amd_epyc`): plots and
    rule files sit beside RESULTS.md once per CPU, as its sections do."""
    words = re.sub(r"\(.*?\)", " ", cpu_model()).lower().split()
    return "_".join(filter(None, (re.sub(r"[^a-z0-9]", "", w) for w in words)))


def write_section(name: str, body: str) -> None:
    """Replaces (or appends) the section `name` of RESULTS.md measured on this machine's CPU,
    leaving the others alone: the same benchmark run on another CPU adds a section (its
    heading, the body's first line, names the CPU) instead of overwriting that CPU's figures.
    """
    machine = cpu_model()
    begin, end = f"<!-- {name}@{machine}:begin -->", f"<!-- {name}@{machine}:end -->"
    heading, _, rest = body.partition("\n")
    if heading.startswith("#"):
        body = f"{heading}, {machine}\n{rest}"
    text = open(RESULTS).read() if os.path.exists(RESULTS) else "# Benchmark results\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block
    )
    atomic_write_bytes(RESULTS, (text.rstrip() + "\n").encode())


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def calibration_model(dtype: str = "float32") -> bytes:
    """The profiler's calibration kernel (timed with every batch of a profile) as a TFLite
    flatbuffer: timed next to a benchmark's models, it says how fast the machine runs now."""
    return convert_spec(dataclasses.replace(CALIBRATION_SPEC, dtype=dtype))


def require_float32_single_thread(tree, tree_path: str) -> None:
    """Raises ValueError unless `tree` (loaded from `tree_path`) was profiled for float32
    kernels on 1 thread: what a benchmark that converts and times float32 models on 1 thread,
    beside the float32 calibration kernel, can compare its predictions with."""
    if (tree.dtype, tree.threads) != ("float32", 1):
        raise ValueError(
            f"{tree_path} was profiled for {tree.dtype} kernels on {tree.threads} thread(s); this "
            "benchmark converts and times float32 models on 1 thread. Pass a float32, "
            "1-thread tree (profiles/this_cpu/timing_tree.json from `make profile`)."
        )


def machine_speed(profile_dir: str, calibration_min_us: float) -> str:
    """One sentence: this run's calibration-kernel time against its median over the profile
    in `profile_dir`. On a shared VM the same code runs tens of percent slower for hours at a
    time, which every time measured in the run shares and no prediction from the profile
    knows; this says by how much, next to the figures it moves."""
    reference = calibration_reference(read_rows(os.path.join(profile_dir, "profile.jsonl")))
    if not np.isfinite(reference):
        return "Machine speed: the profile has no calibration times to compare with."
    change = calibration_min_us / reference - 1
    verdict = (
        f"the machine ran as fast as when it was profiled (within {100 * SAME_SPEED:.0f}%)"
        if abs(change) < SAME_SPEED
        else f"times measured here are {100 * abs(change):.0f}% "
        f"{'slower' if change > 0 else 'faster'} than the profile's machine ran, which no "
        "prediction from it knows"
    )
    return (
        f"Machine speed: the profiler's calibration kernel took {calibration_min_us:.1f} us in "
        f"this run, {100 * change:+.1f}% against its median over `{profile_dir}` "
        f"({reference:.1f} us): {verdict}."
    )
