"""Tabular datasets bundled with scikit-learn (iris, 8x8 digits), scaled, with a seeded split."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["MinMaxScaler", "TabularData", "load_iris", "load_digits", "load_breast_cancer",
           "train_test_split"]


class MinMaxScaler(NamedTuple):
    """Per-feature min-max scaling to [0, 1]; ``low``, ``high``: ``(k,)`` raw-unit bounds.

    Examples:
      >>> import numpy as np
      >>> from jcausal.data import MinMaxScaler
      >>> sc = MinMaxScaler.fit(np.array([[1.0, 10.0], [3.0, 10.0]]))
      >>> sc.transform([[2.0, 10.0]]).tolist()               # a constant column maps to 0
      [[0.5, 0.0]]
      >>> sc.inverse_transform([[1.0, 0.0]]).tolist()
      [[3.0, 10.0]]
    """

    low: np.ndarray
    high: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> MinMaxScaler:
        X = np.asarray(X, np.float64)
        return cls(X.min(axis=0), X.max(axis=0))

    def _span(self) -> np.ndarray:
        span = self.high - self.low
        return np.where(span > 0, span, 1.0)  # a constant feature maps to 0, not NaN

    def transform(self, X):
        """Raw units -> [0, 1]. ``X``: ``(..., k)``."""
        return ((np.asarray(X) - self.low) / self._span()).astype(np.float32)

    def inverse_transform(self, Z):
        """[0, 1] -> raw units. ``Z``: ``(..., k)``."""
        return np.asarray(Z, np.float64) * self._span() + self.low


class TabularData(NamedTuple):
    """A tabular dataset.

    Fields:
      X: ``(n, k)`` float32 features (scaled when a scaler is given).
      y: ``(n,)`` int32 class labels.
      feature_names, target_names: tuples of str.
      scaler: the :class:`MinMaxScaler` that produced ``X`` from raw units (``None`` if unscaled).
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    scaler: MinMaxScaler | None


def load_iris(*, scale: bool = True) -> TabularData:
    """Fisher's Iris (150 x 4, 3 classes), features min-max scaled to [0, 1] as in the ACE paper
    (Chattopadhyay et al. 2019, section 5.1). ``scaler.inverse_transform`` maps back to cm.

    Examples:
      >>> from jcausal.data import load_iris
      >>> data = load_iris()
      >>> data.X.shape, float(data.X.min()), float(data.X.max()), data.target_names[0]
      ((150, 4), 0.0, 1.0, 'Iris-setosa')
      >>> round(float(data.scaler.inverse_transform(data.X)[0, 0]), 6)   # back to cm
      5.1
    """
    from sklearn.datasets import load_iris as _load

    raw = _load()
    X = np.asarray(raw.data, np.float64)
    scaler = MinMaxScaler.fit(X) if scale else None
    return TabularData(
        scaler.transform(X) if scale else X.astype(np.float32),
        np.asarray(raw.target, np.int32),
        tuple(raw.feature_names),
        tuple(f"Iris-{t}" for t in raw.target_names),
        scaler,
    )


def load_digits(*, scale: bool = True) -> TabularData:
    """The 8x8 digits (1797 x 64, 10 classes); with ``scale``, pixel values 0..16 map to [0, 1].

    Examples:
      >>> from jcausal.data import load_digits
      >>> d = load_digits()
      >>> d.X.shape, d.X.dtype, int(d.y.max())
      ((1797, 64), dtype('float32'), 9)
    """
    from sklearn.datasets import load_digits as _load

    raw = _load()
    X = np.asarray(raw.data, np.float64)
    scaler = MinMaxScaler(np.zeros(64), np.full(64, 16.0)) if scale else None
    return TabularData(
        scaler.transform(X) if scale else X.astype(np.float32),
        np.asarray(raw.target, np.int32),
        tuple(raw.feature_names),
        tuple(str(t) for t in raw.target_names),
        scaler,
    )


def load_breast_cancer(*, scale: bool = True) -> TabularData:
    """Wisconsin diagnostic breast cancer (569 x 30; classes ``malignant``, ``benign``), the offline
    tabular stand-in for TRACER's CIC-IDS 2017; with ``scale`` every feature is min-max scaled to
    [0, 1] (``scaler.inverse_transform`` maps back).

    Examples:
      >>> from jcausal.data import load_breast_cancer
      >>> d = load_breast_cancer()
      >>> d.X.shape, d.target_names
      ((569, 30), ('malignant', 'benign'))
    """
    from sklearn.datasets import load_breast_cancer as _load

    raw = _load()
    X = np.asarray(raw.data, np.float64)
    scaler = MinMaxScaler.fit(X) if scale else None
    X = scaler.transform(X) if scale else X.astype(np.float32)
    return TabularData(X, np.asarray(raw.target, np.int32), tuple(raw.feature_names),
                       tuple(str(t) for t in raw.target_names), scaler)


def train_test_split(n: int, *, test_size: int | float, seed: int = 0):
    """Seeded index split. Returns ``(train_idx, test_idx)``; ``test_size`` is a count or fraction.

    Examples:
      >>> from jcausal.data import train_test_split
      >>> tr, te = train_test_split(10, test_size=0.3, seed=0)
      >>> len(tr), len(te), sorted([*tr, *te]) == list(range(10))
      (7, 3, True)
    """
    if isinstance(test_size, float):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size fraction must be in (0, 1), got {test_size}")
        test_size = int(round(test_size * n))
    if not 0 < test_size < n:
        raise ValueError(f"test_size must leave both parts non-empty (n={n}, got {test_size})")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[test_size:]), np.sort(order[:test_size])
