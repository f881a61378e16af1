"""tools/slim.py end to end on a CIFAR-10 slice: plan, slim, export, measure, report."""

import json
import os
import sys

import numpy as np
from rebirth_helpers import inception

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import slim as slim_tool  # noqa: E402


def test_slim_tool_dry_run_then_slim(tmp_path, cifar_slice, staircase_tree_with_lrn):
    x, y = cifar_slice
    model = inception(shape=(32, 32, 3), bn=True)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    model_path, tree_path = str(tmp_path / "in.keras"), str(tmp_path / "tree.json")
    data_path = str(tmp_path / "data.npz")
    model.save(model_path)
    staircase_tree_with_lrn.save(tree_path)
    raw = (x * 255).astype("uint8")
    np.savez(data_path, x_train=raw[:640], y_train=y[:640], x_test=raw[640:], y_test=y[640:])
    out = str(tmp_path / "out")

    planned = slim_tool.run(model_path, data_path, out, tree_path, dry_run=True)
    assert os.listdir(out) == ["plan.json"]
    kinds = [m["kind"] for m in planned["plan"]["merges"]]
    assert kinds.count("branch") == 1 and kinds.count("fold_bn") == 6
    assert kinds.count("reduction") == 2

    report = slim_tool.run(
        model_path,
        data_path,
        out,
        tree_path,
        plan_path=os.path.join(out, "plan.json"),
        layerwise_samples=384,
        finetune_epochs=1,
    )
    assert set(os.listdir(out)) >= {"plan.json", "slimmed.keras", "slimmed.tflite", "report.json"}
    with open(os.path.join(out, "report.json")) as f:
        assert json.load(f) == json.loads(json.dumps(report))
    assert report["slimmed"]["predicted_ms"] < report["input"]["predicted_ms"]
    assert report["slimmed"]["measured_ms"] > 0 and report["slimmed"]["peak_memory_mb"] > 0
    assert [s["kind"] for s in report["history"]].count("branch") == 1
