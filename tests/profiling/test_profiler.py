"""End-to-end profiling with the real LiteRT runtime on this machine."""

import os
import signal
import subprocess
import sys
import time

import keras
import pytest

import fdi_keras
from fdi_keras.profiling import LocalRunner, read_rows, sample_configs
from fdi_keras.timing import TimingTree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import profile_device  # noqa: E402


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
    assert "Rules:" in report and "conv2d" in report
    with open(os.path.join(out, "report.txt")) as f:
        assert f.read() == report


def test_rerunning_a_finished_profile_measures_nothing(profiled):
    out, _, _ = profiled
    specs = fdi_keras.profiling.sample_all(["conv2d", "dense", "global_pool"], 16)
    result = fdi_keras.profiling.run_profile([LocalRunner()], specs, out, progress=False)
    assert result.measured == 0 and len(result.rows) == 48


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
    assert report.total_us == pytest.approx(
        report.overhead_us + sum(r.time_us for r in report.rows)
    )
    assert report.total_ms > 0 and "total" in str(report)
    with pytest.raises(fdi_keras.MissingKindError, match="'softmax'"):
        fdi_keras.predict_latency(keras.Model(x, keras.layers.Softmax()(x)), tree)


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
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_rows(path))
    assert 12 <= done < 40, "the run should be killed part-way"
    with open(path, "a") as f:
        f.write('{"key": "torn')  # as if killed in the middle of a write
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    keys = [r["key"] for r in read_rows(path)]
    assert len(keys) == len(set(keys)) == 40
    assert set(keys) == {s.key() for s in sample_configs("dense", 40)}
