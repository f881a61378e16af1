"""The machine-speed check the benchmarks print next to their measurements
(benchmarks/common.py): a shared VM runs the same code tens of percent slower for hours, and a
table of measured against predicted times must say so."""

import json

import pytest
from ai_edge_litert.interpreter import Interpreter

from benchmarks.common import calibration_model, machine_speed, require_float32_single_thread
from fdi_keras.specs import LayerSpec
from fdi_keras.timing import TimingTree


def test_the_calibration_model_is_the_profilers_calibration_kernel():
    interpreter = Interpreter(model_content=calibration_model())
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert ops == {"CONV_2D"}
    (tensor,) = interpreter.get_input_details()
    assert list(tensor["shape"]) == [1, 14, 14, 32]


def test_machine_speed_compares_with_the_median_calibration_time_of_the_profile(tmp_path):
    times = [40.0, 50.0, 60.0, None]  # a row without one (an error row) is left out
    with open(tmp_path / "profile.jsonl", "w") as f:
        for i, t in enumerate(times):
            f.write(json.dumps({"key": str(i), "calibration_us": t}) + "\n")
    slower = machine_speed(str(tmp_path), 65.0)
    assert "+30.0%" in slower and "30% slower" in slower and "(50.0 us)" in slower
    assert "-10.0%" in machine_speed(str(tmp_path), 45.0)
    assert "10% faster" in machine_speed(str(tmp_path), 45.0)
    assert "as fast as when it was profiled" in machine_speed(str(tmp_path), 50.5)


def test_machine_speed_says_when_the_profile_has_no_calibration_times(tmp_path):
    (tmp_path / "profile.jsonl").write_text(json.dumps({"key": "a"}) + "\n")
    assert "no calibration times" in machine_speed(str(tmp_path), 65.0)


def test_a_float32_benchmark_refuses_an_int8_or_two_thread_tree():
    specs = [LayerSpec("dense", dict(m=1, cin=8 * i, cout=8)) for i in range(1, 30)]
    times = [1.0 + 0.1 * i for i in range(1, 30)]
    for metadata in ({"dtype": "int8", "threads": 1}, {"dtype": "float32", "threads": 2}):
        tree = TimingTree().fit(specs, times, metadata)
        with pytest.raises(ValueError, match=r"t.json was profiled for .* Pass a float32"):
            require_float32_single_thread(tree, "t.json")
    require_float32_single_thread(TimingTree().fit(specs, times, {"dtype": "float32"}), "t.json")
