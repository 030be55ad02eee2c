import gzip

import numpy as np
import pytest

from jcausal.data import IDXFormatError, load_fashion_mnist, load_mnist, read_idx, write_idx


def _fake_set(folder, n=60, gz=True, prefix="t10k", seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip(tmp_path, gz, dtype):
    arr = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, arr)
    raw = gzip.open(path).read() if gz else path.read_bytes()
    assert raw[:4] == bytes([0, 0, {np.uint8: 8, np.int8: 9, np.int16: 11, np.int32: 12,
                                    np.float32: 13, np.float64: 14}[dtype], 3])


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_selects_remaps_and_splits(tmp_path, gz):
    images, labels = _fake_set(tmp_path, gz=gz)
    d = load_mnist(tmp_path, classes=(8, 3), val_fraction=0.25, seed=1)
    assert d.classes == (8, 3)
    assert len(d.y_train) + len(d.y_val) == 12 and len(d.y_val) == 3
    assert set(np.unique(np.concatenate([d.y_train, d.y_val]))) == {0, 1}
    x = np.concatenate([d.x_train, d.x_val])
    y = np.concatenate([d.y_train, d.y_val])
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    # every returned image is an original image of the right class, scaled by 1/255
    for xi, yi in zip(x, y):
        matches = np.where(np.all(np.isclose(images / 255.0, xi), axis=(1, 2)))[0]
        assert len(matches) == 1 and labels[matches[0]] == (8, 3)[yi]
    # seeded: same seed same split, other seed other split
    again = load_mnist(tmp_path, classes=(8, 3), val_fraction=0.25, seed=1)
    np.testing.assert_array_equal(again.x_val, d.x_val)
    other = load_mnist(tmp_path, classes=(8, 3), val_fraction=0.25, seed=2)
    assert not np.array_equal(other.x_val, d.x_val)
    flat = load_mnist(tmp_path, classes=(1, 4, 9), flatten=True, val_fraction=0.0)
    assert flat.x_train.shape == (18, 784) and flat.x_val.shape == (0, 784)


def test_env_var_and_subfolder(tmp_path, monkeypatch):
    (tmp_path / "fashion-mnist").mkdir()
    _fake_set(tmp_path / "fashion-mnist")
    monkeypatch.setenv("JCAUSAL_DATA", str(tmp_path))
    d = load_fashion_mnist(classes=(0, 3, 4), val_fraction=0.0)
    assert d.x_train.shape == (18, 28, 28)
    monkeypatch.delenv("JCAUSAL_DATA")
    with pytest.raises(FileNotFoundError, match="JCAUSAL_DATA"):
        load_mnist()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_truncated_file(tmp_path):
    _fake_set(tmp_path, gz=False)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(IDXFormatError, match="truncated"):
        load_mnist(tmp_path)


def test_truncated_gzip(tmp_path):
    _fake_set(tmp_path, gz=True)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-200])
    with pytest.raises(IDXFormatError, match="truncated"):
        read_idx(p)


def test_wrong_magic(tmp_path):
    p = tmp_path / "x.idx"
    p.write_bytes(b"\x12\x34\x08\x01" + b"\x00\x00\x00\x01" + b"\x05")
    with pytest.raises(IDXFormatError, match="magic"):
        read_idx(p)


def test_count_mismatch(tmp_path):
    _fake_set(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(59, np.uint8))
    with pytest.raises(IDXFormatError, match="mismatch"):
        load_mnist(tmp_path)


def test_class_absent_and_empty_selection(tmp_path):
    _fake_set(tmp_path)
    with pytest.raises(ValueError, match="absent"):
        load_mnist(tmp_path, classes=(3, 11))
    with pytest.raises(ValueError, match="empty"):
        load_mnist(tmp_path, classes=())
