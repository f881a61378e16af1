"""End-to-end profiling with the real LiteRT runtime on this machine."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import pytest
from ai_edge_litert.interpreter import Interpreter

import fdi_keras
from fdi_keras.errors import (
    DeviceUnavailableError,
    MixedProfileError,
    ProfileLockedError,
    TransportError,
)
from fdi_keras.profiling import LocalRunner, RetryPolicy, read_rows, run_profile, sample_configs
from fdi_keras.specs import LayerSpec
from fdi_keras.timing import TimingTree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import profile_device  # noqa: E402

# A quick protocol: these tests check what is stored, not how precisely.
QUICK = dict(rounds=3, burst_seconds=0.0005, retries=0)
FAST_RETRY = RetryPolicy(retries=3, delay=0.001, max_delay=0.002)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("profile"))
    runner = LocalRunner(rounds=3)
    tree, report = profile_device.run(
        [runner], ["conv2d", "dense", "global_pool"], 16, out, progress=False
    )
    return out, tree, report


def test_profile_writes_rows_tree_and_report(profiled):
    out, tree, report = profiled
    rows = read_rows(os.path.join(out, "profile.jsonl"))
    assert len(rows) == 48 and all(r["status"] == "ok" for r in rows)
    row = rows[0]
    assert row["device"]["backend"] == "local" and "ai_edge_litert" in row["device"]["runtime"]
    assert row["threads"] == 1 and row["dtype"] == "float32"
    assert row["time_us"] > 0 and row["calibration_us"] > 0
    loaded = TimingTree.load(os.path.join(out, "timing_tree.json"))
    assert sorted(loaded.kinds_) == ["conv2d", "dense", "global_pool"]
    assert "Rules:" in report and "conv2d" in report and "this run: 48 measured in" in report
    with open(os.path.join(out, "report.txt")) as f:
        assert f.read() == report
    assert not os.path.exists(os.path.join(out, "profile.lock"))  # released


def test_rerunning_a_finished_profile_measures_nothing(profiled):
    out, _, _ = profiled
    specs = fdi_keras.profiling.sample_all(["conv2d", "dense", "global_pool"], 16)
    result = fdi_keras.profiling.run_profile([LocalRunner()], specs, out, progress=False)
    assert result.measured == 0 and len(result.rows) == 48
    _, report = fdi_keras.profiling.fit_profile(result.rows, None, True, result.seconds, 0)
    assert "this run: nothing left to measure" in report


def test_predict_latency_of_a_model_from_the_profiled_tree(profiled):
    _, tree, _ = profiled
    x = keras.Input((32, 32, 16))
    y = keras.layers.Conv2D(32, 3, padding="same")(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    model = keras.Model(x, keras.layers.Dense(10)(y))
    report = fdi_keras.predict_latency(model, tree)
    assert [r.kind for r in report.rows] == ["conv2d", "global_pool", "dense"]
    assert len(report.rows[0].layers) == 3  # conv + BN + ReLU: one kernel
    # The kernels the converter runs, written out by hand, and the tree's own predictions for
    # them: each one-kernel time includes one invoke's overhead, which the model pays once.
    kernels = [
        LayerSpec(
            "conv2d", dict(h=32, w=32, cin=16, cout=32, kh=3, kw=3, sh=1, sw=1), {"padding": "same"}
        ),
        LayerSpec("global_pool", dict(h=32, w=32, c=32), {"op": "avg"}),
        LayerSpec("dense", dict(m=1, cin=32, cout=10)),
    ]
    assert [r.dims for r in report.rows] == [k.dims for k in kernels]
    alone = tree.predict(kernels)
    assert tree.overhead_us_ > 0 and all(alone > tree.overhead_us_)
    assert report.total_us == pytest.approx(sum(alone) - 2 * tree.overhead_us_)
    assert report.total_ms > 0 and "total" in str(report)
    with pytest.raises(fdi_keras.MissingKindError, match="'softmax'"):
        fdi_keras.predict_latency(keras.Model(x, keras.layers.Softmax()(x)), tree)


def test_adding_kinds_refits_on_every_row_of_the_store(profiled, tmp_path):
    out = str(tmp_path / "more")
    shutil.copytree(profiled[0], out)
    runner = LocalRunner(**QUICK)
    tree, report = profile_device.run([runner], ["add"], 8, out, progress=False)
    rows = read_rows(os.path.join(out, "profile.jsonl"))
    assert len(rows) == 56
    assert sorted(tree.kinds_) == ["add", "conv2d", "dense", "global_pool"]
    assert tree.metadata_["rows"] == 56
    # The kinds profiled before are fitted exactly as a tree fitted on the whole store is.
    again = TimingTree().fit_rows(rows)
    conv = [LayerSpec.from_dict(r["spec"]) for r in rows if r["spec"]["kind"] == "conv2d"]
    assert tree.predict(conv) == pytest.approx(again.predict(conv))
    loaded = TimingTree.load(os.path.join(out, "timing_tree.json"))
    assert sorted(loaded.kinds_) == sorted(tree.kinds_)
    assert all(kind in report for kind in tree.kinds_)


def test_a_store_of_another_setup_is_refused_before_measuring(profiled, tmp_path):
    out = str(tmp_path / "other")
    shutil.copytree(profiled[0], out)
    before = read_rows(os.path.join(out, "profile.jsonl"))
    with pytest.raises(MixedProfileError, match=r"2 different setups(.|\n)*threads.: 2") as info:
        profile_device.run([LocalRunner(**QUICK)], ["add"], 4, out, threads=2, progress=False)
    assert "this run on local" in str(info.value) and "profile.jsonl" in str(info.value)
    assert read_rows(os.path.join(out, "profile.jsonl")) == before


class FlakyRunner(LocalRunner):
    """The real local runner whose "device" goes away for `outage` calls in a row from call
    number `start` on, and which fails, as a runtime would, on a batch holding a dense model of
    `poison` = (cin, cout)."""

    def __init__(self, start, outage, poison=None, name="local"):
        super().__init__(**QUICK)
        self.start, self.outage, self.poison, self.calls = start, outage, poison, 0
        self.name = name

    def time(self, models, threads):
        self.calls += 1
        if self.start <= self.calls < self.start + self.outage:
            raise TransportError("adb: error: failed to get feature set: device offline")
        if self.poison is not None and any(self._dense_dims(m) == self.poison for m in models):
            raise RuntimeError("Node number 0 (FULLY_CONNECTED) failed to invoke.")
        return super().time(models, threads)

    @staticmethod
    def _dense_dims(model):
        interpreter = Interpreter(model_content=model)
        shapes = [d["shape"] for d in interpreter.get_input_details()]
        out = interpreter.get_output_details()[0]["shape"]
        return (int(shapes[0][-1]), int(out[-1])) if len(out) == 2 else None


def check_one_row_per_config(out, specs):
    keys = [r["key"] for r in read_rows(os.path.join(out, "profile.jsonl"))]
    assert len(keys) == len(set(keys)) == len(specs)
    assert set(keys) == {s.key() for s in specs}


def test_an_outage_mid_profile_is_retried_and_loses_no_configuration(tmp_path):
    out = str(tmp_path / "flaky")
    specs = sample_configs("dense", 12)
    # The first configuration fails on the "device": a model's own failure is stored as an
    # error row; the outage is not stored at all.
    poison = (specs[0].dims["cin"], specs[0].dims["cout"])
    runner = FlakyRunner(start=2, outage=3, poison=poison)
    with pytest.warns(UserWarning, match="'local' unreachable.*device offline"):
        result = run_profile([runner], specs, out, batch_size=4, progress=False, retry=FAST_RETRY)
    check_one_row_per_config(out, specs)
    errors = [r for r in result.rows if r["status"] == "error"]
    assert [r["key"] for r in errors] == [specs[0].key()]
    assert "failed to invoke" in errors[0]["error"]
    assert not any("offline" in json.dumps(r) for r in result.rows)


def test_a_run_stopped_by_an_outage_resumes_with_every_row_once(tmp_path):
    out = str(tmp_path / "outage")
    specs = sample_configs("dense", 12)
    runner = FlakyRunner(start=2, outage=100)  # away for longer than the retries last
    with pytest.warns(UserWarning), pytest.raises(DeviceUnavailableError) as info:
        run_profile([runner], specs, out, batch_size=4, progress=False, retry=FAST_RETRY)
    assert "'local' stayed unreachable: 4 attempts" in str(info.value)
    assert "rerun the same command" in str(info.value)
    saved = read_rows(os.path.join(out, "profile.jsonl"))
    assert len(saved) == 4 and all(r["status"] == "ok" for r in saved)  # the first batch
    assert not os.path.exists(os.path.join(out, "profile.lock"))
    result = run_profile([LocalRunner(**QUICK)], specs, out, batch_size=4, progress=False)
    assert result.measured == 8
    check_one_row_per_config(out, specs)
    assert all(r["status"] == "ok" for r in result.rows)


def test_several_devices_merge_into_the_rows_already_stored(tmp_path):
    out = str(tmp_path / "phones")
    specs = sample_configs("dense", 10)
    run_profile([LocalRunner(**QUICK)], specs[:2], out, progress=False)  # an earlier run
    # Two phones of one model, one of which drops out for good after its first batch.
    phones = [FlakyRunner(0, 0, name="phone_a"), FlakyRunner(2, 100, name="phone_b")]
    with pytest.warns(UserWarning), pytest.raises(DeviceUnavailableError, match="'phone_b'"):
        run_profile(phones, specs, out, batch_size=2, progress=False, retry=FAST_RETRY)
    # The earlier rows, phone_a's whole shard and phone_b's first batch, each once.
    rows = read_rows(os.path.join(out, "profile.jsonl"))
    assert [r["key"] for r in rows[:2]] == [s.key() for s in specs[:2]]
    assert len(rows) == 2 + 4 + 2 == len({r["key"] for r in rows})
    healthy = [FlakyRunner(0, 0, name="phone_a"), FlakyRunner(0, 0, name="phone_b")]
    result = run_profile(healthy, specs, out, batch_size=2, progress=False)
    assert result.measured == 2
    check_one_row_per_config(out, specs)


def test_a_killed_run_resumes_without_losing_or_duplicating_rows(tmp_path):
    out = str(tmp_path / "killed")
    path = os.path.join(out, "profile.jsonl")
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "profile_device.py"),
        "--kinds=dense",
        "--num_configs=40",
        f"--out_dir={out}",
        "--progress=false",
    ]
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not os.path.exists(path) or len(read_rows(path)) < 12):
        time.sleep(0.2)
    # A second run on the same directory while the first one runs is refused.
    lock = os.path.join(out, "profile.lock")
    with pytest.raises(ProfileLockedError, match=f"pid {proc.pid}.*{lock}"):
        profile_device.run([LocalRunner(**QUICK)], ["dense"], 40, out, progress=False)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_rows(path))
    assert 12 <= done < 40, "the run should be killed part-way"
    assert os.path.exists(lock)  # left behind by the kill: stale, taken over below
    with open(path, "a") as f:
        f.write('{"key": "torn')  # as if killed in the middle of a write
    resumed = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    assert "stale lock" in resumed.stderr and "torn last line" in resumed.stderr
    keys = [r["key"] for r in read_rows(path)]
    assert len(keys) == len(set(keys)) == 40
    assert set(keys) == {s.key() for s in sample_configs("dense", 40)}


def _cpu_seconds(pid) -> float:
    """CPU time process `pid` has used (user + system, from Linux /proc; 0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WatchingRunner(LocalRunner):
    """Times like LocalRunner, after watching for 0.2 s whether a converter process computes:
    a child using a quarter of a core or more over the window. (A process state of R once
    flagged children that only waited for a core on a loaded machine.)"""

    def __init__(self, cores):
        super().__init__(**QUICK)
        self.cores, self.converting = cores, []

    def host_cores(self, threads):
        return self.cores

    def time(self, models, threads):
        import multiprocessing

        before = {p.pid: _cpu_seconds(p.pid) for p in multiprocessing.active_children()}
        time.sleep(0.2)
        used = [_cpu_seconds(pid) - seconds for pid, seconds in before.items()]
        self.converting.append(max(used, default=0.0) >= 0.05)
        return super().time(models, threads)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads Linux /proc")
def test_no_model_converts_while_the_timing_takes_every_core(tmp_path):
    specs = sample_configs("conv2d", 12, seed=3)
    parallel = WatchingRunner(cores=0)  # a device elsewhere: convert ahead
    run_profile([parallel], specs, str(tmp_path / "a"), batch_size=4, progress=False)
    every = WatchingRunner(cores=os.cpu_count())
    run_profile([every], specs, str(tmp_path / "b"), batch_size=4, progress=False)
    assert any(parallel.converting)  # the watch sees a conversion when there is one
    assert not any(every.converting)
    check_one_row_per_config(str(tmp_path / "b"), specs)


@pytest.mark.slow
def test_a_conversion_that_hangs_or_crashes_fails_alone_and_the_profile_goes_on(tmp_path):
    import functools

    from faulty_conversion import convert_or_fail

    from fdi_keras.profiling import conversion_pool

    specs = sample_configs("dense", 8, seed=4)
    hung, crashed = specs[0], specs[3]  # one in each device's shard
    faulty = functools.partial(convert_or_fail, hang={hung.key()}, crash={crashed.key()})
    real_pool = conversion_pool.ConverterPool

    def pool_with_faults(timeout_s):
        return real_pool(timeout_s, convert=faulty)

    out = str(tmp_path / "faulty")
    # Two devices share the converter: a batch is blamed only for its own hang or crash.
    phones = [FlakyRunner(0, 0, name="phone_a"), FlakyRunner(0, 0, name="phone_b")]
    with pytest.MonkeyPatch.context() as patch:  # run_profile builds its own pool
        patch.setattr("fdi_keras.profiling.profiler.ConverterPool", pool_with_faults)
        run = run_profile(phones, specs, out, batch_size=2, progress=False, conversion_timeout_s=10)
    check_one_row_per_config(out, specs)
    errors = {r["key"]: r["error"] for r in run.rows if r["status"] == "error"}
    assert set(errors) == {hung.key(), crashed.key()}
    assert "no result after 10 s: the converter hung" in errors[hung.key()]
    assert "converter process died" in errors[crashed.key()]
    assert sum(r["status"] == "ok" for r in run.rows) == 6
