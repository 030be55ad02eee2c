import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcausal.data import make_isotropic_gaussian, make_sequences


def test_sequence_statistics():
    n, T, scale = 20000, 10, 0.2
    d = make_sequences(jax.random.key(0), n, T=T, scale=scale)
    x, lengths, y = (np.asarray(a) for a in d)
    assert x.shape == (n, T + 5)
    assert lengths.min() >= T and lengths.max() <= T + 5
    assert set(np.unique(lengths)) == set(range(T, T + 6))
    # class balance within 3 binomial standard deviations
    assert abs(y.sum() - n / 2) <= 3 * np.sqrt(n * 0.25)
    sem = scale / np.sqrt(n / 2)
    for label, mu in ((1, 1.0), (0, -1.0)):
        first = x[y == label, :3]
        assert np.all(np.abs(first.mean(0) - mu) < 4 * sem)
        assert abs(first.std() - scale) < 0.01
    t = np.arange(T + 5)
    inside = (t[None, :] >= 3) & (t[None, :] < lengths[:, None])
    assert abs(x[inside].mean()) < 4 * scale / np.sqrt(inside.sum())
    assert np.all(x[t[None, :] >= lengths[:, None]] == 0.0)  # padding is never data


def test_sequences_seeded():
    a = make_sequences(jax.random.key(1), 10)
    b = make_sequences(jax.random.key(1), 10)
    np.testing.assert_array_equal(a.x, b.x)
    with pytest.raises(ValueError):
        make_sequences(jax.random.key(1), 0)


def test_isotropic_gaussian():
    X = make_isotropic_gaussian(jax.random.key(0), 50000, 3)
    assert X.shape == (50000, 3)
    np.testing.assert_allclose(jnp.cov(X.T), np.eye(3), atol=0.03)
