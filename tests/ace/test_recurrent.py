import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.ace import input_stats, interventional_expectation
from jcausal.ace.recurrent import (
    FeedbackBatches,
    feedback_expectation,
    lag_tau,
    sequence_stats,
    unrolled_expectation,
)
from jcausal.models import SequenceClassifier, functional

PHI, SIGMA = 0.7, 0.5


def _ar1(n, T, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, T), np.float32)
    x[:, 0] = rng.normal(size=n) * SIGMA / np.sqrt(1 - PHI**2)
    for t in range(1, T):
        x[:, t] = PHI * x[:, t - 1] + SIGMA * rng.normal(size=n)
    return x


def ar_step(phi, carry, x):
    return carry, phi * x  # one-step linear predictor, no hidden state


def test_unrolled_equals_phase_one_on_flattened_input():
    apply, params = functional(SequenceClassifier(2, 4, 3, rngs=nnx.Rngs(0)))
    X = np.random.default_rng(0).normal(size=(300, 6, 2)).astype(np.float32)
    positions = [(0, 1), (3, 0), (5, 1)]
    out = unrolled_expectation(apply, X, [-1.0, 0.0, 1.0], positions=positions, params=params)

    def flat(p, z):
        return apply(p, z.reshape(6, 2))

    ref = interventional_expectation(flat, input_stats(X.reshape(300, -1)), [-1.0, 0.0, 1.0],
                                     params=params, features=[1, 6, 11])
    np.testing.assert_array_equal(out, ref)


def test_padding_is_never_data():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 8)).astype(np.float32)
    lengths = rng.integers(4, 9, size=400)
    X_pad = X.copy()
    for j, L in enumerate(lengths):
        X_pad[j, L:] = 1e6  # garbage past the end
    st = sequence_stats(X_pad, lengths, horizon=6)
    ref = input_stats(X[lengths >= 6, :6])
    np.testing.assert_allclose(st.cov, ref.cov, rtol=1e-6)
    with pytest.raises(ValueError, match="only|needs"):
        sequence_stats(X_pad, np.full(400, 3), horizon=6)


def test_feedback_matches_linear_gaussian_closed_form():
    """AR(1) data x^{t+1} = phi x^t + sigma eps and the model y^t = phi x^t: intervening at t_hat
    makes later inputs phi^k a exactly, earlier inputs keep the stationary AR(1) moments
    (Monte Carlo tolerance: 5 standard errors of the sample variance, n = 20000)."""
    n, T, t_hat = 20000, 8, 3
    X = _ar1(n, T)
    alphas = np.array([-1.0, 0.5, 2.0], np.float32)
    phi = jnp.asarray(PHI, jnp.float32)
    res = feedback_expectation(ar_step, jnp.zeros((1,)), X, alphas, t_hat=t_hat, feature=0,
                               params=phi, output_time=6)
    np.testing.assert_allclose(res.expectations[:, 0], PHI**4 * alphas, atol=1e-4)  # y^6 = phi x^6
    for r, a in enumerate(alphas):
        mu = np.asarray(res.mean[r])
        np.testing.assert_allclose(mu[t_hat:], a * PHI ** np.arange(T - t_hat), atol=1e-5)
        v = SIGMA**2 / (1 - PHI**2)
        cov = np.asarray(res.cov[r])
        closed = v * PHI ** np.abs(np.subtract.outer(np.arange(t_hat), np.arange(t_hat)))
        np.testing.assert_allclose(cov[:t_hat, :t_hat], closed, atol=5 * v * np.sqrt(2 / n))
        assert np.abs(mu[:t_hat]).max() <= 5 * np.sqrt(v / n)
        assert np.abs(cov[t_hat:]).max() <= 1e-6  # the intervention and its rollout are fixed
    assert res.used == n


def test_feedback_bad_input_and_divergence():
    X = _ar1(50, 6)
    phi = jnp.asarray(PHI, jnp.float32)
    with pytest.raises(ValueError, match="t_hat"):
        feedback_expectation(ar_step, jnp.zeros((1,)), X, [0.0], t_hat=6, feature=0, params=phi)
    with pytest.raises(ValueError, match="feature"):
        feedback_expectation(ar_step, jnp.zeros((1,)), X, [0.0], t_hat=2, feature=1, params=phi)
    with pytest.raises(ValueError, match="sequences"):
        feedback_expectation(ar_step, jnp.zeros((1,)), X, [0.0], t_hat=4, feature=0, params=phi,
                             lengths=np.full(50, 3))

    def explode(p, carry, x):
        return carry, 1e20 * x * x

    with pytest.raises(FloatingPointError, match=r"alphas \[3.0\]"):
        feedback_expectation(explode, jnp.zeros((1,)), X, [0.0, 3.0], t_hat=2, feature=0, params=phi)


def test_lag_tau_of_a_three_step_filter_is_three():
    w = jnp.asarray([0.5, -1.0, 0.25, 2.0], jnp.float32)  # y^t = sum_k w_k x^{t-k}, k <= 3

    def f_out(w, x):  # x: (t + 1, 1)
        return jnp.sum(w * x[::-1][:4, 0])[None]

    X = np.random.default_rng(0).normal(size=(20, 10, 1)).astype(np.float32)
    res = lag_tau(f_out, X, t=7, params=w)
    assert float(res.tau) == 3.0 and np.all(np.asarray(res.per_sequence) == 3)
    np.testing.assert_allclose(res.dets[0, :4], np.abs(np.asarray(w)), rtol=1e-6)
    assert np.all(np.asarray(res.dets)[:, 4:] == 0.0)


def test_feedback_chunking_changes_nothing():
    X = _ar1(1000, 7, seed=3)
    phi = jnp.asarray(PHI, jnp.float32)

    def step(p, carry, x):  # a nonlinear predictor, so the Hessian term matters
        return carry, jnp.tanh(p * x) + 0.1 * x**2

    kw = dict(t_hat=2, feature=0, params=phi, output_time=5)
    one = feedback_expectation(step, jnp.zeros((1,)), X, [-1.0, 0.3], batches=FeedbackBatches(sequences=1000),
                               **kw)
    many = feedback_expectation(step, jnp.zeros((1,)), X, [-1.0, 0.3], batches=FeedbackBatches(sequences=64),
                                **kw)
    np.testing.assert_allclose(many.mean, one.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(many.cov, one.cov, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(many.expectations, one.expectations, rtol=1e-4, atol=1e-6)
    full = X[:, :3].astype(np.float64)
    np.testing.assert_allclose(one.cov[0][:2, :2], np.cov(full[:, :2].T, bias=True), rtol=1e-3, atol=1e-5)
