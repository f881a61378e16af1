"""Profile a device: sample configurations, convert them, time them, store rows, resumably."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import glob
import os
import time

import numpy as np
from tqdm.auto import tqdm

from fdi_keras.errors import DeviceUnavailableError
from fdi_keras.profiling.conversion_pool import DEFAULT_TIMEOUT_S, ConverterPool
from fdi_keras.profiling.convert import CALIBRATION_SPEC, quiet_tensorflow
from fdi_keras.profiling.fitting import check_one_setup
from fdi_keras.profiling.lock import ProfileLock
from fdi_keras.profiling.networks import profiled_kernels
from fdi_keras.profiling.retry import RetryPolicy, call_with_retries
from fdi_keras.profiling.runners import Runner
from fdi_keras.profiling.sampling import DEFAULT_COUNTS, sample_configs
from fdi_keras.profiling.store import ProfileStore, merge_shards, read_rows
from fdi_keras.specs import NETWORK, LayerSpec


@dataclasses.dataclass
class ProfileRun:
    """What a profiling run produced: the rows (all shards merged) and how long it took."""

    rows: list[dict]
    seconds: float
    measured: int
    path: str


def _row(spec, timing, error, calibration_us, device) -> dict:
    row = {
        "key": spec.key(),
        "spec": spec.to_dict(),
        "device": device,
        "dtype": spec.dtype,
        "threads": spec.threads,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if error is not None:
        return {**row, "status": "error", "error": error}
    return {
        **row,
        "status": "ok",
        "time_us": timing.min_us,  # the uncontended time: see fdi_keras/profiling/timer.py
        "median_us": timing.median_us,
        "spread": timing.spread,
        "rounds": timing.rounds,
        "invokes": timing.invokes,
        "calibration_us": calibration_us,
    }


def _batches(specs: list[LayerSpec], size: int) -> list[list[LayerSpec]]:
    return [specs[i : i + size] for i in range(0, len(specs), size)]


RESUME_HINT = (
    "Every row measured so far is saved: once the device is back, rerun the same command "
    "(same --out_dir) to resume."
)


def _time_batch(runner: Runner, calibration: bytes, models: list[bytes], threads: int, retry):
    """[(timing, calibration timing) or error message] per model; a model that breaks the
    runtime is isolated by timing the batch's models one by one. Transport errors are
    retried (`retry`) and never recorded: `DeviceUnavailableError` stops the run."""
    try:
        timings = call_with_retries(
            lambda: runner.time([calibration, *models], threads), retry, runner.name, RESUME_HINT
        )
        return [(t, timings[0]) for t in timings[1:]]
    except DeviceUnavailableError:
        raise
    except Exception:  # noqa: BLE001 - find which model fails, below
        if len(models) == 1:
            raise
    results = []
    for model in models:
        try:
            results.append(_time_batch(runner, calibration, [model], threads, retry)[0])
        except DeviceUnavailableError:
            raise
        except Exception as e:  # noqa: BLE001 - a model's own failure is recorded per row
            results.append(f"run: {type(e).__name__}: {e}"[:500])
    return results


def _host_cores(runner: Runner, threads: int) -> int:
    """The cores of this machine `runner`'s timing occupies (none for a runner of a user's
    that predates `Runner.host_cores`)."""
    host_cores = getattr(runner, "host_cores", None)
    return host_cores(threads) if callable(host_cores) else 0


def _profile_shard(
    runner: Runner, specs, store: ProfileStore, converter: ConverterPool, batch_size, bar, retry
):
    if not specs:
        return
    device = call_with_retries(runner.describe, retry, runner.name, RESUME_HINT)
    threads = specs[0].threads
    calibration = LayerSpec(
        CALIBRATION_SPEC.kind,
        CALIBRATION_SPEC.dims,
        CALIBRATION_SPEC.attrs,
        specs[0].dtype,
        threads,
    )
    ((calibration_model, error),) = converter.result(converter.submit([calibration]))
    if error:
        raise RuntimeError(f"The calibration kernel failed to convert: {error}")
    batches = _batches([s for s in specs if s.key() not in store.done], batch_size)
    errors = sum(r["status"] == "error" for r in store.rows)  # then counted per batch
    futures = []

    def convert(i):
        if i < len(batches):
            futures.append(converter.submit(batches[i]))

    # The converter works a batch ahead of the timer, unless the timing takes every core of
    # this machine (2 threads on 2 cores): then it would steal one from the timed threads
    # (held-out MAPE 12.6% -> 59.7% for dense kernels on a 2-core VM), so it waits.
    ahead = 2 if _host_cores(runner, threads) < (os.cpu_count() or 1) else 0
    for i in range(max(1, ahead)):
        convert(i)
    for i, batch in enumerate(batches):
        converted = converter.result(futures[i])
        if ahead:
            convert(i + ahead)
        ok = [j for j, (_, err) in enumerate(converted) if err is None]
        timed = dict(
            zip(
                ok,
                _time_batch(
                    runner, calibration_model, [converted[j][0] for j in ok], threads, retry
                )
                if ok
                else [],
            )
        )
        rows = []
        for j, spec in enumerate(batch):
            if converted[j][1] is not None:
                rows.append(_row(spec, None, "convert: " + converted[j][1], None, device))
            elif isinstance(timed[j], str):
                rows.append(_row(spec, None, timed[j], None, device))
            else:
                timing, calibration_timing = timed[j]
                rows.append(_row(spec, timing, None, calibration_timing.min_us, device))
        store.append(rows)
        if not ahead:
            convert(i + 1)
        errors += sum(r["status"] == "error" for r in rows)
        bar.update(len(batch))
        bar.set_postfix(device=runner.name, errors=errors)


def sample_all(
    kinds: list[str],
    num_configs: int | dict | None = None,
    seed: int = 0,
    dtype: str = "float32",
    threads: int = 1,
) -> list[LayerSpec]:
    """Configurations of every kind (`num_configs` per kind, a {kind: count} dict, or None for
    `DEFAULT_COUNTS`), with the kinds interleaved so that machine drift during a run spreads
    over all of them.

    With `network` among the kinds, the random networks' and chains' own kernels are profiled
    too (`networks.profiled_kernels`): the trees then know the shapes networks are made of,
    and the networks timed whole show only how kernels compose (the composition term), not
    the trees' errors. Not those of deep networks (more than PROFILED_NETWORK_KERNELS
    kernels): profiling them would cost more than the rest of the profile, and timed whole on
    their own they show the composition term what a user's model shows it, kernels the trees
    were not fitted on.
    """
    if num_configs is None:
        counts = {k: DEFAULT_COUNTS.get(k, 100) for k in kinds}
    elif isinstance(num_configs, dict):
        counts = num_configs
    else:  # a number is per kernel kind; networks (much slower to profile) keep their default
        counts = {k: DEFAULT_COUNTS[k] if k == NETWORK else num_configs for k in kinds}
    specs = [s for kind in kinds for s in sample_configs(kind, counts[kind], seed, dtype, threads)]
    keys = {s.key() for s in specs}
    for network in [s for s in specs if s.kind == NETWORK]:
        for kernel in profiled_kernels(network):
            if kernel.key() not in keys:
                keys.add(kernel.key())
                specs.append(kernel)
    return [specs[i] for i in np.random.default_rng(seed).permutation(len(specs))]


def run_profile(
    runners: list[Runner],
    specs: list[LayerSpec],
    out_dir: str,
    batch_size: int = 12,
    progress: bool = True,
    retry: RetryPolicy | None = None,
    conversion_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProfileRun:
    """Times every spec not yet in `out_dir`; resumes what `out_dir` already has.

    With one runner rows go straight to `out_dir/profile.jsonl`; with several, each runner
    profiles its own shard (`out_dir/shards/<name>.jsonl`) in parallel and the shards are
    merged into `profile.jsonl`, keeping the rows it already holds. Returns the rows of
    `specs` (measured now or before); `profile.jsonl` may hold more (other kinds).

    Args:
        runners: one runner per device; several devices must be of one model.
        specs: the configurations to have measured.
        out_dir: the profile directory, locked for the run (`ProfileLock`).
        batch_size: configurations converted and timed together.
        progress: show a progress bar.
        retry: how transport errors are retried (`RetryPolicy()` by default).
        conversion_timeout_s: seconds a batch, then each of its configurations alone, may
            take to convert; one that hangs (or kills the converter) becomes an error row
            (`ConverterPool`).

    Raises:
        ProfileLockedError: another run is using `out_dir`.
        MixedProfileError: `out_dir` holds rows of another device, runtime, dtype or thread
            count than this run's.
        DeviceUnavailableError: a device stayed unreachable through every retry; the rows
            measured before are saved and rerunning resumes.
    """
    if not runners:
        raise ValueError("run_profile needs at least one runner. Received: runners=[]")
    os.makedirs(out_dir, exist_ok=True)
    with ProfileLock(out_dir):
        return _run_locked(
            runners,
            specs,
            out_dir,
            batch_size,
            progress,
            retry or RetryPolicy(),
            conversion_timeout_s,
        )


def _run_locked(
    runners, specs, out_dir, batch_size, progress, retry, conversion_timeout_s
) -> ProfileRun:
    out_path = os.path.join(out_dir, "profile.jsonl")
    main = ProfileStore(out_path)
    shard_dir = os.path.join(out_dir, "shards")
    if len(runners) == 1:
        stores = [main]
    else:
        os.makedirs(shard_dir, exist_ok=True)
        stores = [ProfileStore(os.path.join(shard_dir, f"{r.name}.jsonl")) for r in runners]
    # Shards of earlier runs (other devices, or a run stopped before merging) count as done.
    earlier = [ProfileStore(p) for p in sorted(glob.glob(os.path.join(shard_dir, "*.jsonl")))]
    done = set(main.done).union(*(s.done for s in stores + earlier))
    _check_setup(runners, specs, [main, *stores, *earlier], retry)
    todo = [s for s in specs if s.key() not in done]
    shards = [todo[i :: len(runners)] for i in range(len(runners))]
    start = time.time()
    quiet_tensorflow()
    failures = []
    with (
        ConverterPool(conversion_timeout_s) as converter,
        tqdm(
            total=len(specs),
            initial=len(specs) - len(todo),
            unit="config",
            disable=not progress,
            desc="profiling",
        ) as bar,
        cf.ThreadPoolExecutor(len(runners)) as workers,
    ):
        jobs = [
            workers.submit(_profile_shard, r, sh, st, converter, batch_size, bar, retry)
            for r, sh, st in zip(runners, shards, stores)
        ]
        for job in jobs:
            try:
                job.result()
            except Exception as e:  # noqa: BLE001 - the other devices finish their shards first
                failures.append(e)
    if len(runners) > 1:  # merged even after a failure: what was measured is kept
        paths = sorted({s.path for s in stores + earlier})
        rows = merge_shards(paths, out_path)
    else:
        rows = read_rows(out_path)
    if failures:
        raise failures[0]
    wanted = {s.key() for s in specs}
    rows = [r for r in rows if r["key"] in wanted]
    return ProfileRun(rows, time.time() - start, len(todo), out_path)


def _check_setup(runners, specs, stores, retry) -> None:
    """Refuses, before measuring anything, to add rows of another setup to the store."""
    if not specs:
        return
    rows, sources = [], []
    for store in {s.path: s for s in stores}.values():
        rows += store.rows
        sources += [store.path] * len(store.rows)
    for runner in runners:
        device = call_with_retries(runner.describe, retry, runner.name, RESUME_HINT)
        rows.append({"device": device, "dtype": specs[0].dtype, "threads": specs[0].threads})
        sources.append(f"this run on {runner.name}")
    check_one_setup(rows, sources)
