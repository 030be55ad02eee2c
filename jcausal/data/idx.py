"""IDX files (MNIST, Fashion-MNIST): a reader, a writer, and a class-selecting loader.

The IDX format (LeCun et al.) is a big-endian header ``0x00 0x00 <dtype> <ndim>``, then ``ndim``
big-endian uint32 sizes, then the data in row-major order. Files may be gzip-compressed (``.gz``).
Nothing here downloads anything: the loader reads files from a folder the caller names, or from the
folder in the ``JCAUSAL_DATA`` environment variable.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jcausal._src.io import atomic_write_bytes

__all__ = [
    "IDXFormatError",
    "ImageData",
    "read_idx",
    "write_idx",
    "load_mnist",
    "load_fashion_mnist",
    "resolve_data_dir",
]

_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}


class IDXFormatError(ValueError):
    """An IDX file is malformed: wrong magic number, truncated, or inconsistent with its partner."""


class ImageData(NamedTuple):
    """A seeded train/validation split of an IDX image set.

    Fields:
      x_train: ``(n_train, 28, 28)`` float32 in [0, 1] (flattened to ``(n_train, 784)`` if asked).
      y_train: ``(n_train,)`` int32 labels remapped to ``0..len(classes)-1``.
      x_val, y_val: the validation part, same layout.
      classes: the original labels, in the order of the remapped ones (``classes[j]`` is label j).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: tuple[int, ...]


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (plain or ``.gz``) into a native-endian numpy array.

    Raises:
      FileNotFoundError: the file does not exist.
      IDXFormatError: wrong magic number, unknown dtype code, or fewer bytes than the header promises.

    Examples:
      >>> import os, tempfile, numpy as np
      >>> from jcausal.data import read_idx, write_idx
      >>> path = os.path.join(tempfile.mkdtemp(), "t10k-labels-idx1-ubyte.gz")
      >>> write_idx(path, np.array([3, 1, 4], np.uint8))
      >>> read_idx(path).tolist()
      [3, 1, 4]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    try:
        with _open(path) as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:  # a truncated .gz raises EOFError
        raise IDXFormatError(f"{path}: cannot read ({err}); the file looks truncated") from err
    if len(raw) < 4:
        raise IDXFormatError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0:
        raise IDXFormatError(
            f"{path}: wrong magic number 0x{raw[:4].hex()} (an IDX file starts with 0x0000)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise IDXFormatError(f"{path}: unknown IDX data type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{path}: truncated header ({len(raw)} bytes, need {header})")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = _DTYPES[code]
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = len(raw) - header
    if have < need:
        raise IDXFormatError(
            f"{path}: truncated data: header promises shape {shape} ({need} bytes), found {have}"
        )
    if have > need:
        raise IDXFormatError(f"{path}: {have - need} unexpected trailing bytes after the data")
    arr = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in ``.gz``), atomically.

    Examples:
      >>> import os, tempfile, numpy as np
      >>> from jcausal.data import read_idx, write_idx
      >>> path = os.path.join(tempfile.mkdtemp(), "images-idx3-ubyte")
      >>> write_idx(path, np.zeros((2, 28, 28), np.uint8))
      >>> read_idx(path).shape
      (2, 28, 28)
    """
    path = Path(path)
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + array.astype(_DTYPES[code]).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    atomic_write_bytes(path, payload)


_SUBDIRS = {"mnist": ("mnist", "MNIST"), "fashion": ("fashion-mnist", "fashion_mnist", "fashion")}


def resolve_data_dir(path: str | os.PathLike | None) -> Path:
    """The folder holding the IDX files: ``path``, else ``$JCAUSAL_DATA``.

    The loaders also look in a ``mnist/`` (or ``fashion-mnist/``) subfolder of it."""
    if path is None:
        env = os.environ.get("JCAUSAL_DATA")
        if not env:
            raise FileNotFoundError(
                "no data folder given: pass path=... or set JCAUSAL_DATA to the folder holding the "
                "IDX files (e.g. t10k-images-idx3-ubyte.gz)"
            )
        path = env
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    return root


def _find(root: Path, stem: str, kind: str) -> Path:
    tried = []
    for folder in (root, *(root / s for s in _SUBDIRS[kind])):
        for name in (stem, stem + ".gz"):
            cand = folder / name
            tried.append(str(cand))
            if cand.is_file():
                return cand
    raise FileNotFoundError(f"IDX file {stem}[.gz] not found; tried: {', '.join(tried)}")


def _class_labels(classes) -> tuple[int, ...]:
    """``classes`` as a tuple of distinct ints; strings, floats with a fraction, bools and scalars
    are refused (``"10"`` is not ``(1, 0)``, ``3.7`` is not ``3``)."""
    if isinstance(classes, (str, bytes)):
        raise ValueError(f"classes must be a sequence of integer labels such as (3, 8), got the "
                         f"string {classes!r}")
    if np.ndim(classes) != 1:
        raise ValueError(f"classes must be a sequence of integer labels such as (3, 8), got {classes!r}")
    out = []
    for c in classes:
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, float, np.integer, np.floating)) \
                or float(c) != int(c):
            raise ValueError(f"classes must be integers, got {c!r} in {tuple(classes)!r}")
        out.append(int(c))
    if not out:
        raise ValueError("classes is empty: select at least one class")
    if len(set(out)) != len(out):
        raise ValueError(f"classes has duplicates: {tuple(out)}")
    return tuple(out)


def _unit_interval(images: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The selected images as float32 in [0, 1]: uint8 divided by 255; any other dtype kept if the
    whole file already lies in [0, 1], else min-max scaled with the whole file's range (so the
    scale does not depend on the classes selected)."""
    x = images[keep].astype(np.float64)
    if images.dtype == np.uint8:
        return (x / 255.0).astype(np.float32)
    if not np.all(np.isfinite(images)):
        raise IDXFormatError("the image file contains NaN/inf values")
    lo, hi = float(images.min()), float(images.max())
    if lo >= 0.0 and hi <= 1.0:
        return x.astype(np.float32)
    if hi == lo:  # a constant file outside [0, 1]
        return np.zeros_like(x, np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)


