"""CKA against closed forms and float64 brute-force references."""

from itertools import permutations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcausal.tracer import cka, cka_accumulator, cka_matrix
from jcausal.tracer.cka import cka_from_grams, feature_space_linear_cka, hsic, linear_gram, rbf_gram


def _data(seed=0, n=40, p=12, q=7):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)).astype(np.float32)
    Y = (np.tanh(X @ rng.normal(size=(p, q))) + 0.3 * rng.normal(size=(n, q))).astype(np.float32)
    return X, Y


def _ortho(rng, p):
    q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    return q.astype(np.float32)


def _ref_biased_linear(X, Y):
    """float64 Kornblith et al. (2019) eqn with explicit H."""
    X = X.reshape(len(X), -1).astype(np.float64)
    Y = Y.reshape(len(Y), -1).astype(np.float64)
    n = len(X)
    H = np.eye(n) - 1.0 / n
    K, L = X @ X.T, Y @ Y.T
    h = lambda A, B: np.trace(A @ H @ B @ H) / (n - 1) ** 2  # noqa: E731
    return h(K, L) / np.sqrt(h(K, K) * h(L, L))


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_self_similarity_is_one(kernel, unbiased):
    X, _ = _data()
    assert float(cka(X, X, kernel=kernel, unbiased=unbiased)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_invariance_orthogonal_and_isotropic_scaling(kernel, unbiased):
    X, Y = _data(1)
    rng = np.random.default_rng(2)
    base = float(cka(X, Y, kernel=kernel, unbiased=unbiased))
    assert 0.05 < base < 0.99  # a non-trivial value, so invariance is not vacuous
    Xo = X @ _ortho(rng, X.shape[1])
    Yo = 3.7 * (Y @ _ortho(rng, Y.shape[1]))
    for a, b in [(Xo, Y), (X, Yo), (0.01 * X, Y), (Xo, 25.0 * Yo)]:
        assert float(cka(a, b, kernel=kernel, unbiased=unbiased)) == pytest.approx(base, abs=2e-5)
    # not invariant to an anisotropic rescaling (the test can fail)
    D = np.diag(np.linspace(0.1, 5, X.shape[1])).astype(np.float32)
    assert abs(float(cka(X @ D, Y, kernel=kernel, unbiased=unbiased)) - base) > 1e-3


def test_biased_linear_matches_float64_reference_any_rank():
    X, Y = _data(3)
    X4 = X.reshape(40, 3, 2, 2)  # rank-4 inputs are flattened per example
    ref = _ref_biased_linear(X, Y)
    assert float(cka(X4, Y, method="gram")) == pytest.approx(ref, abs=1e-6)
    assert float(cka(X4, Y, method="features")) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("unbiased", [False, True])
def test_feature_space_equals_gram_form(unbiased):
    X, Y = _data(4, n=300, p=9, q=5)  # n > width: the form 'auto' picks
    g = float(cka_from_grams(linear_gram(X), linear_gram(Y), unbiased))
    f = float(feature_space_linear_cka(X, Y, unbiased))
    assert f == pytest.approx(g, abs=1e-5)
    assert float(cka(X, Y, unbiased=unbiased)) == pytest.approx(g, abs=1e-5)


def _ref_unbiased_hsic(K, L):
    """Song et al. (2012) as the U-statistic: average over ordered 4-tuples of distinct indices of
    k_ij l_ij + k_ij l_qr - 2 k_ij l_iq (float64, O(n^4))."""
    n = len(K)
    tot, cnt = 0.0, 0
    for i, j, q, r in permutations(range(n), 4):
        tot += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
        cnt += 1
    return tot / cnt


def test_unbiased_hsic_matches_u_statistic():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(8, 4))
    Y = X[:, :2] ** 2 + rng.normal(size=(8, 2))
    K, L = X @ X.T, Y @ Y.T
    ref = _ref_unbiased_hsic(K, L)
    got = float(hsic(jnp.asarray(K, jnp.float32), jnp.asarray(L, jnp.float32), unbiased=True))
    assert got == pytest.approx(ref, rel=1e-4, abs=1e-4)
    # and it differs from the biased one (the flag matters)
    assert abs(float(hsic(jnp.asarray(K, jnp.float32), jnp.asarray(L, jnp.float32))) - ref) > 1e-2


def test_rbf_bandwidth_is_fraction_of_median_distance():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(10, 3))
    d = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    med = np.median(d[~np.eye(10, dtype=bool)])
    ref = np.exp(-(d**2) / (2 * (0.5 * med) ** 2))
    np.testing.assert_allclose(np.asarray(rbf_gram(jnp.asarray(X, jnp.float32), 0.5)), ref, atol=2e-5)


def test_minibatch_accumulator_equals_full_batch():
    rng = np.random.default_rng(7)
    n = 96
    acts = [(rng.normal(size=(n, 6)) + 4.0).astype(np.float32)]
    acts.append(np.tanh(acts[0] @ rng.normal(size=(6, 5))).astype(np.float32))
    acts.append(rng.normal(size=(n, 2, 2)).astype(np.float32))
    acts.append(np.full((n, 3), 2.5, np.float32))  # a constant layer
    full = np.asarray(cka_matrix(acts))
    acc = cka_accumulator()
    update = jax.jit(acc.update)
    state = acc.init([a[:32] for a in acts])
    for s in range(0, n, 32):
        state = update(state, [a[s:s + 32] for a in acts])
    got = np.asarray(jax.jit(acc.finalize)(state))
    np.testing.assert_allclose(got, full, atol=1e-6)
    assert np.all(np.diag(got) == 1.0) and np.all(np.isfinite(got))
    assert got[0, 3] == 0.0 and got[3, 0] == 0.0
    # the accumulated value is the full-batch one, not an average of per-batch CKA
    per_batch = np.mean([float(cka(acts[0][s:s + 32], acts[1][s:s + 32])) for s in range(0, n, 32)])
    assert abs(per_batch - full[0, 1]) > 1e-4


