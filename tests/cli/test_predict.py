"""fdi-predict: a saved model (with an fdi_keras layer) and a fitted tree -> per-kernel table."""

import json
import os
import subprocess
import sys

import keras
import pytest

import fdi_keras
from fdi_keras.cli import predict
from fdi_keras.features import compute_features
from fdi_keras.layers import LocalResponseNormalization
from fdi_keras.profiling.sampling import sample_configs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny CNN with LRN saved as .keras, and a tree fitted to a synthetic device."""
    specs = [
        s for kind in ("conv2d", "lrn", "global_pool", "dense") for s in sample_configs(kind, 80)
    ]
    times = [1.0 + 1e-3 * compute_features(s, tile=16)["flops"] for s in specs]
    tree = fdi_keras.TimingTree(tiles=(16,)).fit(specs, times)
    x = keras.Input((12, 12, 3))
    h = LocalResponseNormalization(2)(keras.layers.Conv2D(8, 3, activation="relu")(x))
    model = keras.Model(x, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(h)))
    folder = tmp_path_factory.mktemp("predict")
    model_path, tree_path = str(folder / "model.keras"), str(folder / "tree.json")
    model.save(model_path)
    tree.save(tree_path)
    return model, tree, model_path, tree_path


def test_run_reports_what_predict_latency_reports(files):
    model, tree, model_path, tree_path = files
    report = predict.run(model_path, tree_path)
    assert report.to_dict() == fdi_keras.predict_latency(model, tree).to_dict()
    assert [r.kind for r in report.rows] == ["conv2d", "lrn", "global_pool", "dense"]
    assert "total" in str(report)


def test_the_command_prints_the_table_or_json(files):
    _, _, model_path, tree_path = files
    cmd = [sys.executable, "-m", "fdi_keras.cli.predict", f"--model={model_path}"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run(
        [*cmd, f"--tree={tree_path}", "--json"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == predict.run(model_path, tree_path).to_dict()


def test_a_missing_file_is_named(files, tmp_path):
    _, _, model_path, _ = files
    with pytest.raises(FileNotFoundError, match="No timing tree at .*nowhere.json.*fdi-profile"):
        predict.run(model_path, str(tmp_path / "nowhere.json"))
