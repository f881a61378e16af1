"""Runners time TFLite models on one device; the profiler only talks to this interface."""

from __future__ import annotations

import platform
from typing import Protocol

import ai_edge_litert

from fdi_keras.profiling.timer import Timing, time_models


class Runner(Protocol):
    """Something that times TFLite flatbuffers on one device.

    `name` labels the device's rows and shard; `describe()` returns a JSON-serializable dict
    (backend, device, runtime versions) stored with every row and in the tree file.

    Failures come in two classes, which the profiler treats differently. A runner raises
    `fdi_keras.errors.TransportError` when it cannot reach its device (device offline, a
    connection timeout, the timing process killed): the call is retried and never stored. Any
    other exception is the models' own failure (a runtime error): the profiler isolates the
    failing model and stores an error row for it.
    """

    name: str

    def describe(self) -> dict: ...

    def host_cores(self, threads: int) -> int:
        """Cores of this machine that timing with `threads` threads occupies (0 for another
        device): when they leave none free, the profiler converts no model while it times."""
        ...

    def time(self, models: list[bytes], threads: int) -> list[Timing]: ...


def cpu_model() -> str:
    """The CPU's marketing name (Linux), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class LocalRunner:
    """This machine's CPU through `ai_edge_litert.interpreter.Interpreter` (XNNPack, batch 1)."""

    def __init__(self, **protocol):
        self.protocol = protocol
        self.name = "local"

    def describe(self) -> dict:
        return {
            "backend": "local",
            "device": f"{platform.node()} ({cpu_model()})",
            "runtime": f"ai_edge_litert {ai_edge_litert.__version__}",
        }

    def host_cores(self, threads: int) -> int:
        return threads

    def time(self, models: list[bytes], threads: int) -> list[Timing]:
        return time_models(models, threads, **self.protocol)
