"""The profiler under abuse: 20 random SIGKILLs and a 60-second device outage, 0 rows lost.

    python benchmarks/profiler_stress.py      # ~10 min on a 2-core machine

A child process profiles a fixed list of configurations into one out_dir; the parent kills it
(SIGKILL, no chance to clean up) at a random moment, 20 times, restarting it each time with
the same command, as a user would. One of the runs sees its device vanish for 60 seconds
(every timing call raises `TransportError`, as adb does for an offline phone) and must ride
it out through the retry policy. Then a last run finishes. The store must then hold every
configuration exactly once, no error rows, and a fitted tree. Results go to the
`profiler_stress` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import environment, write_section  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "benchmarks/out/profiler_stress", "Scratch profile directory.")
flags.DEFINE_integer("kills", 20, "SIGKILLs.")
flags.DEFINE_float("outage_seconds", 60.0, "Length of the simulated device outage.")
flags.DEFINE_bool("child", False, "Internal: run one profiling attempt.")
flags.DEFINE_float("outage_after", -1.0, "Internal: the device vanishes this many seconds in.")

KINDS = {"dense": 150, "pool2d": 60, "add": 60, "conv2d": 60}


def specs():
    from fdi_keras.profiling import sample_all

    return sample_all(list(KINDS), KINDS, seed=7)


class VanishingRunner:
    """The local runner, except that between `start` and `start + seconds` its device is gone."""

    def __init__(self, start: float, seconds: float):
        from fdi_keras.profiling import LocalRunner

        self.runner, self.start, self.seconds = LocalRunner(), start, seconds
        self.name = self.runner.name

    def describe(self):
        return self.runner.describe()

    def time(self, models, threads):
        from fdi_keras.errors import TransportError

        if self.start <= time.time() < self.start + self.seconds:
            raise TransportError("device offline (simulated outage)")
        return self.runner.time(models, threads)


def child():
    from fdi_keras.profiling import LocalRunner, run_profile

    runner = LocalRunner()
    if FLAGS.outage_after >= 0:
        runner = VanishingRunner(time.time() + FLAGS.outage_after, FLAGS.outage_seconds)
    run_profile([runner], specs(), FLAGS.out_dir, progress=False)


def attempt(kill_after: float | None, outage_after: float = -1.0) -> str:
    command = [sys.executable, __file__, "--child", f"--out_dir={FLAGS.out_dir}"]
    command += [f"--outage_after={outage_after}", f"--outage_seconds={FLAGS.outage_seconds}"]
    log = os.path.join(FLAGS.out_dir, "child.log")  # not a pipe: nothing can hold it open
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    with open(log, "w") as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.kill()  # SIGKILL
            process.wait()
            return "killed"
    with open(log) as err:
        return "finished" if process.returncode == 0 else f"failed: {err.read()[-300:]}"


def orphaned_workers() -> int:
    """Converter workers (spawned processes) adopted by init: left behind by a killed run."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                spawned = b"multiprocessing.spawn" in f.read()
        except (OSError, ValueError, IndexError):
            continue
        count += ppid == 1 and spawned
    return count


def main(argv):
    del argv
    if FLAGS.child:
        child()
        return
    from fdi_keras.profiling.fitting import fit_profile
    from fdi_keras.profiling.store import read_rows

    shutil.rmtree(FLAGS.out_dir, ignore_errors=True)
    path = os.path.join(FLAGS.out_dir, "profile.jsonl")
    rng = np.random.default_rng(0)
    outcomes, counts, start = [], [], time.time()
    outage_run = FLAGS.kills // 2
    for i in range(FLAGS.kills):
        if i == outage_run:  # the device vanishes 15 s in; killed after it came back
            outcomes.append(attempt(15 + FLAGS.outage_seconds + 25, outage_after=15))
        else:
            outcomes.append(attempt(float(rng.uniform(8, 30))))
        counts.append(len(read_rows(path)) if os.path.exists(path) else 0)
        print(f"run {i + 1}: {outcomes[-1]}, {counts[-1]} rows stored")
    outcomes.append(attempt(None))
    rows = read_rows(path)
    keys = collections.Counter(r["key"] for r in rows)
    wanted = {s.key() for s in specs()}
    duplicated = sum(n - 1 for n in keys.values() if n > 1)
    lost = len(wanted - set(keys))
    errors = sum(r["status"] != "ok" for r in rows)
    time.sleep(2)
    orphans = orphaned_workers()
    tree, _ = fit_profile(rows)
    body = "\n".join(
        [
            "## Profiler under SIGKILL and a device outage (`benchmarks/profiler_stress.py`)",
            "",
            f"{environment()}. {len(wanted)} configurations ("
            + ", ".join(f"{k} {n}" for k, n in KINDS.items())
            + f") profiled into one out_dir by a child process killed with SIGKILL "
            f"{outcomes.count('killed')} times at random moments (8-30 s after each start), "
            f"restarted each time; run {outage_run + 1} lost its device for "
            f"{FLAGS.outage_seconds:.0f} s (every timing call raising `TransportError`) and rode "
            "it out on the retry policy; a last run finished.",
            "",
            f"Rows stored after each run: {', '.join(map(str, counts))}; final {len(rows)}.",
            f"Outcomes: {dict(collections.Counter(o.split(':')[0] for o in outcomes))}.",
            "",
            f"**Lost: {lost}. Duplicated: {duplicated}. Error rows: {errors}. Converter "
            f"workers left running after the kills: {orphans}.** The tree fits "
            f"on all {len(rows)} rows ({', '.join(sorted(tree.kinds_))}). Wall time "
            f"{(time.time() - start) / 60:.1f} min.",
        ]
    )
    write_section("profiler_stress", body)
    print(body)
    if lost or duplicated or errors or orphans or outcomes[-1] != "finished":
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
