"""Information-flow estimators against float64 quadrature (probit classifier, linear map)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.gce import VARIANTS, LinearGaussian, factor_flows, generative, information_flow
from tests.gce import reference as ref


def probit(a):
    a = jnp.asarray(a, jnp.float32)

    def classify(x):
        p1 = jax.scipy.stats.norm.cdf(a @ x)
        return jnp.stack([1.0 - p1, p1])

    return classify


def linear_decode(W, z, key=None):
    return W @ z


def repeated(fn, key, R):
    """``R`` independent estimates (one compiled, vmapped program) as float64 numpy."""
    return np.asarray(jax.jit(jax.vmap(fn))(jax.random.split(key, R)), np.float64)


def test_joint_flow_matches_probit_closed_form_and_reports_small_n_bias():
    # K = 1, L = 2, N = 3, noisy decoder (gamma = 0.1): p(Y=1 | alpha) has a closed form.
    rng = np.random.default_rng(0)
    N, K, L, gamma = 3, 1, 2, 0.1
    a = rng.normal(size=N)
    a *= 3.0 / np.linalg.norm(a)
    model = LinearGaussian(N, K, L, gamma=gamma, rngs=nnx.Rngs(1))
    W = rng.normal(size=(N, K + L)) * 0.3
    W[:, 0] += a / np.linalg.norm(a)
    model.W[...] = jnp.asarray(W, jnp.float32)
    gen = generative(model)
    W = np.asarray(model.weights, np.float64)
    exact = ref.mi_unconditional(a, W, [0], gamma)
    assert 0.05 < exact < np.log(2)

    clf = probit(a)

    def est(n_alpha, n_beta):
        return lambda k: information_flow(gen.decode, clf, k, K=K, L=L, n_alpha=n_alpha, n_beta=n_beta,
                                          params=(gen.params, None), noisy=True)

    R = 16
    big = repeated(est(400, 400), jax.random.key(0), R)
    se = big.std(ddof=1) / np.sqrt(R)
    # the O(1/n_beta) plug-in bias is <= 1/(2 n_beta) nats here; the test keeps it visible
    assert abs(big.mean() - exact) <= 3 * se + 1 / 800, (big.mean(), exact, se)
    # small-N bias: with n_beta = 2 the plug-in entropy of p(y|alpha) is biased low, so C is high
    small = repeated(est(400, 2), jax.random.key(1), R)
    bias = small.mean() - exact
    print(f"\nC exact {exact:.4f}; n=400x400 {big.mean():.4f} +- {se:.4f}; "
          f"n_beta=2 bias {bias:+.4f} +- {small.std(ddof=1) / np.sqrt(R):.4f} nats")
    assert bias > 3 * small.std(ddof=1) / np.sqrt(R)


def test_variants_match_quadrature_and_obey_proposition_4():
    rng = np.random.default_rng(3)
    N, K, L = 4, 2, 2
    a = rng.normal(size=N)
    a *= 2.0 / np.linalg.norm(a)
    W = rng.normal(size=(N, K + L)) * 0.7
    exact = ref.variants(a, W, K)
    # Proposition 4 on the exact values (a check of the reference itself)
    assert exact["joint_conditional"] >= exact["joint"] >= exact["independent"]
    assert exact["joint_conditional"] >= exact["independent_conditional"] >= exact["independent"]

    clf = probit(a)
    Wj = jnp.asarray(W, jnp.float32)
    n, R = 300, 8
    est = {}
    for v in VARIANTS:
        def fn(k, v=v):
            return information_flow(linear_decode, clf, k, K=K, L=L, n_alpha=n, n_beta=n,
                                                     params=(Wj, None), variant=v)
        est[v] = repeated(fn, jax.random.key(7), R)  # same keys: paired differences
    tol_bias = 1 / (2 * n)
    for v in VARIANTS:
        se = est[v].std(ddof=1) / np.sqrt(R)
        assert abs(est[v].mean() - exact[v]) <= 3 * se + tol_bias, (v, est[v].mean(), exact[v], se)

    def holds(big, small):  # big >= small within 3 standard errors of the paired difference
        d = est[big] - est[small]
        assert d.mean() >= -3 * d.std(ddof=1) / np.sqrt(R) - tol_bias, (big, small, d.mean())

    holds("joint_conditional", "joint")  # (c): C_jc = C + I(alpha; beta | Y)
    holds("independent_conditional", "independent")  # (d)
    holds("joint", "independent")  # (a)
    holds("joint_conditional", "independent_conditional")  # (b)


def test_factor_flows_single_latents():
    rng = np.random.default_rng(5)
    a = rng.normal(size=3)
    W = np.zeros((3, 3))
    W[:, 0] = a / np.linalg.norm(a)  # only z_0 moves the classifier
    W[:, 1] = np.cross(a, [0.0, 0.0, 1.0])
    W[:, 1] /= np.linalg.norm(W[:, 1])
    W[:, 2] = np.cross(a, W[:, 1]) / np.linalg.norm(a)
    flows = np.asarray(factor_flows(linear_decode, probit(a), jax.random.key(0), K=1, L=2, n_outer=400,
                                    n_inner=100, params=(jnp.asarray(W, jnp.float32), None)))
    exact = [ref.mi_unconditional(a, W, [j]) for j in range(3)]
    np.testing.assert_allclose(flows, exact, atol=0.03)
    assert flows[0] > 0.2 and np.all(flows[1:] < 1e-3)  # orthogonal factors carry nothing


def test_factor_flows_compile_once_for_every_factor_and_equal_mutual_information():
    """One program serves all K + L factors (the factor is an argument), and each flow is the
    single-factor mutual_information with the same key, to float32 rounding of two entropies."""
    from jcausal.gce.objectives import _factor_flow_program, mutual_information

    W = jnp.asarray(np.random.default_rng(2).normal(size=(3, 4)), jnp.float32)
    clf = probit(np.array([1.0, -0.5, 0.3]))
    key = jax.random.key(7)
    n0 = _factor_flow_program._cache_size()
    flows = np.asarray(factor_flows(linear_decode, clf, key, K=2, L=2, n_outer=32, n_inner=8,
                                    params=(W, None)))
    assert _factor_flow_program._cache_size() == n0 + 1
    keys = jax.random.split(key, 4)
    each = [float(mutual_information(linear_decode, clf, keys[j], dim=4, factors=[j], n_outer=32,
                                     n_inner=8, params=(W, None))) for j in range(4)]
    np.testing.assert_allclose(flows, each, rtol=0, atol=1e-6)  # a difference of entropies ~0.7
    assert flows.min() > 1e-3  # every factor moves this classifier: a wrong grid would show


def test_gradient_in_generator_params_is_finite_and_matches_finite_differences():
    a = np.array([1.0, -0.5])
    clf = probit(a)
    W0 = jnp.asarray([[0.6, 0.3], [0.2, 0.7]], jnp.float32)

    @jax.jit
    def C(W):
        return information_flow(linear_decode, clf, jax.random.key(0), K=1, L=1, n_alpha=64, n_beta=16,
                                params=(W, None))

    g = jax.grad(C)(W0)
    assert np.all(np.isfinite(np.asarray(g)))
    E = jnp.asarray([[1.0, 0.0], [0.0, 0.0]], jnp.float32)
    h = 1e-2
    fd = (C(W0 + h * E) - C(W0 - h * E)) / (2 * h)  # common random numbers: same key
    np.testing.assert_allclose(float(jnp.sum(g * E)), float(fd), rtol=2e-2, atol=1e-3)


def test_saturated_probabilities_give_finite_gradients():
    def clf(x):  # exactly one-hot on most of the grid
        p1 = jnp.clip(x[0] * 100.0, 0.0, 1.0)
        return jnp.stack([1.0 - p1, p1])

    g = jax.jit(jax.grad(lambda W: information_flow(linear_decode, clf, jax.random.key(1), K=1, L=1,
                                                    n_alpha=32, n_beta=8, params=(W, None))))(
        jnp.eye(2, dtype=jnp.float32))
    assert np.all(np.isfinite(np.asarray(g)))


def test_jit_does_not_recompile():
    clf = probit(np.array([1.0, 0.0]))
    f = jax.jit(lambda W, k: information_flow(linear_decode, clf, k, K=1, L=1, n_alpha=8, n_beta=4,
                                              params=(W, None)))
    W = jnp.eye(2, dtype=jnp.float32)
    f(W, jax.random.key(0))
    n = f._cache_size()
    f(W * 2, jax.random.key(1))
    assert f._cache_size() == n


@pytest.mark.parametrize("kw, match", [
    (dict(K=0), "K = 0"),
    (dict(n_alpha=0), "n_alpha = 0"),
    (dict(n_beta=0), "n_beta = 0"),
    (dict(variant="both"), "variant = 'both'"),
])
def test_bad_sizes(kw, match):
    args = dict(K=1, L=1, n_alpha=4, n_beta=4) | kw
    with pytest.raises(ValueError, match=match):
        information_flow(lambda z: z, probit(np.ones(2)), jax.random.key(0), **args)


def test_bad_classifiers():
    key = jax.random.key(0)
    kw = dict(K=1, L=1, n_alpha=4, n_beta=4)
    with pytest.raises(ValueError, match="sum to 2"):
        information_flow(lambda z: z, lambda x: jnp.stack([x[0] + 1.0, x[1] + 1.0]), key, **kw)
    with pytest.raises(ValueError, match="non-finite"):
        information_flow(lambda z: z, lambda x: jnp.stack([x[0] / x[0], 1.0 - x[1]]), key, **kw)

    def needs_three(x):
        return jax.nn.softmax(jnp.ones((3, 2)) @ x.reshape(3))

    with pytest.raises(ValueError, match=r"rejected the decoder's output of shape \(2,\)"):
        information_flow(lambda z: z, needs_three, key, **kw)


def _nan_away_from_zero(x):
    """Valid probabilities at the probe z = 0 only: NaN on every latent a Gaussian grid draws."""
    return jnp.where(jnp.all(x == 0.0), jax.nn.softmax(x), jnp.nan)


def _nan_for_large_x0(x):
    return jnp.where(x[0] > 1.0, jnp.nan, jax.nn.softmax(x))


def test_nonfinite_probabilities_away_from_the_probe_are_refused():
    """The probe at z = 0 passed and information_flow returned nan."""
    from jcausal.gce import mutual_information

    key = jax.random.key(0)
    kw = dict(K=1, L=1, n_alpha=4, n_beta=4)
    msg = r"^information_flow: the classifier or the decoder produced non-finite class probabilities on "
    with pytest.raises(ValueError, match=msg + r"16 of the 16 latents of the grid \(the probe"):
        information_flow(lambda z: z, _nan_away_from_zero, key, **kw)
    with pytest.raises(ValueError, match=msg + r"32 of the 32 latents of the grid \(2 grids of 4 x 4\)"):
        information_flow(lambda z: z, _nan_away_from_zero, key, K=2, L=1, n_alpha=4, n_beta=4,
                         variant="independent")
    with pytest.raises(ValueError, match=r"^mutual_information: .* on 16 of the 16 latents"):
        mutual_information(lambda z: z, _nan_away_from_zero, key, dim=2, factors=[1], n_outer=4, n_inner=4)
    with pytest.raises(ValueError, match=r"^factor_flows: .* on 32 of the 32 latents of the grid \(2 grids "
                                         r"of 4 x 4; factors \[0, 1\]\)"):
        factor_flows(lambda z: z, _nan_away_from_zero, key, K=1, L=1, n_outer=4, n_inner=4)
    # NaN on part of the grid: the count is that of the latents with z_0 > 1, whole rows of n_beta
    with pytest.raises(ValueError, match=msg) as info:
        information_flow(lambda z: z, _nan_for_large_x0, key, K=1, L=1, n_alpha=64, n_beta=8)
    bad = int(str(info.value).split(" on ")[1].split(" of ")[0])
    assert 0 < bad < 64 * 8 and bad % 8 == 0, bad
    # traced calls return the estimate (NaN) as before, without a host check
    traced = jax.jit(lambda k: information_flow(lambda z: z, _nan_away_from_zero, k, **kw))(key)
    assert np.isnan(float(traced))
    ok = information_flow(lambda z: z, jax.nn.softmax, key, **kw)
    assert np.isfinite(float(ok))
