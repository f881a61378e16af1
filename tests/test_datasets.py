"""fdi_keras.datasets: the search order, the preprocessing, the HAR archive parser, the errors."""

import io
import os
import zipfile

import numpy as np
import pytest

from fdi_keras import datasets


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Three folders standing for --data_dir, $FDI_DATA and ../shared/data, all empty."""
    paths = [str(tmp_path / n) for n in ("flag", "env", "shared")]
    for p in paths:
        os.makedirs(p)
    monkeypatch.setenv("FDI_DATA", paths[1])
    monkeypatch.setattr(datasets, "SHARED_DATA_DIR", paths[2])
    return paths


def write_mnist(folder, label, n=4):
    x = np.full((n, 28, 28), 255, "uint8")
    y = np.full(n, label, "uint8")
    np.savez(os.path.join(folder, "mnist.npz"), x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])


def test_the_flag_then_the_environment_then_the_shared_folder(dirs):
    flag, env, shared = dirs
    for label, folder in enumerate(dirs):
        write_mnist(folder, label)
    assert datasets.search_dirs(flag) == dirs
    assert datasets.find("mnist", flag) == os.path.join(flag, "mnist.npz")
    assert datasets.mnist(flag, download=False)[0][1][0] == 0
    assert datasets.mnist(download=False)[0][1][0] == 1
    os.remove(os.path.join(env, "mnist.npz"))
    assert datasets.mnist(download=False)[0][1][0] == 2


def test_mnist_is_scaled_with_a_channel_axis(dirs):
    write_mnist(dirs[2], 7)
    (x, y), (x_test, y_test) = datasets.mnist(download=False)
    assert x.shape == (4, 28, 28, 1) and x.dtype == np.float32 and x.max() == 1.0
    assert y.dtype == np.int64 and x_test.shape == (2, 28, 28, 1) and list(y_test) == [7, 7]


def test_cifar10_training_rows_are_shuffled_by_the_seed(dirs):
    x = np.repeat(np.arange(10, dtype="uint8"), 3)[:, None, None, None] * np.ones((1, 32, 32, 3))
    y = np.repeat(np.arange(10, dtype="uint8"), 3)  # grouped by class, as the shared file is
    np.savez(
        os.path.join(dirs[0], "cifar10.npz"),
        x_train=x.astype("uint8"),
        y_train=y,
        x_test=x[:5].astype("uint8"),
        y_test=y[:5],
    )
    (xs, ys), (_, y_test) = datasets.cifar10(dirs[0], download=False)
    assert sorted(ys) == sorted(y) and list(ys) != list(y)
    np.testing.assert_allclose(xs[:, 0, 0, 0] * 255, ys, atol=1e-4)  # rows stay with labels
    assert list(datasets.cifar10(dirs[0], download=False)[0][1]) == list(ys)
    assert list(datasets.cifar10(dirs[0], seed=1, download=False)[0][1]) != list(ys)
    assert list(y_test) == list(y[:5])


def test_uci_har_is_standardized_with_the_training_statistics(dirs):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (6, 128, 9)).astype("float32")
    y = np.arange(6)
    np.savez(os.path.join(dirs[1], "uci_har.npz"), x_train=x, y_train=y, x_test=x, y_test=y)
    (xs, _), (x_test, _) = datasets.uci_har(download=False)
    np.testing.assert_allclose(xs.mean(axis=(0, 1)), 0, atol=1e-5)
    np.testing.assert_allclose(xs.std(axis=(0, 1)), 1, atol=1e-4)
    assert x_test.dtype == np.float32


def test_nothing_found_without_downloads_says_where_to_put_the_file(dirs):
    with pytest.raises(FileNotFoundError, match="downloads are disabled") as e:
        datasets.load_arrays("cifar10", dirs[0], download=False)
    message = str(e.value)
    assert "cifar10.npz" in message and "FDI_DATA" in message
    assert all(d in message for d in dirs) and "x_train, y_train, x_test, y_test" in message
    with pytest.raises(ValueError, match="Received: name='imagenet'"):
        datasets.find("imagenet")


def har_archive(n=(3, 2)):
    """A tiny archive laid out like the official one: `UCI HAR Dataset/{split}/...`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for split, rows in zip(("train", "test"), n):
            for c, channel in enumerate(datasets.HAR_CHANNELS):
                values = c + 0.5 + np.arange(rows)[:, None] + np.arange(128) / 1000
                table = "\n".join(" ".join(f"{v:.4e}" for v in row) for row in values)
                z.writestr(f"UCI HAR Dataset/{split}/Inertial Signals/{channel}_{split}.txt", table)
            z.writestr(f"UCI HAR Dataset/{split}/y_{split}.txt", "\n".join(["6"] * rows))
            z.writestr(f"UCI HAR Dataset/{split}/subject_{split}.txt", "\n".join(["9"] * rows))
    return buf.getvalue()


