"""The converter worker, supervised: a configuration whose conversion hangs or kills the
converter becomes that configuration's error row instead of stalling or ending the profile.

TensorFlow's converter runs in one spawned process that converts batches ahead of the timer
(`fdi_keras.profiling.convert`). Left alone, one bad configuration stops a whole profile: the
int8 converter had not finished a 17M-weight model after 11 minutes, and a converter that
crashes (a segfault in MLIR, the out-of-memory killer) breaks the process pool, whose error
ended the run. Here a batch that returns nothing within `timeout_s`, or whose worker died,
has its worker replaced and its configurations converted again one at a time, each with the
same limit: the one that hangs or crashes again is recorded as failed, the rest convert.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool

from fdi_keras.profiling.convert import CALIBRATION_SPEC, convert_batch, die_with_parent
from fdi_keras.specs import LayerSpec

# Seconds a batch (and then each of its configurations) may take to convert. A normal batch
# of 12 takes 10-40 s on 2 cores; the largest random networks about a minute.
DEFAULT_TIMEOUT_S = 600.0

# What a conversion yields per configuration: (flatbuffer, None) or (None, error message).
Converted = tuple[bytes | None, str | None]


@dataclasses.dataclass
class PendingBatch:
    """A batch submitted to the worker of one `generation` (the pool counts its workers)."""

    specs: list[LayerSpec]
    generation: int
    future: cf.Future


class ConverterPool:
    """One converter process, replaced when a conversion hangs or kills it.

    Thread-safe: the runners of several devices submit to and wait on one pool.

    Args:
        timeout_s: seconds a batch, then each configuration alone, may take to convert.
        convert: the worker's function, `convert_batch` (another picklable one in tests).
    """

    def __init__(
        self,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        convert: Callable[[list[dict]], list[Converted]] = convert_batch,
    ):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive. Received: timeout_s={timeout_s}")
        self.timeout_s = float(timeout_s)
        self._convert = convert
        self._lock = threading.Lock()
        self._generation = 0
        self._pool = self._new_worker()

    def _new_worker(self) -> cf.ProcessPoolExecutor:
        """A started worker: it converts the calibration kernel first, untimed, so that the
        limit counts conversions, not TensorFlow's start-up (seconds, more on a busy host)."""
        pool = cf.ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),  # TensorFlow does not survive fork
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
        pool.submit(self._convert, [CALIBRATION_SPEC.to_dict()]).result()
        return pool

    def submit(self, specs: list[LayerSpec]) -> PendingBatch:
        """Queues `specs` for conversion; `result` waits for them."""
        while True:
            with self._lock:
                generation = self._generation
                try:
                    future = self._pool.submit(self._convert, [s.to_dict() for s in specs])
                    return PendingBatch(list(specs), generation, future)
                except BrokenProcessPool:  # a batch queued before this one killed the worker
                    pass
            self._replace_worker(generation)

    def result(self, pending: PendingBatch) -> list[Converted]:
        """`(flatbuffer, None)` or `(None, error)` per configuration of `pending`."""
        try:
            return pending.future.result(timeout=self.timeout_s)
        except cf.TimeoutError:
            self._replace_worker(pending.generation)
        except BrokenProcessPool:
            if not self._replace_worker(pending.generation):
                return self.result(self.submit(pending.specs))  # another batch killed it
        return [self._convert_alone(spec) for spec in pending.specs]

    def _convert_alone(self, spec: LayerSpec) -> Converted:
        pending = self.submit([spec])
        try:
            return pending.future.result(timeout=self.timeout_s)[0]
        except cf.TimeoutError:
            self._replace_worker(pending.generation)
            return None, (
                f"no result after {self.timeout_s:g} s: the converter hung on this "
                "configuration (skipped; a longer conversion timeout waits longer)"
            )
        except BrokenProcessPool:
            if not self._replace_worker(pending.generation):
                return self._convert_alone(spec)  # another configuration killed it
            return None, "the converter process died converting this configuration"

    def _replace_worker(self, generation: int) -> bool:
        """Kills the worker of `generation` and starts the next, unless that worker was
        replaced already (by another runner's thread); returns whether this call did."""
        with self._lock:
            if generation != self._generation:
                return False
            _kill_workers(self._pool)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._generation += 1
            self._pool = self._new_worker()
            return True

    def close(self) -> None:
        with self._lock:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ConverterPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _kill_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Kills `pool`'s processes: `shutdown` waits for a conversion that may never end.
    (`kill_workers` from Python 3.14; before, the executor's process table.)"""
    kill = getattr(pool, "kill_workers", None)
    if kill is not None:
        kill()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()
