"""The package's layers import only downward (DESIGN.md section 3): read off the source."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "fdi_keras"
# module (or package) -> packages it must not import, directly or lazily inside a function
# The cost model needs no TensorFlow: `predict_latency` works with any Keras backend.
NO_TF = ("tensorflow", "fdi_keras.export", "fdi_keras.conversion")
FORBIDDEN = {
    "graph": ("fdi_keras.prune", "fdi_keras.rebirth", "fdi_keras.latency", "fdi_keras.profiling")
    + NO_TF,
    "specs.py": NO_TF,
    "features.py": NO_TF,
    "kernels.py": ("fdi_keras.prune", "fdi_keras.rebirth", "fdi_keras.profiling") + NO_TF,
    "latency.py": ("fdi_keras.prune", "fdi_keras.rebirth", "fdi_keras.profiling") + NO_TF,
    "distillation.py": ("fdi_keras.prune", "fdi_keras.rebirth", "fdi_keras.profiling")
    + ("fdi_keras.export", "fdi_keras.conversion"),
    "plots.py": ("fdi_keras.prune", "fdi_keras.rebirth", "fdi_keras.profiling") + NO_TF,
    "timing": ("fdi_keras.prune", "fdi_keras.rebirth") + NO_TF,
    "profiling": ("fdi_keras.export", "fdi_keras.prune", "fdi_keras.rebirth"),
    "prune": ("fdi_keras.rebirth",),
}


def imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_imports_go_downward_only(part):
    target = PACKAGE / part
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert files
    for path in files:
        for name in imported_modules(path):
            for forbidden in FORBIDDEN[part]:
                assert not (name == forbidden or name.startswith(forbidden + ".")), (
                    f"{path.relative_to(PACKAGE.parent)} imports {name}"
                )
