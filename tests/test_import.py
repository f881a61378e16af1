"""`import fdi_keras` imports no TensorFlow; the cost model works under another Keras backend.

Each check runs in a fresh interpreter: this one already has TensorFlow loaded.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="a non-TensorFlow Keras backend needs jax (pip install fdi_keras[test])",
)

# A tree fitted in-process on synthetic times (no profile, no LiteRT), a small CNN and its
# predicted latency.
PREDICT = """
import keras
from fdi_keras import LayerSpec, TimingTree, predict_latency
from fdi_keras.features import compute_features

specs = [LayerSpec("conv2d", dict(h=h, w=h, cin=3, cout=c, kh=3, kw=3, sh=1, sw=1))
         for h in (8, 16, 32) for c in range(4, 40, 3)]
specs += [LayerSpec("pool2d", dict(h=h, w=h, c=c, kh=2, kw=2, sh=2, sw=2), {"op": "max"})
          for h in (8, 16, 32) for c in range(4, 40, 3)]
specs += [LayerSpec("dense", dict(m=1, cin=i, cout=o))
          for i in (64, 256, 1024) for o in range(2, 40, 3)]
tree = TimingTree().fit(specs, [2.0 + 1e-3 * compute_features(s)["flops"] for s in specs])
tree.save(TREE_PATH)
x = keras.Input((16, 16, 3))
h = keras.layers.Conv2D(8, 3, activation="relu")(x)
h = keras.layers.Flatten()(keras.layers.MaxPooling2D()(h))
model = keras.Model(x, keras.layers.Dense(4)(h))
report = predict_latency(model, TimingTree.load(TREE_PATH))
assert [r.kind for r in report.rows] == ["conv2d", "pool2d", "dense"], report.rows
assert report.total_ms > 0
"""


def run_python(parts, tmp_path, backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": ROOT}
    code = f"TREE_PATH = {str(tmp_path / 'tree.json')!r}\n"
    code += "".join(textwrap.dedent(part) for part in parts)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@needs_jax
def test_import_fdi_keras_imports_no_tensorflow(tmp_path):
    check = """
        import sys
        import fdi_keras
        assert "tensorflow" not in sys.modules, "import fdi_keras imported TensorFlow"
        assert "fdi_keras.export" not in sys.modules and "fdi_keras.rebirth" not in sys.modules
    """
    assert run_python([check], tmp_path, "jax") == ""


@needs_jax
def test_predict_latency_under_jax_without_tensorflow_installed(tmp_path):
    """With TensorFlow unimportable (a JAX-only machine), fit, save, load, predict all work.
    (Where TensorFlow is installed, Keras's own `serialize_keras_object` imports it.)"""
    no_tensorflow = """
        import sys
        sys.modules["tensorflow"] = None  # import tensorflow raises ImportError
        import keras
        import fdi_keras
    """
    lrn = """
        from fdi_keras.layers import LocalResponseNormalization
        x = keras.Input((8, 8, 4))
        lrn = keras.Model(x, LocalResponseNormalization(2)(keras.layers.Conv2D(4, 1)(x)))
        kinds = [k.spec.kind for k in fdi_keras.model_kernels(lrn)]
        assert kinds == ["conv2d", "lrn"], kinds
        try:
            lrn(keras.ops.ones((1, 8, 8, 4)))
        except NotImplementedError as e:
            assert "only with the TensorFlow backend" in str(e)
        else:
            raise AssertionError("LRN ran without TensorFlow")
        print(keras.backend.backend(), "OK")
    """
    out = run_python([no_tensorflow, PREDICT, lrn], tmp_path, "jax")
    assert out.strip() == "jax OK"


def test_lazy_submodules_load_on_first_use(tmp_path):
    check = """
        import sys
        import fdi_keras
        assert "fdi_keras.qat" not in sys.modules
        assert fdi_keras.qat.quantize_aware_tflite
        from fdi_keras import plots
        assert plots is fdi_keras.plots
        assert callable(fdi_keras.export.to_tflite) and callable(fdi_keras.rebirth.slim)
        assert set(fdi_keras.__all__) <= set(dir(fdi_keras))
        try:
            fdi_keras.no_such_thing
        except AttributeError as e:
            print(e)
    """
    out = run_python([check], tmp_path, "tensorflow")
    assert "has no attribute 'no_such_thing'" in out
