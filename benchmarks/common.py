"""Shared by the benchmark scripts: the machine/version header and RESULTS.md sections."""

from __future__ import annotations

import os
import platform
import re
import time

from fdi_keras.atomic import atomic_write_bytes
from fdi_keras.profiling.runners import cpu_model

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


def write_section(name: str, body: str) -> None:
    """Replaces (or appends) the section `name` of RESULTS.md, leaving the others alone."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
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
