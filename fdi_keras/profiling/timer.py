"""The local timing protocol: LiteRT interpreters timed interleaved, in short bursts, robustly.

A single model timed in one block is at the mercy of whatever the shared machine does during
that block. Here every model of a batch is timed in each of several rounds, in a shuffled order,
as a short burst of `invoke()` calls. Two statistics come out: the median over rounds of the
burst medians (with its spread, the inter-quartile range over rounds relative to it; models
whose spread is too wide are measured again), and the minimum over all invokes. On a shared
machine, interference only ever adds time, and it comes in waves of seconds that can slow
everything by tens of percent; the minimum is the uncontended time and reproduces several times
better than the median (docs/timing_model.md), so profiles and predictions use it.
"""

from __future__ import annotations

import dataclasses
import gc
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter

# A burst's median skips its first, cache-cold invoke after another model ran.
MIN_BURST = 3


@dataclasses.dataclass(frozen=True)
class Timing:
    """Invoke time of one model in microseconds: the median over rounds with its relative
    spread (IQR/median), and the minimum over all invokes (the uncontended time)."""

    median_us: float
    spread: float
    rounds: int
    invokes: int
    min_us: float

    @property
    def median_ms(self) -> float:
        return self.median_us / 1000.0

    @property
    def min_ms(self) -> float:
        return self.min_us / 1000.0


def _random_inputs(interpreter: Interpreter, rng: np.random.Generator) -> None:
    for detail in interpreter.get_input_details():
        shape, dtype = detail["shape"], detail["dtype"]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            value = rng.integers(max(info.min, -128), min(info.max, 127), size=shape, dtype=dtype)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        interpreter.set_tensor(detail["index"], value)


def make_interpreter(model: bytes, threads: int, seed: int = 0) -> Interpreter:
    """A ready LiteRT interpreter (default XNNPack delegate) with random inputs set."""
    interpreter = Interpreter(model_content=model, num_threads=threads)
    interpreter.allocate_tensors()
    _random_inputs(interpreter, np.random.default_rng(seed))
    return interpreter


def _burst(invoke, n: int) -> tuple[float, float]:
    """(median, minimum) of `n` consecutive invokes, in microseconds."""
    clock = time.perf_counter_ns
    samples = np.empty(n)
    for i in range(n):
        start = clock()
        invoke()
        samples[i] = clock() - start
    return float(np.median(samples)) / 1000.0, float(samples.min()) / 1000.0


def _summarise(rounds: list[tuple[float, float]], invokes: int) -> Timing:
    medians = [m for m, _ in rounds]
    q25, q50, q75 = np.percentile(medians, [25, 50, 75])
    spread = float((q75 - q25) / q50) if q50 > 0 else 0.0
    return Timing(float(q50), spread, len(rounds), invokes, min(low for _, low in rounds))


def time_models(
    models: list[bytes],
    threads: int = 1,
    rounds: int = 9,
    burst_seconds: float = 0.002,
    max_spread: float = 0.04,
    retries: int = 2,
    seed: int = 0,
) -> list[Timing]:
    """Times each TFLite flatbuffer in `models` side by side; returns one `Timing` per model.

    Args:
        models: serialized TFLite models, all timed in the same run.
        threads: interpreter threads.
        rounds: how many interleaved rounds each model is timed in.
        burst_seconds: target length of one burst of consecutive invokes.
        max_spread: models whose IQR/median exceeds this are re-measured.
        retries: how many times a too-wide model is re-measured (with twice the rounds).
        seed: seed of the round order and of the random inputs.
    """
    rng = np.random.default_rng(seed)
    interpreters = [make_interpreter(m, threads, seed) for m in models]
    invokes = [it.invoke for it in interpreters]
    burst_sizes = []
    for invoke in invokes:
        for _ in range(3):  # warm-up: caches, XNNPack weight packing
            invoke()
        single = _burst(invoke, 3)[0] * 1e-6
        burst_sizes.append(int(np.clip(burst_seconds / max(single, 1e-7), MIN_BURST, 500)))

    def measure(indices: list[int], n_rounds: int) -> dict[int, list[tuple[float, float]]]:
        samples = {i: [] for i in indices}
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(n_rounds):
                for i in rng.permutation(indices):
                    samples[int(i)].append(_burst(invokes[i], burst_sizes[i]))
        finally:
            if gc_was_enabled:
                gc.enable()
        return samples

    indices = list(range(len(models)))
    samples = measure(indices, rounds)
    timings = {i: _summarise(samples[i], burst_sizes[i] * rounds) for i in indices}
    for attempt in range(retries):
        wide = [i for i in indices if timings[i].spread > max_spread]
        if not wide:
            break
        again = measure(wide, rounds * 2 ** (attempt + 1))
        for i in wide:
            retry = _summarise(again[i], burst_sizes[i] * len(again[i]))
            low = min(retry.min_us, timings[i].min_us)
            timings[i] = dataclasses.replace(
                retry if retry.spread < timings[i].spread else timings[i], min_us=low
            )
    return [timings[i] for i in indices]
