import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from fdi_keras import datasets  # noqa: E402


@pytest.fixture(scope="session")
def real_dataset():
    """Loads a real dataset's raw arrays from $FDI_DATA or ../shared/data, never downloading;
    skips the test when neither holds it (everything else in the suite needs no outside data)."""

    def load(name):
        if datasets.find(name) is None:
            pytest.skip(
                f"dataset {name} not found: set FDI_DATA or place {datasets.FILES[name]} in "
                f"{datasets.SHARED_DATA_DIR}"
            )
        return datasets.load_arrays(name, download=False)

    return load