def test_matrix_unit_diagonal_and_no_nan_when_unbiased_negative():
    rng = np.random.default_rng(8)
    acts = [rng.normal(size=(5, 3)).astype(np.float32) for _ in range(4)]
    acts.append(np.ones((5, 2), np.float32))
    m = np.asarray(cka_matrix(acts, unbiased=True))
    assert np.all(np.isfinite(m)) and np.all(np.diag(m) == 1.0)
    np.testing.assert_allclose(m, m.T, atol=1e-6)
    # with 5 examples some unbiased self-HSIC or cross values go negative; still finite
    full = np.asarray(cka_matrix(acts))
    np.testing.assert_allclose(full[0, 1], _ref_biased_linear(acts[0], acts[1]), atol=1e-5)


def test_constant_activations_defined_value_and_warning():
    X, _ = _data()
    C = np.ones((40, 4), np.float32) * 0.1
    with pytest.warns(RuntimeWarning, match="one representation is constant"):
        assert float(cka(X, C)) == 0.0
    with pytest.warns(RuntimeWarning, match="both representations are constant"):
        assert float(cka(C, 3 * C, kernel="rbf")) == 1.0


@pytest.mark.parametrize("bad", [
    dict(X=np.ones((1, 3)), Y=np.ones((1, 3))),
    dict(X=np.ones((5, 3)), Y=np.ones((4, 3))),
])
def test_bad_input(bad):
    with pytest.raises(ValueError):
        cka(bad["X"], bad["Y"])


def test_bad_options():
    X, Y = _data()
    with pytest.raises(ValueError, match="kernel"):
        cka(X, Y, kernel="poly")
    with pytest.raises(ValueError, match="feature-space"):
        cka(X, Y, kernel="rbf", method="features")
    with pytest.raises(ValueError, match="at least 4"):
        cka(X[:3], Y[:3], unbiased=True)
    with pytest.raises(ValueError, match="sigma"):
        cka(X, Y, kernel="rbf", sigma=0.0)


def test_no_recompile_on_new_values():
    from jcausal.tracer.cka import _cka_impl

    X, Y = _data(9)
    cka(X, Y, method="gram")
    before = _cka_impl._cache_size()
    cka(X + 1.0, Y * 2.0, method="gram")
    assert _cka_impl._cache_size() == before


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", ["X", "Y"])
def test_nonfinite_activations_are_refused_naming_the_input(bad, side):
    """NaN gave nan silently and inf a 'constant ... returning 0.0' warning: both are refused."""
    X, Y = _data(5)
    A = (X if side == "X" else Y).copy()
    A[3, 0] = bad
    A[7, :2] = bad  # 2 examples, 3 entries
    args = (A, Y) if side == "X" else (X, A)
    msg = rf"^{side} holds NaN/inf: 3 non-finite entries in 2 of its 40 examples"
    for method in ("gram", "features"):
        with pytest.raises(ValueError, match=msg):
            cka(*args, method=method)
    with pytest.raises(ValueError, match=rf"^{side} holds NaN/inf"):
        cka(*args, kernel="rbf")
    assert np.isfinite(float(cka(X, Y)))  # the clean pair still works


def test_cka_matrix_refuses_nonfinite_naming_the_layer():
    X, Y = _data(6)
    Z = Y.copy()
    Z[0, 1] = np.nan
    msg = r"^layer 'acts\[2\]' holds NaN/inf: 1 non-finite entry in 1 of its 40"
    with pytest.raises(ValueError, match=msg):
        cka_matrix([X, Y, Z])
    with pytest.raises(ValueError, match=r"^layer 'conv2' holds NaN/inf"):
        cka_matrix([X, Y, Z], names=["conv1", "dense", "conv2"])
    with pytest.raises(ValueError, match="3 names for 2"):
        cka_matrix([X, Y], names=["a", "b", "c"])
    m = np.asarray(cka_matrix([X, Y], names=["a", "b"]))
    assert m[0, 1] == pytest.approx(_ref_biased_linear(X, Y), abs=1e-5)


def test_cka_under_jit_is_not_checked_on_the_host():
    X, Y = _data(7)
    assert float(jax.jit(cka)(X, Y)) == pytest.approx(float(cka(X, Y)), abs=1e-6)


def test_cka_of_large_activations_equals_the_unit_scale_value():
    """Activations of size 1e4 (raw inputs, say) made HSIC overflow float32 and cka return 0.0 with
    no warning (issue 21 re-probe); CKA does not depend on scale: compare with float64 at scale 1."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(64, 10))
    B = np.tanh(A @ rng.normal(size=(10, 6)))

    def ref(X, Y):  # linear CKA in float64 (Kornblith et al. 2019, eqn for centred features)
        X, Y = X - X.mean(0), Y - Y.mean(0)
        return np.sum((X.T @ Y) ** 2) / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))

    for scale in (1.0, 1e4, 1e10):
        for method in ("gram", "features"):
            got = float(cka((A * scale).astype(np.float32), (B * scale).astype(np.float32), method=method))
            np.testing.assert_allclose(got, ref(A, B), rtol=1e-5)
        assert float(cka((A * scale).astype(np.float32), (2 * A * scale + 1).astype(np.float32))) == \
            pytest.approx(1.0, abs=1e-5)
