import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from fdi_keras.errors import ProfileLockedError
from fdi_keras.profiling import ProfileLock


def write_lock(directory, **owner):
    path = directory / "profile.lock"
    path.write_text(json.dumps({"host": socket.gethostname(), "started": "then", **owner}))
    return path


@pytest.fixture
def live_pid():
    """The pid of another process that runs for the test's duration."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid no longer runs
    return proc.pid


def test_the_lock_file_holds_the_pid_and_goes_away(tmp_path):
    path = tmp_path / "profile.lock"
    with ProfileLock(str(tmp_path)) as lock:
        assert lock.path == str(path)
        owner = json.loads(path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with ProfileLock(str(tmp_path)):  # the same thread may take it again (tool + profiler)
            pass
        assert path.exists()
    assert not path.exists()


def test_a_second_run_is_refused_naming_the_lock_and_the_pid(tmp_path, live_pid):
    path = write_lock(tmp_path, pid=live_pid)
    with pytest.raises(ProfileLockedError) as info:
        ProfileLock(str(tmp_path)).acquire()
    assert f"pid {live_pid}" in str(info.value) and str(path) in str(info.value)
    assert json.loads(path.read_text())["pid"] == live_pid  # the owner keeps its lock


def test_another_thread_is_refused(tmp_path):
    errors = []

    def second_run():
        try:
            ProfileLock(str(tmp_path)).acquire()
        except ProfileLockedError as e:
            errors.append(e)

    with ProfileLock(str(tmp_path)):
        thread = threading.Thread(target=second_run)
        thread.start()
        thread.join()
    assert len(errors) == 1 and f"pid {os.getpid()}" in str(errors[0])


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, dead_pid):
    write_lock(tmp_path, pid=dead_pid)
    with pytest.warns(UserWarning, match=f"stale lock .*profile.lock.*pid {dead_pid}"):
        with ProfileLock(str(tmp_path)):
            assert json.loads((tmp_path / "profile.lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / "profile.lock").exists()


def test_a_lock_from_another_host_is_respected(tmp_path, dead_pid):
    write_lock(tmp_path, pid=dead_pid, host="elsewhere")
    with pytest.raises(ProfileLockedError, match=f"pid {dead_pid} on host 'elsewhere'"):
        ProfileLock(str(tmp_path)).acquire()


def test_a_lock_without_a_pid_is_respected_while_fresh(tmp_path):
    path = tmp_path / "profile.lock"
    path.write_text("")  # a run between creating the file and writing its pid
    with pytest.raises(ProfileLockedError, match="another run is starting"):
        ProfileLock(str(tmp_path)).acquire()
    os.utime(path, (0, 0))  # long ago: its run was killed while creating it
    with pytest.warns(UserWarning, match="holds no pid"):
        with ProfileLock(str(tmp_path)):
            pass
