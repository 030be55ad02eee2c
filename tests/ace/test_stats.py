import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcausal.ace import input_stats, intervention_grid, truncate


def _data(n=500, k=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, k)) @ rng.normal(size=(k, k)) + 3.0).astype(np.float32)


def test_moments_match_numpy():
    X = _data()
    s = input_stats(X)
    np.testing.assert_allclose(s.mean, X.mean(0), rtol=1e-5)
    np.testing.assert_allclose(s.cov, np.cov(X.T, bias=True), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s.factor @ s.factor.T, s.cov, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(np.asarray(s.eigenvalues)) <= 0)
    np.testing.assert_allclose(s.explained[-1], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(s.low, X.min(0))
    np.testing.assert_array_equal(s.high, X.max(0))
    assert float(s.count) == 500


def test_streaming_equals_in_memory():
    X = _data(n=1003)
    full = input_stats(X)
    batches = (X[i:i + 97] for i in range(0, len(X), 97))
    stream = input_stats(batches)
    for a, b in zip(full, stream):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)


def test_streaming_float64_tight():
    with jax.enable_x64(True):
        X = _data(n=1000).astype(np.float64) * 1e3 + 1e6  # large offset: naive sums would lose digits
        full = input_stats(X)
        stream = input_stats([X[:1], X[1:333], X[333:]])
        np.testing.assert_allclose(stream.cov, full.cov, rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(full.cov, np.cov(X.T, bias=True), rtol=1e-9, atol=1e-6)


def test_constant_feature_and_custom_domain():
    X = _data()
    X[:, 2] = 0.5
    s = input_stats(X, low=0.0, high=10.0)
    assert float(jnp.max(jnp.abs(s.factor[2]))) < 1e-4
    np.testing.assert_array_equal(s.low, np.zeros(6))
    np.testing.assert_array_equal(s.high, np.full(6, 10.0))


@pytest.mark.parametrize("X,match", [
    (np.ones((1, 3), np.float32), "at least 2 rows"),
    (np.ones((5,), np.float32), "2-d"),
    (np.array([[1.0, np.nan], [2.0, 3.0]], np.float32), "NaN/inf"),
    (np.array([[1.0, np.inf], [2.0, 3.0]], np.float32), "NaN/inf"),
])
def test_bad_X(X, match):
    with pytest.raises(ValueError, match=match):
        input_stats(X)


def test_truncate_and_grid():
    s = input_stats(_data())
    V, disc = truncate(s, None)
    assert V.shape == (6, 6) and disc == 0.0
    V, disc = truncate(s, 2)
    assert V.shape == (6, 2)
    np.testing.assert_allclose(disc, float(jnp.sum(s.eigenvalues[2:])), rtol=1e-6)
    V, _ = truncate(s, 0.9)
    r = V.shape[1]
    assert s.explained[r - 1] >= 0.9 - 1e-6 and (r == 1 or s.explained[r - 2] < 0.9)
    with pytest.raises(ValueError, match="rank"):
        truncate(s, 7)
    with pytest.raises(ValueError, match="rank"):
        truncate(s, 1.5)
    g = intervention_grid(s, 5, features=[1, 3])
    assert g.shape == (2, 5)
    np.testing.assert_allclose(g[:, 0], s.low[jnp.array([1, 3])])
    np.testing.assert_allclose(g[:, -1], s.high[jnp.array([1, 3])])


def test_complex_data_refused_not_truncated():
    """astype(float) dropped the imaginary part with a mere ComplexWarning (issue 21 re-probe)."""
    X = np.ones((10, 3), np.complex64) + 1j
    with pytest.raises(ValueError, match="must hold real numbers"):
        input_stats(X)
    from jcausal.ace import explain

    with pytest.raises(ValueError, match="must hold real numbers"):
        explain(lambda x: x, X, num_alphas=4, max_order=1)
