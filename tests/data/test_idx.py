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


# ----------------------------------------------------------------- issue 15 item 5 (data side)


@pytest.mark.parametrize("bad,match", [
    ("10", "string"),
    ((3.7, 8), "integers"),
    ((3, True), "integers"),
    (3, "sequence"),
    ((3, "8"), "integers"),
])
def test_classes_must_be_integer_labels(tmp_path, bad, match):
    _fake_set(tmp_path)
    with pytest.raises(ValueError, match=match):
        load_mnist(tmp_path, classes=bad)


def test_integer_like_classes_are_accepted(tmp_path):
    _fake_set(tmp_path)
    d = load_mnist(tmp_path, classes=np.array([8, 3]), val_fraction=0.0)
    e = load_mnist(tmp_path, classes=[np.int64(8), 3.0], val_fraction=0.0)
    assert d.classes == e.classes == (8, 3)
    np.testing.assert_array_equal(d.y_train, e.y_train)


def test_negative_label_is_its_own_class(tmp_path):
    images = np.zeros((6, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(6)  # image i is recognisable by pixel (0, 0)
    labels = np.array([-1, 9, 0, -1, 9, 0], np.int8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    d = load_mnist(tmp_path, classes=(9, -1), val_fraction=0.0)
    ids = np.round(d.x_train[:, 0, 0] * 255).astype(int)
    assert d.classes == (9, -1)
    np.testing.assert_array_equal(d.y_train, np.where(labels[ids] == 9, 0, 1))
    all_ = load_mnist(tmp_path, val_fraction=0.0)
    assert all_.classes == (-1, 0, 9)
    ids = np.round(all_.x_train[:, 0, 0] * 255).astype(int)
    np.testing.assert_array_equal(np.asarray(all_.classes)[all_.y_train], labels[ids])


@pytest.mark.parametrize("dtype,values", [
    (np.float32, (-1.0, 1.0)),     # e.g. images saved normalised to [-1, 1]
    (np.float64, (0.0, 255.0)),    # raw intensities stored as floats
    (np.int16, (-300, 500)),
])
def test_non_uint8_images_come_back_in_unit_interval(tmp_path, dtype, values):
    rng = np.random.default_rng(0)
    lo, hi = values
    images = rng.uniform(lo, hi, size=(20, 28, 28)).astype(dtype)
    images[0, 0, 0], images[1, 0, 0] = lo, hi
    labels = (np.arange(20) % 2).astype(np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    d = load_mnist(tmp_path, classes=(1,), val_fraction=0.0)  # the selection lacks image 0 (lo)
    assert d.x_train.dtype == np.float32
    assert d.x_train.min() >= 0.0 and d.x_train.max() <= 1.0
    # scaled with the whole file's range, so a selection does not change the scale
    want = (images[1::2].astype(np.float64) - lo) / (hi - lo)
    np.testing.assert_allclose(d.x_train[np.argsort(d.x_train[:, 0, 1])],
                               want[np.argsort(want[:, 0, 1])], atol=1e-6)


def test_float_images_already_in_unit_interval_are_unchanged(tmp_path):
    images = np.random.default_rng(0).uniform(0.2, 0.7, size=(10, 28, 28)).astype(np.float32)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(10, np.uint8))
    d = load_mnist(tmp_path, val_fraction=0.0)
    np.testing.assert_array_equal(np.sort(d.x_train.ravel()), np.sort(images.ravel()))


def test_write_idx_is_atomic_with_normal_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_idx(tmp_path / "a.idx.gz", np.arange(4, dtype=np.uint8))
        write_idx(tmp_path / "a.idx.gz", np.arange(5, dtype=np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.idx.gz").st_mode) == 0o644
    assert os.listdir(tmp_path) == ["a.idx.gz"]
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx.gz"), np.arange(5))
