"""Spec -> TFLite conversion, run in a worker process so it overlaps with timing."""

from __future__ import annotations

import contextlib
import io
import os
import sys

from fdi_keras.specs import LayerSpec

# A fixed kernel timed in every batch: its drift over the run measures the machine's drift.
CALIBRATION_SPEC = LayerSpec("conv2d", dict(h=14, w=14, cin=32, cout=32, kh=3, kw=3, sh=1, sw=1))


def quiet_tensorflow() -> None:
    """Silences TensorFlow's C++ logging (set before TensorFlow is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def die_with_parent(parent_pid: int) -> None:
    """Converter-worker initializer: on Linux, exit when the profiler (`parent_pid`) is
    killed, instead of lingering with a loaded TensorFlow (prctl PR_SET_PDEATHSIG); a no-op
    elsewhere. A profiler killed while the worker was still starting died before the signal
    was armed: the worker then finds itself adopted and exits at once."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:
            os._exit(1)


@contextlib.contextmanager
def silenced_output():
    """Discards what Python and C++ print to stdout and stderr inside the block: the converter
    prints its traced signature and, for int8, a line and a warning per model, thousands of
    lines through a profile's progress bar. Its failures still arrive as exceptions."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in saved:
            os.dup2(devnull, fd)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


def convert_spec(spec: LayerSpec) -> bytes:
    """The TFLite flatbuffer of `spec`'s single-kernel model, in the spec's dtype. An int8
    kernel takes and returns int8 tensors: with float ones, a QUANTIZE and a DEQUANTIZE kernel
    would be timed with it, which a layer inside an int8 model never runs."""
    import keras

    from fdi_keras.conversion import QUANTIZE_FOR_DTYPE, to_tflite
    from fdi_keras.profiling.build import build_kernel_model

    keras.utils.clear_session(free_memory=False)
    with silenced_output():
        quantize = QUANTIZE_FOR_DTYPE[spec.dtype]
        io_dtype = "int8" if quantize == "int8" else "float32"
        return to_tflite(build_kernel_model(spec), quantize=quantize, io_dtype=io_dtype)


def convert_batch(spec_dicts: list[dict]) -> list[tuple[bytes | None, str | None]]:
    """Converts each spec; a failure is returned as its error message, not raised."""
    results = []
    for d in spec_dicts:
        try:
            results.append((convert_spec(LayerSpec.from_dict(d)), None))
        except Exception as e:  # noqa: BLE001 - any converter failure is recorded per config
            results.append((None, f"{type(e).__name__}: {e}"[:500]))
    return results
