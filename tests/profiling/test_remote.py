"""Tests of the remote runners.

SshRunner runs end to end against this machine: `ssh` is replaced by a local shell that runs
the command (as ssh hands it to the remote shell) and `scp` by `cp`, so the agent really times
a model with LiteRT here. No phone exists here, so AdbRunner talks to a fake `adb` script that
logs its arguments and prints a recorded benchmark_model output.
"""

import json
import os
import platform
import shlex
import sys

import ai_edge_litert
import keras
import numpy as np
import pytest
import tensorflow as tf

from fdi_keras.errors import TransportError
from fdi_keras.profiling import agent
from fdi_keras.profiling.remote import AdbRunner, SshRunner, timing_from_benchmark
from fdi_keras.profiling.timer import Timing

DATA = os.path.join(os.path.dirname(__file__), os.pardir, "data", "benchmark_model")
PACKAGE = os.path.dirname(agent.__file__)

# `[*ssh, host, command]`: drop the host, run the command string with sh, like sshd does.
LOCAL_SSH = ("sh", "-c", 'shift; exec sh -c "$*"', "ssh")
# `[*scp, *files, "host:dir/"]`: strip "host:" from the last argument and cp the files there.
LOCAL_SCP = (
    "sh",
    "-c",
    'eval "dest=\\${$#}"; dest=${dest#*:}; '
    'while [ $# -gt 1 ]; do cp "$1" "$dest" || exit 1; shift; done',
    "scp",
)


def _read(name: str) -> str:
    with open(os.path.join(DATA, name)) as f:
        return f.read()


@pytest.fixture(scope="module")
def tiny_model() -> bytes:
    inputs = keras.Input((8,), batch_size=1)
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _board(tmp_path, **kwargs) -> SshRunner:
    kwargs = {
        "python": sys.executable,
        "remote_dir": str(tmp_path / "board"),
        "ssh": LOCAL_SSH,
        "scp": LOCAL_SCP,
        "rounds": 3,
        "burst_seconds": 0.0005,
        "retries": 0,
        **kwargs,
    }
    return SshRunner("pi@board", **kwargs)


def test_ssh_runner_times_models_end_to_end(tmp_path, tiny_model):
    board = _board(tmp_path)
    assert board.name == "pi@board"
    timings = board.time([tiny_model, tiny_model], threads=1)
    assert len(timings) == 2
    for timing in timings:
        assert isinstance(timing, Timing)
        assert 0 < timing.median_us < 1e5
        assert timing.rounds == 3 and timing.invokes >= 3
    remote = tmp_path / "board"
    # The agent and the very timer.py of this package were copied; the models were removed.
    assert sorted(os.listdir(remote)) == ["agent.py", "timer.py"]
    with open(os.path.join(PACKAGE, "timer.py"), "rb") as f:
        assert (remote / "timer.py").read_bytes() == f.read()


def test_ssh_runner_describe(tmp_path):
    board = _board(tmp_path, name="pi5")
    info = board.describe()
    assert board.name == "pi5"
    assert info["backend"] == "ssh" and info["host"] == "pi@board"
    assert info["runtime"] == f"ai_edge_litert {ai_edge_litert.__version__}"
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    # The board's own name is kept apart: identical boards are one setup (see fitting.py).
    assert info["node"] == platform.node() and platform.node() not in info["device"]
    json.dumps(info)


def test_ssh_runner_failure_shows_command_and_stderr(tmp_path, tiny_model):
    board = _board(tmp_path, python=str(tmp_path / "no-python"))
    with pytest.raises(RuntimeError, match="exit code") as info:
        board.time([tiny_model], threads=1)
    message = str(info.value)
    assert "agent.py" in message and "no-python" in message  # the command, and sh's complaint
    assert not isinstance(info.value, TransportError)  # the board answered: not a transport fault


