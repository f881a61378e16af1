"""Runners for remote devices: an Android phone over adb, a Linux board over ssh.

`AdbRunner` times each model with LiteRT's `benchmark_model` binary on the phone and parses its
output (`fdi_keras.profiling.benchmark_model`). `SshRunner` copies a small agent (`agent.py`
together with `timer.py`) to a board that has Python and `ai_edge_litert`, and runs the same
interleaved timing protocol as `LocalRunner` there.

Both implement the `Runner` protocol (`name`, `describe()`, `time(models, threads)`), so the
profiler treats them like the local runner. Both raise `TransportError` when the device cannot
be reached (adb: device offline / not found / unauthorized, a failed push; ssh: exit status
255, a failed copy; either: a command timeout, or the timing process killed by SIGKILL,
SIGTERM or SIGHUP); the profiler retries those. Other failures (benchmark_model or the agent
failing on a model) raise `RuntimeError`: the model's own failure, stored as an error row.

    runner = AdbRunner("R58M123ABC")                     # serial from `adb devices`
    timings = runner.time([tflite_bytes], threads=1)

    board = SshRunner("pi@raspberrypi.local")
    timings = board.time([tflite_bytes], threads=4)
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Sequence

from fdi_keras.errors import TransportError
from fdi_keras.profiling.benchmark_model import BenchmarkResult, parse_benchmark_output
from fdi_keras.profiling.timer import Timing

DEFAULT_BENCHMARK_BINARY = "/data/local/tmp/benchmark_model"
PROTOCOL_KEYS = ("rounds", "burst_seconds", "max_spread", "retries", "seed")
_TAIL_LINES = 20
# Exit statuses of a process killed by SIGHUP, SIGKILL or SIGTERM (as a shell reports them):
# the connection dropped or the process was killed; not the model's doing. (SIGSEGV and
# SIGABRT, a crash on the model, stay the model's failure.)
KILLED_STATUSES = (128 + 1, 128 + 9, 128 + 15, -1, -9, -15)
# What adb prints when it cannot reach the device (adb/client/*.cpp, adb/transport.cpp).
_ADB_TRANSPORT = re.compile(
    r"device offline|device '[^']*' not found|no devices/emulators found|device unauthorized"
    r"|device still (?:authorizing|connecting)|error: closed|protocol fault"
    r"|failed to get feature set|cannot connect to daemon|connection reset"
    r"|adb: error: failed to (?:read|copy)|insufficient permissions for device",
    re.IGNORECASE,
)
_VERSION = re.compile(r"(?i)\bversion\b\s*[:=]?\s*v?(\d+\.\d+[\w.+\-]*)")
_ANDROID_PROPS = (
    "ro.product.manufacturer",
    "ro.product.model",
    "ro.soc.model",
    "ro.board.platform",
    "ro.build.version.release",
    "ro.build.version.sdk",
    "ro.product.cpu.abi",
)


def _tail(text: str, n: int = _TAIL_LINES) -> str:
    lines = (text or "").strip().splitlines()
    return "\n".join(lines[-n:]) if lines else "<empty>"


def _run(
    cmd: list[str],
    timeout: float,
    check: bool = True,
    transport: Callable[[subprocess.CompletedProcess], bool] | None = None,
) -> subprocess.CompletedProcess:
    """Runs `cmd`; an error with the command and its output's tail when it fails.

    Raises:
        TransportError: it timed out, or it failed and `transport(proc)` says the device could
            not be reached (even with `check=False`).
        RuntimeError: it could not start, or it failed otherwise and `check` is set.
    """
    shown = shlex.join(cmd)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
        )
    except FileNotFoundError as e:
        raise RuntimeError(
            f"Could not start {cmd[0]!r}: it is not installed or not on PATH. Install it or "
            f"pass its full path. Command: {shown}"
        ) from e
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        raise TransportError(
            f"Command timed out after {timeout} s: {shown}\nstderr (last lines):\n{_tail(stderr)}"
        ) from e
    unreachable = proc.returncode != 0 and transport is not None and transport(proc)
    if unreachable or (check and proc.returncode != 0):
        raise (TransportError if unreachable else RuntimeError)(
            f"Command failed with exit code {proc.returncode}: {shown}\n"
            f"stderr (last lines):\n{_tail(proc.stderr)}\n"
            f"stdout (last lines):\n{_tail(proc.stdout)}"
        )
    return proc


def _always(proc: subprocess.CompletedProcess) -> bool:
    """Copying files and making directories fail only when the device is out of reach."""
    return True


def _adb_unreachable(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode in KILLED_STATUSES or bool(
        _ADB_TRANSPORT.search(f"{proc.stderr}\n{proc.stdout}")
    )


def _ssh_unreachable(proc: subprocess.CompletedProcess) -> bool:
    # ssh exits with 255 for its own errors (connection refused, timeout, lost link).
    return proc.returncode == 255 or proc.returncode in KILLED_STATUSES


def _cleanup(cmd: list[str], timeout: float) -> None:
    try:
        _run(cmd, timeout, check=False)
    except RuntimeError:
        pass  # leftover model files on the device are harmless; the real error matters more


def _check_threads(threads) -> None:
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"`threads` must be an integer >= 1. Received: threads={threads!r}")


def _write_models(models: list[bytes], directory: str) -> list[str]:
    token = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    paths = []
    for i, model in enumerate(models):
        path = os.path.join(directory, f"fdi_{token}_{i}.tflite")
        with open(path, "wb") as f:
            f.write(model)
        paths.append(path)
    return paths


def timing_from_benchmark(result: BenchmarkResult) -> Timing:
    """A `Timing` from one `benchmark_model` run.

    `benchmark_model` reports the mean and standard deviation of its regular runs, not a
    median: `median_us` is that mean, unless the binary also printed a median (recent LiteRT
    builds do), and `spread` is std/mean (a relative standard deviation, not the local
    runner's IQR/median). `min_us` is the fastest regular run. `rounds` and `invokes` are
    both the number of regular runs.
    """
    center = result.median_us if result.median_us is not None else result.avg_us
    spread = result.std_us / result.avg_us if result.avg_us > 0 else 0.0
    return Timing(
        median_us=center,
        spread=spread,
        rounds=result.count,
        invokes=result.count,
        min_us=result.min_us,
    )


class AdbRunner:
    """An Android phone's CPU through LiteRT's `benchmark_model` binary, over adb.

    Each model is pushed to `remote_dir` and timed in its own `benchmark_model` run (warm-up
    runs, then `runs` timed runs, XNNPack on, op profiling on); the models of one `time()` call
    are therefore timed one after the other, not interleaved as on the local runner. Build or
    download `benchmark_model` for the phone's ABI and `adb push` it to `benchmark_binary` first.

    Args:
        serial: the device serial, as listed by `adb devices`.
        benchmark_binary: path of `benchmark_model` on the phone.
        remote_dir: directory on the phone for the pushed models (created if needed).
        adb: the adb executable.
        runs: `--num_runs` (benchmark_model also runs for at least one second).
        warmup_runs: `--warmup_runs`.
        name: label of this device's rows and shard; defaults to `serial`.
        extra_args: more `benchmark_model` flags, e.g. `("--min_secs=0",)`.
        timeout: seconds allowed for one adb command.

    Example:

        runner = AdbRunner("R58M123ABC", runs=100)
        print(runner.describe()["device"])
        timing = runner.time([tflite_bytes], threads=1)[0]
    """

    def __init__(
        self,
        serial: str,
        benchmark_binary: str | None = DEFAULT_BENCHMARK_BINARY,
        remote_dir: str = "/data/local/tmp/fdi_keras",
        adb: str = "adb",
        runs: int = 50,
        warmup_runs: int = 5,
        name: str | None = None,
        extra_args: Sequence[str] = (),
        timeout: float = 600.0,
    ):
        if not isinstance(serial, str) or not serial:
            raise ValueError(
                "`serial` must be a device serial as listed by `adb devices`. "
                f"Received: serial={serial!r}"
            )
        if not isinstance(runs, int) or runs < 1:
            raise ValueError(f"`runs` must be an integer >= 1. Received: runs={runs!r}")
        if not isinstance(warmup_runs, int) or warmup_runs < 0:
            raise ValueError(
                f"`warmup_runs` must be an integer >= 0. Received: warmup_runs={warmup_runs!r}"
            )
        if isinstance(extra_args, str):
            raise ValueError(
                "`extra_args` must be a sequence of flags, e.g. ('--min_secs=0',). "
                f"Received: extra_args={extra_args!r}"
            )
        self.serial = serial
        self.benchmark_binary = benchmark_binary or DEFAULT_BENCHMARK_BINARY
        self.remote_dir = remote_dir.rstrip("/") or "/"
        self.adb = adb
        self.runs = runs
        self.warmup_runs = warmup_runs
        self.name = name or serial
        self.extra_args = tuple(extra_args)
        self.timeout = timeout
        self._description: dict | None = None

    def _adb(self, *args: str) -> list[str]:
        return [self.adb, "-s", self.serial, *args]

    def _shell(self, command: list[str]) -> list[str]:
        # One string: adb hands it to the phone's shell, so quoting survives.
        return self._adb("shell", shlex.join(command))

    def benchmark_command(self, graph: str, threads: int) -> list[str]:
        """The `benchmark_model` command line (run on the phone) for one pushed model."""
        return [
            self.benchmark_binary,
            f"--graph={graph}",
            f"--num_threads={threads}",
            "--enable_op_profiling=true",
            f"--num_runs={self.runs}",
            f"--warmup_runs={self.warmup_runs}",
            "--use_xnnpack=true",
            *self.extra_args,
        ]

    def host_cores(self, threads: int) -> int:
        return 0  # the timing runs on the device, not on this machine

    def describe(self) -> dict:
        """Backend, phone model and SoC, Android version, and the binary's version if printed."""
        if self._description is None:
            script = "; ".join(f"getprop {prop}" for prop in _ANDROID_PROPS)
            proc = _run(self._adb("shell", script), self.timeout, transport=_adb_unreachable)
            lines = proc.stdout.replace("\r", "")
            values = dict(zip(_ANDROID_PROPS, [v.strip() for v in lines.split("\n")], strict=False))
            soc = values.get("ro.soc.model") or values.get("ro.board.platform") or "unknown SoC"
            model = " ".join(
                v
                for v in (values.get("ro.product.manufacturer"), values.get("ro.product.model"))
                if v
            )
            version = self._binary_version()
            self._description = {
                "backend": "adb",
                "serial": self.serial,
                "device": f"{model or 'unknown model'} ({soc})",
                "soc": soc,
                "android": values.get("ro.build.version.release", ""),
                "sdk": values.get("ro.build.version.sdk", ""),
                "abi": values.get("ro.product.cpu.abi", ""),
                "runtime": f"benchmark_model {version or '(version not printed)'}",
                "benchmark_binary": self.benchmark_binary,
                "runs": self.runs,
                "warmup_runs": self.warmup_runs,
                "statistic": "benchmark_model mean (median when printed), spread = std/mean",
            }
        return dict(self._description)

    def _binary_version(self) -> str | None:
        cmd = self._shell([self.benchmark_binary, "--version"])
        proc = _run(cmd, self.timeout, check=False, transport=_adb_unreachable)
        found = _VERSION.search(proc.stdout + "\n" + proc.stderr)
        return found[1] if found else None

    def profile(self, models: list[bytes], threads: int) -> list[BenchmarkResult]:
        """Runs `benchmark_model` on each model; the full parsed results, op tables included.

        Raises:
            ValueError: `threads` is not an integer >= 1.
            TransportError: the phone could not be reached (see the module docstring).
            RuntimeError: `benchmark_model` failed on a model or printed no timing.
        """
        _check_threads(threads)
        if not models:
            return []
        with tempfile.TemporaryDirectory(prefix="fdi_adb_") as tmp:
            local = _write_models(models, tmp)
            remote = [f"{self.remote_dir}/{os.path.basename(p)}" for p in local]
            _run(self._shell(["mkdir", "-p", self.remote_dir]), self.timeout, transport=_always)
            try:
                _run(
                    self._adb("push", *local, self.remote_dir + "/"),
                    self.timeout,
                    transport=_always,
                )
                return [self._benchmark(path, threads) for path in remote]
            finally:
                _cleanup(self._shell(["rm", "-f", *remote]), self.timeout)

    def _benchmark(self, graph: str, threads: int) -> BenchmarkResult:
        cmd = self._shell(self.benchmark_command(graph, threads))
        proc = _run(cmd, self.timeout, transport=_adb_unreachable)
        try:
            return parse_benchmark_output(proc.stdout + "\n" + proc.stderr)
        except ValueError as e:
            raise RuntimeError(
                f"benchmark_model printed no timing for {graph}. Command: {shlex.join(cmd)}\n{e}"
            ) from e

    def time(self, models: list[bytes], threads: int) -> list[Timing]:
        """One `Timing` per model (see `timing_from_benchmark` for what the numbers mean)."""
        return [timing_from_benchmark(r) for r in self.profile(models, threads)]


class SshRunner:
    """A Linux board's CPU (Raspberry Pi, Jetson, ...) timed over ssh with the local protocol.

    On first use, `agent.py` and `timer.py` are copied to `remote_dir` on the board; each
    `time()` call copies the models there and runs the agent, which times them side by side
    with `timer.time_models`, exactly as `LocalRunner` does here. The board needs Python 3 with
    `ai_edge_litert` (`pip install ai-edge-litert`) and key-based ssh login.

    Args:
        host: ssh destination, e.g. "pi@raspberrypi.local".
        python: the board's Python interpreter (a venv's python works).
        remote_dir: directory on the board for the agent and models (created if needed).
        ssh: command that runs a shell command on `host`; called as
            `[*ssh, host, command]` (e.g. `("ssh", "-p", "2222")`).
        scp: command that copies local files into a directory of `host`; called as
            `[*scp, *files, f"{host}:{remote_dir}/"]`.
        name: label of this device's rows and shard; defaults to `host`.
        timeout: seconds allowed for one remote command.
        **protocol: timing protocol arguments of `timer.time_models` (`rounds`,
            `burst_seconds`, `max_spread`, `retries`, `seed`).

    Example:

        board = SshRunner("pi@raspberrypi.local", python="/home/pi/venv/bin/python")
        print(board.describe()["device"])       # e.g. "raspberrypi (Raspberry Pi 5 ...)"
        timings = board.time([tflite_bytes], threads=4)
    """

    def __init__(
        self,
        host: str,
        python: str = "python3",
        remote_dir: str = "/tmp/fdi_keras",
        ssh: Sequence[str] = ("ssh",),
        scp: Sequence[str] = ("scp",),
        name: str | None = None,
        timeout: float = 1800.0,
        **protocol,
    ):
        if not isinstance(host, str) or not host:
            raise ValueError(
                f"`host` must be an ssh destination like 'pi@board'. Received: host={host!r}"
            )
        unknown = sorted(set(protocol) - set(PROTOCOL_KEYS))
        if unknown:
            raise ValueError(
                f"Unknown timing protocol arguments {unknown}; expected some of "
                f"{list(PROTOCOL_KEYS)}. Received: {protocol!r}"
            )
        self.host = host
        self.python = python
        self.remote_dir = remote_dir.rstrip("/") or "/"
        self.ssh = self._command("ssh", ssh)
        self.scp = self._command("scp", scp)
        self.name = name or host
        self.timeout = timeout
        self.protocol = protocol
        self._agent_ready = False
        self._description: dict | None = None

    @staticmethod
    def _command(what: str, command) -> tuple[str, ...]:
        if isinstance(command, str):
            command = (command,)
        command = tuple(command)
        if not command or not all(isinstance(part, str) for part in command):
            raise ValueError(
                f"`{what}` must be a non-empty sequence of strings, e.g. ('{what}',). "
                f"Received: {what}={command!r}"
            )
        return command

    def _ssh(self, command: list[str]) -> list[str]:
        # ssh joins its arguments and hands them to the remote shell: quote once, as one string.
        return [*self.ssh, self.host, shlex.join(command)]

    def _copy(self, paths: list[str]) -> None:
        _run(
            [*self.scp, *paths, f"{self.host}:{self.remote_dir}/"], self.timeout, transport=_always
        )

    def _ensure_agent(self) -> None:
        if self._agent_ready:
            return
        here = os.path.dirname(os.path.abspath(__file__))
        _run(self._ssh(["mkdir", "-p", self.remote_dir]), self.timeout, transport=_always)
        self._copy([os.path.join(here, "agent.py"), os.path.join(here, "timer.py")])
        self._agent_ready = True

    def _agent(self, *args: str) -> list[str]:
        return self._ssh([self.python, f"{self.remote_dir}/agent.py", *args])

    def host_cores(self, threads: int) -> int:
        return 0  # the timing runs on the device, not on this machine

    def describe(self) -> dict:
        """Backend, board model and runtime versions, as reported by the agent on the board."""
        if self._description is None:
            self._ensure_agent()
            cmd = self._agent("--describe")
            info = self._json_lines(_run(cmd, self.timeout, transport=_ssh_unreachable), cmd)[-1]
            self._description = {
                "backend": "ssh",
                "host": self.host,
                "device": info["device"],
                "node": info["node"],
                "machine": info["machine"],
                "python": info["python"],
                "runtime": f"ai_edge_litert {info['ai_edge_litert']}",
            }
        return dict(self._description)

    def time(self, models: list[bytes], threads: int) -> list[Timing]:
        """Times the models side by side on the board; one `Timing` per model, in order.

        Raises:
            ValueError: `threads` is not an integer >= 1.
            TransportError: the board could not be reached, or the agent was killed.
            RuntimeError: the agent failed on the models.
        """
        _check_threads(threads)
        if not models:
            return []
        self._ensure_agent()
        flags = [f"--{key}={value}" for key, value in self.protocol.items()]
        with tempfile.TemporaryDirectory(prefix="fdi_ssh_") as tmp:
            local = _write_models(models, tmp)
            remote = [f"{self.remote_dir}/{os.path.basename(p)}" for p in local]
            self._copy(local)
            try:
                cmd = self._agent(f"--threads={threads}", *flags, *remote)
                proc = _run(cmd, self.timeout, transport=_ssh_unreachable)
                results = self._json_lines(proc, cmd)
            finally:
                _cleanup(self._ssh(["rm", "-f", *remote]), self.timeout)
        by_index = {r.get("index"): r for r in results}
        if sorted(by_index) != list(range(len(models))):
            raise RuntimeError(
                f"The agent reported {len(results)} results for {len(models)} models. "
                f"Command: {shlex.join(cmd)}"
            )
        return [
            Timing(r["median_us"], r["spread"], r["rounds"], r["invokes"], r["min_us"])
            for r in (by_index[i] for i in range(len(models)))
        ]

    @staticmethod
    def _json_lines(proc: subprocess.CompletedProcess, cmd: list[str]) -> list[dict]:
        results = []
        for line in proc.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    results.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        if not results:
            raise RuntimeError(
                f"The agent printed no JSON result. Command: {shlex.join(cmd)}\n"
                f"stdout (last lines):\n{_tail(proc.stdout)}\nstderr (last lines):\n"
                f"{_tail(proc.stderr)}"
            )
        return results
