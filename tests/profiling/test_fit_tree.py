"""tools/fit_tree.py and the setup check, on synthetic profile rows (fitting measures nothing)."""

import json
import os
import sys

import numpy as np
import pytest

from fdi_keras.errors import MixedProfileError
from fdi_keras.profiling import check_one_setup
from fdi_keras.profiling.fitting import setup_of
from fdi_keras.profiling.sampling import sample_configs
from fdi_keras.specs import LayerSpec
from fdi_keras.timing import TimingTree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import fit_tree  # noqa: E402

DEVICE = {"backend": "adb", "serial": "R58M", "device": "Google Pixel 7 (Tensor G2)"}


def synthetic_rows(kind, n, seed=0, threads=1, device=DEVICE):
    """Rows as the profiler writes them, timed by a made-up linear law of the dims."""
    rng = np.random.default_rng(seed)
    rows = []
    for spec in sample_configs(kind, n, seed, threads=threads):
        time_us = 2.0 + 1e-3 * float(np.prod(list(spec.dims.values()))) ** 0.5
        rows.append(
            {
                "key": spec.key(),
                "spec": spec.to_dict(),
                "device": device,
                "dtype": spec.dtype,
                "threads": spec.threads,
                "status": "ok",
                "time_us": time_us * rng.uniform(0.98, 1.02),
                "calibration_us": 50.0,
            }
        )
    return rows


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_fit_tree_refits_from_several_profiles(tmp_path):
    dense, pool = synthetic_rows("dense", 40), synthetic_rows("global_pool", 30, seed=1)
    a = write(tmp_path / "a.jsonl", dense)
    # Another phone of the same model, holding some of the same configurations again.
    other_phone = [{**r, "device": {**DEVICE, "serial": "R58N"}} for r in pool + dense[:5]]
    b = write(tmp_path / "b.jsonl", other_phone)
    out = str(tmp_path / "trees" / "pixel7.json")
    tree, report = fit_tree.run([a, b], out, tree_options={"min_samples_leaf": 5})
    assert sorted(tree.kinds_) == ["dense", "global_pool"]
    assert tree.metadata_["rows"] == 70  # the 5 repeated configurations count once
    assert tree.metadata_["profiles"] == [a, b]
    assert tree.min_samples_leaf == 5
    loaded = TimingTree.load(out)
    assert loaded.min_samples_leaf == 5
    with open(tmp_path / "trees" / "pixel7.report.txt") as f:
        assert f.read() == report
    assert "dense" in report and "global_pool" in report
    # The same tree as fitting those rows directly.
    direct = TimingTree(min_samples_leaf=5).fit_rows(dense + pool)
    specs = [LayerSpec.from_dict(r["spec"]) for r in dense + pool]
    assert loaded.predict(specs) == pytest.approx(direct.predict(specs))


def test_fit_tree_in_a_profile_directory_writes_report_txt(tmp_path):
    profile = write(tmp_path / "profile.jsonl", synthetic_rows("dense", 30))
    out = str(tmp_path / "timing_tree.json")
    fit_tree.run([profile], out, drift_correction=False)
    assert os.path.exists(tmp_path / "report.txt")


def test_fit_tree_skips_a_torn_last_line_with_a_warning_and_leaves_the_file(tmp_path):
    path = tmp_path / "profile.jsonl"
    write(path, synthetic_rows("dense", 30))
    with open(path, "a") as f:
        f.write('{"key": "torn')
    with pytest.warns(UserWarning, match="ends with a torn line"):
        tree, _ = fit_tree.run([str(path)], str(tmp_path / "t.json"))
    assert tree.metadata_["rows"] == 30 and path.read_text().endswith('"torn')


def test_fit_tree_refuses_profiles_of_different_setups(tmp_path):
    a = write(tmp_path / "one.jsonl", synthetic_rows("dense", 30))
    b = write(tmp_path / "two.jsonl", synthetic_rows("dense", 30, seed=2, threads=2))
    with pytest.raises(MixedProfileError) as info:
        fit_tree.run([a, b], str(tmp_path / "t.json"))
    message = str(info.value)
    assert "2 different setups" in message and '"threads": 2' in message
    assert "30 rows of" in message and "one.jsonl" in message and "two.jsonl" in message
    assert not os.path.exists(tmp_path / "t.json")


def test_fit_tree_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="No such profile file: .*missing.jsonl"):
        fit_tree.run([str(tmp_path / "missing.jsonl")], str(tmp_path / "t.json"))
    with pytest.raises(ValueError, match="at least one profile"):
        fit_tree.run([], str(tmp_path / "t.json"))


def test_setup_ignores_which_unit_of_a_device_model_measured():
    rows = synthetic_rows("dense", 3)
    assert setup_of(rows[0]) == {
        "device": {"backend": "adb", "device": "Google Pixel 7 (Tensor G2)"},
        "dtype": "float32",
        "threads": 1,
    }
    other_unit = {**rows[1], "device": {**DEVICE, "serial": "X", "host": "h", "node": "n"}}
    assert check_one_setup([rows[0], other_unit]) == setup_of(rows[0])
    other_model = {**rows[2], "device": {**DEVICE, "device": "Samsung S23 (Snapdragon 8 Gen 2)"}}
    with pytest.raises(MixedProfileError, match="1 rows of .*Snapdragon"):
        check_one_setup([rows[0], other_model])
    assert check_one_setup([]) is None