def test_ssh_runner_transport_errors(tmp_path, tiny_model):
    # ssh's own failures exit with 255.
    unreachable = (
        "sh",
        "-c",
        "echo 'ssh: connect to host board: Connection timed out' >&2; exit 255",
    )
    with pytest.raises(TransportError, match="exit code 255.*Connection timed out"):
        _board(tmp_path, ssh=unreachable).describe()
    # The agent killed on the board (out of memory, a reboot): SIGKILL, reported by the shell.
    killed = tmp_path / "killed-python"
    killed.write_text("#!/bin/sh\nkill -9 $$\n")
    killed.chmod(0o755)
    with pytest.raises(TransportError, match="exit code (137|-9)"):
        _board(tmp_path, python=str(killed)).time([tiny_model], threads=1)
    # scp failing to copy the models.
    with pytest.raises(TransportError, match="exit code 1"):
        _board(tmp_path, scp=("sh", "-c", "exit 1")).time([tiny_model], threads=1)


def test_ssh_runner_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown timing protocol arguments"):
        SshRunner("pi@board", round=3)
    with pytest.raises(ValueError, match="host"):
        SshRunner("")
    with pytest.raises(ValueError, match="ssh"):
        SshRunner("pi@board", ssh=())
    with pytest.raises(ValueError, match="threads"):
        _board(tmp_path).time([b"x"], threads=0)
    assert _board(tmp_path).time([], threads=1) == []


def test_agent_without_models_fails(capsys):
    assert agent.main([]) == 2
    assert "no models" in capsys.readouterr().err


