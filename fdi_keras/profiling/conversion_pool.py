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


# Attempts at starting a worker (TensorFlow's import can fail on a host short of memory).
START_ATTEMPTS = 3


@dataclasses.dataclass(eq=False)
class PendingBatch:
    """A batch submitted to the worker of one `generation` (the pool counts its workers).
    `fault` is set when the worker was replaced because of this batch: "hung" or "died"."""

    specs: list[LayerSpec]
    generation: int
    future: cf.Future
    fault: str | None = None


class ConverterPool:
    """One converter process, replaced when a conversion hangs or kills it.

    Thread-safe: the runners of several devices submit to and wait on one pool. The worker
    converts batches in submission order, so the limit on a batch counts from when the
    batches queued before it are done, and a worker that dies is blamed on the earliest batch
    it had not finished: the others, whoever waits on them, are converted again, not failed.

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
        self._queued: list[PendingBatch] = []  # the current worker's batches, in order
        self._start_error: RuntimeError | None = None  # no worker could be started
        self._pool: cf.ProcessPoolExecutor | None = None  # started by the first submit: a
        # resumed profile with nothing left to measure never pays TensorFlow's start-up

    def _started_worker(self) -> cf.ProcessPoolExecutor:
        """A worker that has converted the calibration kernel once, untimed by `timeout_s`, so
        that the limit counts conversions, not TensorFlow's start-up (seconds, more on a busy
        host). Raises RuntimeError when START_ATTEMPTS workers in a row fail to start."""
        error = None
        for _ in range(START_ATTEMPTS):
            pool = cf.ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),  # TensorFlow cannot fork
                initializer=die_with_parent,
                initargs=(os.getpid(),),
            )
            try:
                warm_up = pool.submit(self._convert, [CALIBRATION_SPEC.to_dict()])
                warm_up.result(timeout=max(self.timeout_s, 300.0))
                return pool
            except Exception as e:  # noqa: BLE001 - tried again, then reported below
                error = e
                _kill_workers(pool)
                pool.shutdown(wait=False, cancel_futures=True)
        raise RuntimeError(
            f"The converter worker failed to start {START_ATTEMPTS} times in a row "
            f"({type(error).__name__}: {error}). Rows measured so far are saved; free memory "
            "on this machine and rerun the same command to resume."
        )

    def _start_or_record(self) -> cf.ProcessPoolExecutor:
        """`_started_worker()`; its failure is kept, so that every runner stops with it."""
        try:
            return self._started_worker()
        except RuntimeError as e:
            self._start_error = e
            raise

    def submit(self, specs: list[LayerSpec]) -> PendingBatch:
        """Queues `specs` for conversion; `result` waits for them."""
        while True:
            with self._lock:
                if self._start_error is not None:  # every runner stops with the same reason
                    raise self._start_error
                generation = self._generation
                if self._pool is None:
                    self._pool = self._start_or_record()
                try:
                    future = self._pool.submit(self._convert, [s.to_dict() for s in specs])
                except BrokenProcessPool:  # a batch queued before this one killed the worker
                    pass
                else:
                    self._queued = [p for p in self._queued if not p.future.done()]
                    self._queued.append(PendingBatch(list(specs), generation, future))
                    return self._queued[-1]
            self._replace_worker(generation)

    def result(self, pending: PendingBatch) -> list[Converted]:
        """`(flatbuffer, None)` or `(None, error)` per configuration of `pending`."""
        while True:
            converted = self._wait(pending)
            if converted is not None:
                return converted
            if pending.fault is not None:  # find which configuration: one at a time
                return [self._convert_alone(spec) for spec in pending.specs]
            pending = self.submit(pending.specs)  # another batch hung or killed the worker

    def _convert_alone(self, spec: LayerSpec) -> Converted:
        while True:
            pending = self.submit([spec])
            converted = self._wait(pending)
            if converted is not None:
                return converted[0]
            if pending.fault == "hung":
                return None, (
                    f"no result after {self.timeout_s:g} s: the converter hung on this "
                    "configuration (skipped; a longer conversion timeout waits longer)"
                )
            if pending.fault == "died":
                return None, "the converter process died converting this configuration"

    def _wait(self, pending: PendingBatch) -> list[Converted] | None:
        """`pending`'s conversions, or None once its worker was replaced (`pending.fault`
        says whether because of it)."""
        for earlier in self._queued_before(pending):
            if not cf.wait([earlier.future], timeout=self.timeout_s).done:
                self._replace_worker(earlier.generation, earlier, "hung")
        try:
            return pending.future.result(timeout=self.timeout_s)
        except cf.TimeoutError:
            self._replace_worker(pending.generation, pending, "hung")
        except (BrokenProcessPool, cf.CancelledError):
            self._replace_worker(pending.generation)
        return None

    def _queued_before(self, pending: PendingBatch) -> list[PendingBatch]:
        with self._lock:
            if pending not in self._queued:
                return []
            return self._queued[: self._queued.index(pending)]

    def _replace_worker(self, generation, culprit=None, fault="died") -> None:
        """Kills the worker of `generation`, blames `culprit` (by default the earliest batch
        the dead worker had not finished) with `fault`, and starts the next worker; a no-op
        when that worker was replaced already (by another runner's thread)."""
        with self._lock:
            if generation != self._generation:
                return
            _kill_workers(self._pool)
            if culprit is None:
                unfinished = [p for p in self._queued if _failed(p.future)]
                culprit = unfinished[0] if unfinished else None
            if culprit is not None:
                culprit.fault = fault
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start_or_record()
            self._generation += 1
            self._queued = []

    def close(self) -> None:
        """Stops the worker at once: a batch converted ahead is not waited for (it may hang)."""
        with self._lock:
            if self._pool is not None:
                _kill_workers(self._pool)
                self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ConverterPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _failed(future: cf.Future) -> bool:
    """Whether `future` ended without a result (or has not ended)."""
    return not future.done() or future.cancelled() or future.exception() is not None


def _kill_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Kills `pool`'s processes: `shutdown` waits for a conversion that may never end.
    (`kill_workers` from Python 3.14; before, the executor's process table.)"""
    kill = getattr(pool, "kill_workers", None)
    if kill is not None:
        kill()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()