def _load(
    path, *, kind, subset, classes, val_fraction, seed, flatten
) -> ImageData:
    root = resolve_data_dir(path)
    img_path = _find(root, f"{subset}-images-idx3-ubyte", kind)
    lab_path = _find(root, f"{subset}-labels-idx1-ubyte", kind)
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3:
        raise IDXFormatError(f"{img_path}: expected a 3-d image array, got shape {images.shape}")
    if labels.ndim != 1:
        raise IDXFormatError(f"{lab_path}: expected a 1-d label array, got shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise IDXFormatError(
            f"image/label count mismatch: {img_path} has {images.shape[0]} images, "
            f"{lab_path} has {labels.shape[0]} labels"
        )
    present = sorted(int(c) for c in np.unique(labels))
    classes = tuple(present) if classes is None else _class_labels(classes)
    missing = [c for c in classes if c not in present]
    if missing:
        raise ValueError(f"requested classes {missing} are absent from {lab_path} (has {present})")
    keep = np.isin(labels, classes)
    x = _unit_interval(images, keep)
    # label classes[j] -> j, for any integer labels (negative ones included)
    order = np.argsort(classes)
    y = order[np.searchsorted(np.asarray(classes)[order], labels[keep])].astype(np.int32)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = int(round(val_fraction * len(y)))
    val, train = order[:n_val], order[n_val:]
    if flatten:
        x = x.reshape(len(x), -1)
    return ImageData(x[train], y[train], x[val], y[val], classes)


def load_mnist(
    path: str | os.PathLike | None = None,
    *,
    subset: str = "t10k",
    classes=None,
    val_fraction: float = 0.2,
    seed: int = 0,
    flatten: bool = False,
) -> ImageData:
    """Load MNIST from IDX files, select classes, remap labels, and split train/validation.

    Args:
      path: folder holding ``{subset}-images-idx3-ubyte[.gz]`` and ``{subset}-labels-idx1-ubyte[.gz]``
        (or a ``mnist/`` subfolder of it). Defaults to ``$JCAUSAL_DATA``.
      subset: file prefix, ``"t10k"`` (the test set, the one shipped offline) or ``"train"``.
      classes: original labels to keep, a sequence of integers, e.g. ``(3, 8)``; label
        ``classes[j]`` becomes ``j``. Default: every label present, in increasing order.
      val_fraction: fraction of the selection held out for validation (seeded permutation).
      seed: seed of the split.
      flatten: return images as ``(n, 784)`` instead of ``(n, 28, 28)``.

    Returns:
      :class:`ImageData` with float32 images in [0, 1] (uint8 files divided by 255; other dtypes
      kept when the file lies in [0, 1], else min-max scaled with the whole file's range) and int32
      labels.

    Raises:
      ValueError: ``classes`` is not a sequence of distinct integers, or names absent labels.
      IDXFormatError: malformed files, or image/label counts that differ.

    Examples:
      >>> import os, tempfile, numpy as np
      >>> from jcausal.data import load_mnist, write_idx
      >>> folder = tempfile.mkdtemp()                          # a tiny MNIST-like folder
      >>> rng = np.random.default_rng(0)
      >>> write_idx(os.path.join(folder, "t10k-images-idx3-ubyte.gz"),
      ...           rng.integers(0, 256, (20, 28, 28), dtype=np.uint8))
      >>> write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"), np.repeat(np.uint8([3, 8]), 10))
      >>> d = load_mnist(folder, classes=(3, 8), val_fraction=0.25, flatten=True)
      >>> d.x_train.shape, d.x_val.shape, d.classes, sorted(set(d.y_train.tolist()))
      ((15, 784), (5, 784), (3, 8), [0, 1])
    """
    return _load(path, kind="mnist", subset=subset, classes=classes,
                 val_fraction=val_fraction, seed=seed, flatten=flatten)


def load_fashion_mnist(
    path: str | os.PathLike | None = None,
    *,
    subset: str = "t10k",
    classes=None,
    val_fraction: float = 0.2,
    seed: int = 0,
    flatten: bool = False,
) -> ImageData:
    """Fashion-MNIST from IDX files; same arguments as :func:`load_mnist` (subfolder
    ``fashion-mnist/`` is also searched). E.g. ``classes=(0, 3, 4)`` (t-shirt, dress, coat)."""
    return _load(path, kind="fashion", subset=subset, classes=classes,
                 val_fraction=val_fraction, seed=seed, flatten=flatten)
