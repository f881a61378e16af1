"""TFLite export and on-device latency measurement (the measured side of every prediction).

Conversion lives in `fdi_keras.conversion` (the profiler converts too, and measurement must
not be imported by it); it is re-exported here, where users look for it.
"""

from __future__ import annotations

from fdi_keras.conversion import QUANTIZE_MODES, to_tflite, with_batch_one, with_input_shape
from fdi_keras.profiling.timer import Timing, time_models

__all__ = [
    "QUANTIZE_MODES",
    "measure_latency",
    "measure_memory",
    "to_tflite",
    "with_batch_one",
    "with_input_shape",
]


def _load(model: bytes | str) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    with open(model, "rb") as f:
        return f.read()


def measure_latency(
    tflite: bytes | str | list, backend: str = "local", threads: int = 1, **protocol
) -> Timing | list[Timing]:
    """Measures TFLite model(s) with the profiler's protocol: `.median_ms` with its `.spread`,
    and `.min_ms`, the uncontended time that timing trees are fitted on and predict.

    Args:
        tflite: a flatbuffer, a path, or a list of them (timed side by side, interleaved).
        backend: only "local" (this machine, LiteRT) is measured here; remote devices are
            profiled with `tools/profile_device.py`.
        threads: interpreter threads.
        **protocol: passed to `fdi_keras.profiling.timer.time_models` (rounds, max_spread...).
    """
    if backend != "local":
        raise ValueError(
            f"measure_latency supports backend='local'. Received: backend={backend!r}. "
            "Use tools/profile_device.py --backend=adb|ssh to time models on remote devices."
        )
    many = isinstance(tflite, list)
    timings = time_models([_load(m) for m in (tflite if many else [tflite])], threads, **protocol)
    return timings if many else timings[0]


_MEMORY_PROBE = r"""
import json, resource, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter

def status(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024.0

before = status("VmRSS")
try:  # reset the peak so that the imports' own peak does not count (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
interpreter = Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[2]))
interpreter.allocate_tensors()
for d in interpreter.get_input_details():
    interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
for _ in range(int(sys.argv[3])):
    interpreter.invoke()
peak = status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"peak_mb": peak - before, "baseline_mb": before}))
"""


def measure_memory(tflite: bytes | str, threads: int = 1, invokes: int = 3) -> float:
    """Peak resident memory (MB) that loading and running the model adds to a fresh process:
    the interpreter's weights, packed kernels and tensor arena, above the Python runtime.

    Runs in a subprocess so that nothing else this process holds is counted.
    """
    import json
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as f:
        f.write(_load(tflite))
    try:
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, f.name, str(threads), str(invokes)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        os.unlink(f.name)
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]
