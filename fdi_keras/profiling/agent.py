"""Timing agent for a Linux board: times TFLite files with the local protocol, prints JSON lines.

`SshRunner` copies this file and `timer.py` into one directory on the board and runs

    python3 agent.py --threads=1 model_0.tflite model_1.tflite ...

which prints one JSON object per model, in argument order:

    {"index": 0, "model": "model_0.tflite", "median_us": 41.2, "spread": 0.01, "rounds": 9,
     "invokes": 450}

or, with `--describe` and no models, one object describing the board. The board needs only
Python 3 and `ai_edge_litert` (with numpy); the agent uses argparse rather than absl for that
reason. The timing is `timer.time_models` itself, so a board is timed exactly like this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys

if __package__:
    from fdi_keras.profiling.timer import time_models
else:  # run as a script next to the copy of timer.py (on the board)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from timer import time_models


def device_name() -> str:
    """The board's model (device tree, e.g. "Raspberry Pi 5 Model B Rev 1.0"), else its CPU."""
    try:
        with open("/proc/device-tree/model", "rb") as f:
            model = f.read().rstrip(b"\x00").decode(errors="replace").strip()
        if model:
            return model
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """Board and runtime versions, as stored with every profile row."""
    import ai_edge_litert

    return {
        "node": platform.node(),
        "device": device_name(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "ai_edge_litert": ai_edge_litert.__version__,
    }


def run(paths: list[str], threads: int = 1, **protocol) -> list[dict]:
    """Times the TFLite files at `paths` side by side; one result dict per file, in order."""
    models = []
    for path in paths:
        with open(path, "rb") as f:
            models.append(f.read())
    timings = time_models(models, threads, **protocol)
    # Indexing, not zip(strict=...): boards may run Python 3.9.
    return [
        {"index": i, "model": path, **dataclasses.asdict(timings[i])}
        for i, path in enumerate(paths)
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Time TFLite files with the fdi_keras protocol.")
    parser.add_argument("models", nargs="*", help="TFLite files, timed side by side.")
    parser.add_argument("--threads", type=int, default=1, help="Interpreter threads.")
    parser.add_argument("--rounds", type=int, help="Interleaved timing rounds.")
    parser.add_argument("--burst_seconds", type=float, help="Length of one burst of invokes.")
    parser.add_argument("--max_spread", type=float, help="Re-measure above this IQR/median.")
    parser.add_argument("--retries", type=int, help="Re-measurements of too-wide models.")
    parser.add_argument("--seed", type=int, help="Seed of the round order and inputs.")
    parser.add_argument("--describe", action="store_true", help="Describe the board and exit.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.describe:
        print(json.dumps(describe()), flush=True)
        return 0
    if not args.models:
        print("agent.py: no models given; pass TFLite files or --describe.", file=sys.stderr)
        return 2
    if args.threads < 1:
        print(
            f"agent.py: --threads must be >= 1. Received: --threads={args.threads}", file=sys.stderr
        )
        return 2
    protocol = {
        key: getattr(args, key)
        for key in ("rounds", "burst_seconds", "max_spread", "retries", "seed")
        if getattr(args, key) is not None
    }
    for result in run(args.models, args.threads, **protocol):
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
