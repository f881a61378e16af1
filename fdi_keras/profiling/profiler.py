"""Profile a device: sample configurations, convert them, time them, store rows, resumably."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import time

import numpy as np
from tqdm.auto import tqdm

from fdi_keras.profiling.convert import (
    CALIBRATION_SPEC,
    convert_batch,
    die_with_parent,
    quiet_tensorflow,
)
from fdi_keras.profiling.runners import Runner
from fdi_keras.profiling.sampling import sample_configs
from fdi_keras.profiling.store import ProfileStore, merge_shards, read_rows
from fdi_keras.specs import LayerSpec


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


def _time_batch(runner: Runner, calibration: bytes, models: list[bytes], threads: int):
    """[(timing, calibration timing) or error message] per model; a model that breaks the
    runtime is isolated by timing the batch's models one by one."""
    try:
        timings = runner.time([calibration, *models], threads)
        return [(t, timings[0]) for t in timings[1:]]
    except Exception:  # noqa: BLE001 - find which model fails, below
        if len(models) == 1:
            raise
    results = []
    for model in models:
        try:
            results.append(_time_batch(runner, calibration, [model], threads)[0])
        except Exception as e:  # noqa: BLE001 - a runtime failure is recorded per row
            results.append(f"run: {type(e).__name__}: {e}"[:500])
    return results


def _profile_shard(runner: Runner, specs, store: ProfileStore, pool, batch_size, bar):
    if not specs:
        return
    device, threads = runner.describe(), specs[0].threads
    calibration = LayerSpec(
        CALIBRATION_SPEC.kind,
        CALIBRATION_SPEC.dims,
        CALIBRATION_SPEC.attrs,
        specs[0].dtype,
        threads,
    )
    ((calibration_model, error),) = pool.submit(convert_batch, [calibration.to_dict()]).result()
    if error:
        raise RuntimeError(f"The calibration kernel failed to convert: {error}")
    batches = _batches([s for s in specs if s.key() not in store.done], batch_size)
    errors = sum(r["status"] == "error" for r in store.rows)  # then counted per batch
    futures = [pool.submit(convert_batch, [s.to_dict() for s in b]) for b in batches[:2]]
    for i, batch in enumerate(batches):
        converted = futures[i].result()
        if i + 2 < len(batches):  # keep the converter one batch ahead of the timer
            futures.append(pool.submit(convert_batch, [s.to_dict() for s in batches[i + 2]]))
        ok = [j for j, (_, err) in enumerate(converted) if err is None]
        timed = dict(
            zip(
                ok,
                _time_batch(runner, calibration_model, [converted[j][0] for j in ok], threads)
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
        errors += sum(r["status"] == "error" for r in rows)
        bar.update(len(batch))
        bar.set_postfix(device=runner.name, errors=errors)


def sample_all(
    kinds: list[str],
    num_configs: int | dict,
    seed: int = 0,
    dtype: str = "float32",
    threads: int = 1,
) -> list[LayerSpec]:
    """Configurations of every kind (`num_configs` per kind, or a {kind: count} dict), with
    the kinds interleaved so that machine drift during a run spreads over all of them."""
    counts = num_configs if isinstance(num_configs, dict) else dict.fromkeys(kinds, num_configs)
    specs = [s for kind in kinds for s in sample_configs(kind, counts[kind], seed, dtype, threads)]
    return [specs[i] for i in np.random.default_rng(seed).permutation(len(specs))]


def run_profile(
    runners: list[Runner],
    specs: list[LayerSpec],
    out_dir: str,
    batch_size: int = 12,
    progress: bool = True,
) -> ProfileRun:
    """Times every spec not yet in `out_dir`; resumes what `out_dir` already has.

    With one runner rows go straight to `out_dir/profile.jsonl`; with several, each runner
    profiles its own shard (`out_dir/shards/<name>.jsonl`) in parallel and the shards are
    merged into `profile.jsonl`. Returns the rows of `specs` (measured now or before).
    """
    if not runners:
        raise ValueError("run_profile needs at least one runner. Received: runners=[]")
    os.makedirs(out_dir, exist_ok=True)
    out_path = os.path.join(out_dir, "profile.jsonl")
    if len(runners) == 1:
        paths = [out_path]
    else:
        os.makedirs(os.path.join(out_dir, "shards"), exist_ok=True)
        paths = [os.path.join(out_dir, "shards", f"{r.name}.jsonl") for r in runners]
    stores = [ProfileStore(p) for p in paths]
    shards = [specs[i :: len(runners)] for i in range(len(runners))]
    before = sum(len({s.key() for s in sh} & st.done) for sh, st in zip(shards, stores))
    start = time.time()
    quiet_tensorflow()
    context = multiprocessing.get_context("spawn")  # TensorFlow does not survive fork
    with (
        cf.ProcessPoolExecutor(1, mp_context=context, initializer=die_with_parent) as pool,
        tqdm(
            total=len(specs), initial=before, unit="config", disable=not progress, desc="profiling"
        ) as bar,
        cf.ThreadPoolExecutor(len(runners)) as workers,
    ):
        jobs = [
            workers.submit(_profile_shard, r, sh, st, pool, batch_size, bar)
            for r, sh, st in zip(runners, shards, stores)
        ]
        for job in jobs:
            job.result()
    rows = merge_shards(paths, out_path) if len(runners) > 1 else read_rows(out_path)
    wanted = {s.key() for s in specs}
    rows = [r for r in rows if r["key"] in wanted]
    return ProfileRun(rows, time.time() - start, len(specs) - before, out_path)