def test_the_har_archive_parses_in_channel_order_with_labels_from_zero(tmp_path):
    flat, wrapped = tmp_path / "flat.zip", tmp_path / "wrapped.zip"
    flat.write_bytes(har_archive())
    with zipfile.ZipFile(wrapped, "w") as z:  # the static archive wraps the original zip
        z.writestr("UCI HAR Dataset.zip", har_archive())
        z.writestr("UCI HAR Dataset.names", "")
    for path in (flat, wrapped):
        d = datasets.parse_har_archive(str(path))
        assert d["x_train"].shape == (3, 128, 9) and d["x_test"].shape == (2, 128, 9)
        assert d["x_train"].dtype == np.float32
        np.testing.assert_array_equal(d["x_train"][0, 0], np.arange(9) + 0.5)
        assert list(d["y_train"]) == [5, 5, 5] and list(d["subject_test"]) == [9, 9]


def test_a_zip_that_is_not_uci_har_is_named_in_the_error(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "")
    with pytest.raises(ValueError, match="Not a UCI HAR archive.*body_acc_x_train"):
        datasets.parse_har_archive(str(path))


def test_load_npz_reshapes_to_the_model_input_and_scales_images(tmp_path):
    path = str(tmp_path / "data.npz")
    x = np.full((4, 28, 28), 51, "uint8")
    np.savez(path, x_train=x, y_train=np.arange(4), x_test=x[:1], y_test=np.arange(1))
    (xs, y), (x_test, _) = datasets.load_npz(path, (28, 28, 1))
    assert xs.shape == (4, 28, 28, 1) and xs.dtype == np.float32 and xs.max() == pytest.approx(0.2)
    assert x_test.shape == (1, 28, 28, 1) and list(y) == [0, 1, 2, 3]


def test_the_download_is_the_last_resort_and_its_failure_says_where_to_put_the_file(
    dirs, monkeypatch
):
    import keras

    x, y = np.zeros((3, 32, 32, 3), "uint8"), np.arange(3, dtype="uint8")[:, None]
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: ((x, y), (x[:1], y[:1])))
    (xs, ys), (_, y_test) = datasets.cifar10()
    assert xs.shape == (3, 32, 32, 3) and sorted(ys) == [0, 1, 2] and y_test.shape == (1,)

    def offline():
        raise Exception("URL fetch failure on https://...: no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(FileNotFoundError, match="download failed.*no network.*FDI_DATA"):
        datasets.mnist()


def test_the_har_download_is_parsed_once_into_the_cache(tmp_path, dirs, monkeypatch):
    import keras

    archive = tmp_path / "cache" / "human+activity+recognition+using+smartphones.zip"
    archive.parent.mkdir()
    archive.write_bytes(har_archive())
    calls = []
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: calls.append(a) or str(archive))
    (x, y), (x_test, _) = datasets.uci_har()
    assert x.shape == (3, 128, 9) and list(y) == [5, 5, 5] and x_test.shape == (2, 128, 9)
    assert calls[0][1] == datasets.HAR_URL
    with np.load(archive.parent / "uci_har.npz") as cached:
        assert list(cached["channels"]) == list(datasets.HAR_CHANNELS)
    archive.write_bytes(b"not read again")
    assert datasets.uci_har()[1][0].shape == (2, 128, 9)
