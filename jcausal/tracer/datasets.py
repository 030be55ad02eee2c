"""The tabular stand-in for CIC-IDS 2017 (not available offline): scikit-learn's bundled breast
cancer data (569 x 30, 2 classes), min-max scaled like the project's other tabular loaders. It lives
here rather than in :mod:`jcausal.data` because that package is not ours to edit."""

from __future__ import annotations

import numpy as np

from jcausal.data import MinMaxScaler, TabularData

__all__ = ["load_breast_cancer"]


def load_breast_cancer(*, scale: bool = True) -> TabularData:
    """Wisconsin diagnostic breast cancer (569 x 30; classes ``malignant``, ``benign``); with
    ``scale`` every feature is min-max scaled to [0, 1] (``scaler.inverse_transform`` maps back)."""
    from sklearn.datasets import load_breast_cancer as _load

    raw = _load()
    X = np.asarray(raw.data, np.float64)
    scaler = MinMaxScaler.fit(X) if scale else None
    X = scaler.transform(X) if scale else X.astype(np.float32)
    return TabularData(X, np.asarray(raw.target, np.int32), tuple(raw.feature_names),
                       tuple(raw.target_names), scaler)