def _fake_adb(tmp_path, output: str, exit_code: int = 0, fail_all: bool = False) -> tuple:
    """An `adb` that logs its arguments and answers like a phone with benchmark_model."""
    log = tmp_path / "adb_log.jsonl"
    out = tmp_path / "benchmark_output.txt"
    out.write_text(output)
    script = tmp_path / "adb"
    script.write_text(f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
entry = {{"args": args}}
if "push" in args:
    entry["sizes"] = [os.path.getsize(p) for p in args[args.index("push") + 1:-1]]
with open({str(log)!r}, "a") as f:
    f.write(json.dumps(entry) + "\\n")
if {fail_all!r}:
    sys.stderr.write("error: device '" + args[1] + "' not found\\n")
    sys.exit(1)
command = args[3] if len(args) > 3 and args[2] == "shell" else ""
if "getprop" in command:
    print("Google\\r\\nPixel 7\\r\\nTensor G2\\r\\ngs201\\r\\n14\\r\\n34\\r\\narm64-v8a\\r")
elif "--version" in command:
    sys.stderr.write("ERROR: Unconsumed cmdline flags: --version\\n")
    sys.exit(1)
elif "--graph=" in command:
    sys.stderr.write(open({str(out)!r}).read())  # benchmark_model logs to stderr
    sys.exit({exit_code})
""")
    script.chmod(0o755)

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()]

    return str(script), calls


def test_adb_runner_commands_and_timings(tmp_path):
    adb, calls = _fake_adb(tmp_path, _read("litert_xnnpack_fc_fp32_android_sme2.txt"))
    runner = AdbRunner("R58M", adb=adb, runs=7, warmup_runs=3, remote_dir="/data/local/tmp/fk")
    models = [b"model-zero", b"model-one!!"]
    timings = runner.time(models, threads=2)

    # median=1373 printed by this build; spread is std/mean = 14 / 1379.64; min=1362.
    assert timings == [Timing(1373.0, 14 / 1379.64, 1000, 1000, 1362.0)] * 2
    log = calls()
    assert all(c["args"][:2] == ["-s", "R58M"] for c in log)
    assert log[0]["args"][2:] == ["shell", "mkdir -p /data/local/tmp/fk"]
    push = log[1]
    assert push["args"][2] == "push" and push["args"][-1] == "/data/local/tmp/fk/"
    assert push["sizes"] == [len(m) for m in models]
    remote = [f"/data/local/tmp/fk/{os.path.basename(p)}" for p in push["args"][3:-1]]
    for i, call in enumerate(log[2:4]):
        assert call["args"][2] == "shell"
        assert shlex.split(call["args"][3]) == [
            "/data/local/tmp/benchmark_model",
            f"--graph={remote[i]}",
            "--num_threads=2",
            "--enable_op_profiling=true",
            "--num_runs=7",
            "--warmup_runs=3",
            "--use_xnnpack=true",
        ]
    assert shlex.split(log[4]["args"][3]) == ["rm", "-f", *remote]
    assert len(log) == 5


def test_adb_runner_profile_and_mean_only_builds(tmp_path):
    adb, _ = _fake_adb(tmp_path, _read("tflite_v2_8_start_column_riscv64.txt"))
    runner = AdbRunner("emulator-5554", adb=adb, benchmark_binary=None)
    assert runner.benchmark_binary == "/data/local/tmp/benchmark_model"
    result = runner.profile([b"m"], threads=1)[0]
    assert len(result.ops) == 31 and result.by_type["CONV_2D"] == 2651.853
    # No median printed: the mean (avg=2.95034e+06) stands in for it.
    timing = timing_from_benchmark(result)
    assert timing.median_us == pytest.approx(2.95034e6)
    assert timing.spread == pytest.approx(109798 / 2.95034e6)
    assert (timing.rounds, timing.invokes) == (50, 50)


def test_adb_runner_describe(tmp_path):
    adb, _ = _fake_adb(tmp_path, "")
    info = AdbRunner("R58M", adb=adb, name="pixel7").describe()
    assert info["backend"] == "adb" and info["serial"] == "R58M"
    assert info["device"] == "Google Pixel 7 (Tensor G2)"
    assert (info["android"], info["sdk"], info["abi"]) == ("14", "34", "arm64-v8a")
    assert info["runtime"] == "benchmark_model (version not printed)"
    json.dumps(info)


def test_adb_runner_failures(tmp_path):
    adb, _ = _fake_adb(tmp_path, "", fail_all=True)
    with pytest.raises(TransportError, match="exit code 1") as info:  # retried by the profiler
        AdbRunner("R58M", adb=adb).time([b"m"], threads=1)
    assert "-s R58M" in str(info.value) and "device 'R58M' not found" in str(info.value)
    with pytest.raises(TransportError, match="not found"):
        AdbRunner("R58M", adb=adb).describe()

    (tmp_path / "crash").mkdir()
    adb, _ = _fake_adb(tmp_path / "crash", "ERROR: Failed to allocate tensors!\n", exit_code=1)
    with pytest.raises(RuntimeError, match="Failed to allocate tensors") as info:
        AdbRunner("R58M", adb=adb).time([b"m"], threads=1)
    assert not isinstance(info.value, TransportError)  # the model's own failure: an error row

    table_only = _read("tflite_nnapi_op_table_only.txt")
    (tmp_path / "second").mkdir()
    adb, _ = _fake_adb(tmp_path / "second", table_only)
    with pytest.raises(RuntimeError, match="printed no timing") as info:
        AdbRunner("R58M", adb=adb).time([b"m"], threads=1)
    assert "[ArgMax]:70" in str(info.value)

    with pytest.raises(RuntimeError, match="Could not start"):
        AdbRunner("R58M", adb=str(tmp_path / "no-adb")).time([b"m"], threads=1)


def test_adb_runner_argument_errors():
    with pytest.raises(ValueError, match="serial"):
        AdbRunner("")
    with pytest.raises(ValueError, match="runs"):
        AdbRunner("R58M", runs=0)
    with pytest.raises(ValueError, match="threads"):
        AdbRunner("R58M").time([b"m"], threads=0)
    assert AdbRunner("R58M").name == "R58M"


def test_agent_run_matches_the_timer_protocol(tmp_path, tiny_model):
    path = tmp_path / "m.tflite"
    path.write_bytes(tiny_model)
    (result,) = agent.run([str(path)], threads=1, rounds=2, burst_seconds=0.0005, retries=0)
    assert result["index"] == 0 and result["model"] == str(path)
    assert result["rounds"] == 2 and np.isfinite(result["median_us"])
