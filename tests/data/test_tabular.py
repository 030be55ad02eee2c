import numpy as np
import pytest

from jcausal.data import load_digits, load_iris, train_test_split


def test_iris_scaled_and_invertible():
    d = load_iris()
    assert d.X.shape == (150, 4) and d.y.shape == (150,)
    np.testing.assert_allclose(d.X.min(0), 0.0)
    np.testing.assert_allclose(d.X.max(0), 1.0)
    raw = load_iris(scale=False).X
    np.testing.assert_allclose(d.scaler.inverse_transform(d.X), raw, atol=1e-5)
    assert d.target_names == ("Iris-setosa", "Iris-versicolor", "Iris-virginica")
    assert np.bincount(d.y).tolist() == [50, 50, 50]


def test_digits():
    d = load_digits()
    assert d.X.shape == (1797, 64) and d.X.max() == 1.0 and d.X.min() == 0.0


def test_split_is_seeded_partition():
    tr, te = train_test_split(150, test_size=30, seed=3)
    assert len(te) == 30 and len(tr) == 120
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(150))
    tr2, te2 = train_test_split(150, test_size=0.2, seed=3)
    np.testing.assert_array_equal(te, te2)
    with pytest.raises(ValueError):
        train_test_split(10, test_size=10)
