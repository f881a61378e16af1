"""The converter worker never outlives a killed profiler, even one killed while it started."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

PROBE = "import sys; from fdi_keras.profiling.convert import die_with_parent; "


def test_a_worker_whose_profiler_already_died_exits():
    # The worker was adopted before it armed the death signal: its parent is not the profiler.
    code = PROBE + "die_with_parent(parent_pid=-1); print('still here')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1 and "still here" not in done.stdout


def test_a_worker_of_a_living_profiler_stays():
    code = PROBE + f"die_with_parent(parent_pid={os.getpid()}); print('still here')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "still here" in done.stdout
