"""The variance-reduced samplers of the information-flow estimators: ``"sobol"`` (randomized
quasi-Monte Carlo, the default) and ``"stratified"`` (Latin hypercube).

Against float64 Gauss-Hermite quadrature on the linear map ``x = W z`` with a probit and a logistic
classifier (``p(Y = 1 | x) = F(a^T x)``): ``Y`` depends on ``z`` only through ``u = a^T W z``, so
``C = I(alpha; Y) = H(E F(u)) - E_{u_alpha} h_b(E_{u_beta} F(u_alpha + u_beta))`` with independent
Gaussian projections ``u_alpha``, ``u_beta`` (a 2-D quadrature, exact to 1e-10 here).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit, ndtr

from jcausal.gce import information_flow
from jcausal.gce.objectives import SAMPLERS, grid_latents, normal_draws, sobol_draws
from tests.gce import reference as ref

KEYS = 64
LINKS = {"probit": (jax.scipy.stats.norm.cdf, ndtr), "logistic": (jax.nn.sigmoid, expit)}


def exact_flow(a, W, K, link):
    """``I(alpha; Y)`` by quadrature, float64."""
    cdf = LINKS[link][1]
    s_a, s_b = ref.projections(a, W, range(K))
    t = ref.NODES
    p_given = cdf(s_a * t[:, None] + s_b * t[None, :]) @ ref.WEIGHTS  # p(Y=1 | u_alpha), (nodes,)
    return float(ref.hb(ref.WEIGHTS @ p_given) - ref.WEIGHTS @ ref.hb(p_given))


def problem(K, L, seed=0, steepness=2.5):
    rng = np.random.default_rng(seed)
    N = K + L
    W = rng.normal(size=(N, N))
    a = rng.normal(size=N)
    return a * steepness / np.linalg.norm(a), W


def estimates(a, W, K, L, link, sampler, n_alpha, n_beta, key=0, keys=KEYS, grad=False):
    """``keys`` independent estimates of ``C`` (or of its gradient in ``W``), one vmapped program."""
    cdf = LINKS[link][0]

    def classify(a, x):
        p1 = cdf(a @ x)
        return jnp.stack([1.0 - p1, p1])

    def C(W, k):
        return information_flow(lambda W, z: W @ z, classify, k, K=K, L=L, n_alpha=n_alpha, n_beta=n_beta,
                                params=(W, jnp.asarray(a, jnp.float32)), sampler=sampler)

    f = jax.grad(C) if grad else C
    run = jax.jit(jax.vmap(f, in_axes=(None, 0)))
    out = run(jnp.asarray(W, jnp.float32), jax.random.split(jax.random.key(key), keys))
    return np.asarray(out, np.float64)


@pytest.mark.parametrize("sampler", ["sobol", "stratified"])
@pytest.mark.parametrize("link", ["probit", "logistic"])
@pytest.mark.parametrize("K, L", [(1, 1), (2, 1)])
def test_sampler_is_unbiased_and_beats_plain_mc_with_a_quarter_of_the_decodes(sampler, link, K, L):
    a, W = problem(K, L)
    truth = exact_flow(a, W, K, link)
    assert 0.03 < truth < np.log(2)
    strat = estimates(a, W, K, L, link, sampler, 25, 25, key=1)
    mc = estimates(a, W, K, L, link, "mc", 100, 25, key=2)
    se = strat.std(ddof=1) / np.sqrt(KEYS)
    rmse_s = np.sqrt(np.mean((strat - truth) ** 2))
    rmse_mc = np.sqrt(np.mean((mc - truth) ** 2))
    print(f"\n{sampler} {link} K={K} L={L}: C {truth:.5f}; 25x25 mean {strat.mean():.5f} +- {se:.5f}, "
          f"RMSE {rmse_s:.5f}; mc 100x25 RMSE {rmse_mc:.5f}")
    assert abs(strat.mean() - truth) <= 3 * se
    assert rmse_s < rmse_mc


def test_quadrature_reference_agrees_with_the_probit_closed_form():
    a, W = problem(1, 1)
    assert exact_flow(a, W, 1, "probit") == pytest.approx(ref.mi_unconditional(a, W, [0]), abs=1e-9)


@pytest.fixture(scope="module")
def mc_gradient():
    """Plain Monte Carlo's gradient at 400 x 100, 16 keys: ``(problem, estimates)``."""
    a, W = problem(1, 1, seed=1)
    return (a, W), estimates(a, W, 1, 1, "probit", "mc", 400, 100, key=3, keys=16, grad=True)


@pytest.mark.parametrize("sampler", ["sobol", "stratified"])
def test_gradient_matches_plain_mc_at_large_n_with_lower_variance_at_equal_decodes(sampler, mc_gradient):
    K, L = 1, 1
    (a, W), ref_grad = mc_gradient
    g_ref = ref_grad.mean(0)
    strat = estimates(a, W, K, L, "probit", sampler, 25, 25, key=4, grad=True)
    mc = estimates(a, W, K, L, "probit", "mc", 25, 25, key=5, grad=True)
    se = np.sqrt(strat.var(0, ddof=1) / KEYS + ref_grad.var(0, ddof=1) / 16)
    z = np.abs(strat.mean(0) - g_ref) / se
    var_s, var_mc = strat.var(0, ddof=1).sum(), mc.var(0, ddof=1).sum()
    print(f"\ngrad: |mean diff| / SE max {z.max():.2f}; total variance {sampler} {var_s:.3g} "
          f"vs mc {var_mc:.3g}")
    assert np.all(z <= 3)
    assert np.linalg.norm(g_ref) > 10 * np.sqrt(ref_grad.var(0, ddof=1).sum() / 16)  # a real signal
    assert var_s < var_mc


def test_latin_hypercube_puts_one_draw_in_every_stratum():
    z = np.asarray(normal_draws(jax.random.key(0), (3, 16, 2), "stratified"), np.float64)
    strata = np.floor(ndtr(z) * 16).astype(int)
    for b in range(3):
        for d in range(2):
            assert sorted(strata[b, :, d]) == list(range(16))


def test_sobol_blocks_are_nets_and_points_are_marginally_normal():
    # every aligned block of 2**m consecutive points: one point per 1/2**m interval of each
    # coordinate; and over 512 keys (scrambles) each point's coordinates are N(0, 1)
    u = ndtr(np.asarray(sobol_draws(jax.random.key(0), 80, 5), np.float64))
    for m in (8, 16, 64):
        for b in range(0, 80 - m + 1, m):
            for d in range(5):
                assert sorted(np.floor(u[b:b + m, d] * m).astype(int)) == list(range(m))
    z = np.asarray(jax.vmap(lambda k: sobol_draws(k, 6, 3))(jax.random.split(jax.random.key(1), 512)),
                   np.float64)
    se = 1 / np.sqrt(512)
    assert np.all(np.abs(z.mean(0)) < 4 * se) and np.all(np.abs(z.var(0) - 1) < 4 * np.sqrt(2) * se)
    assert sobol_draws(jax.random.key(0), 4, 0).shape == (4, 0)


def test_grid_latents_layouts():
    mask = np.array([True, False, False])
    z = np.asarray(grid_latents(jax.random.key(0), 3, mask, 8, 4, "stratified"))
    assert z.shape == (8, 4, 3)
    assert np.all(z[:, :, 0] == z[:, :1, 0])  # alpha fixed along a row
    assert not np.allclose(z[0, :, 1:], z[1, :, 1:])  # fresh betas for every alpha
    shared = np.asarray(grid_latents(jax.random.key(0), 3, mask, 8, 4, "stratified", per_outer=False))
    assert np.all(shared[:, :, 1:] == shared[:1, :, 1:])  # one beta set (conditional estimators)
    sob = np.asarray(grid_latents(jax.random.key(0), 3, mask, 8, 4, "sobol"))
    assert np.all(sob[:, :, 0] == sob[:, :1, 0]) and np.all(np.diff(sob[:, 0, 0]) > 0)  # alphas sorted
    # the betas of all alphas: consecutive blocks of one Sobol sequence, so each aligned block of
    # 4 (one alpha) and of 32 (all alphas) has one point per stratum of each coordinate
    u = ndtr(sob[:, :, 1:].astype(np.float64))
    for m, blocks in ((4, u), (32, u.reshape(1, 32, 2))):
        for block in blocks:
            for d in range(2):
                assert sorted(np.floor(block[:, d] * m).astype(int)) == list(range(m))
    mc = np.asarray(grid_latents(jax.random.key(0), 3, mask, 8, 4, "mc"))
    # Algorithm 2: the beta loop inside the alpha loop, fresh betas for every alpha
    assert np.all(mc[:, :, 0] == mc[:, :1, 0]) and not np.allclose(mc[0, :, 1:], mc[1, :, 1:])


@pytest.mark.parametrize("kw, match", [
    (dict(sampler="qmc"), r"sampler = 'qmc': choose one of \('sobol', 'stratified', 'mc'\)"),
    (dict(n_alpha=1), "sampler='sobol' needs at least 2 draws to stratify, got n_alpha = 1"),
    (dict(n_beta=1, sampler="stratified"),
     "sampler='stratified' needs at least 2 draws to stratify, got n_beta = 1"),
    (dict(n_alpha=2 ** 16, n_beta=2 ** 15), r"at most 2\*\*30 points per sequence, got n_alpha \* n_beta"),
])
def test_bad_sampler_requests(kw, match):
    args = dict(K=1, L=1, n_alpha=4, n_beta=4) | kw
    with pytest.raises(ValueError, match=match):
        information_flow(lambda z: z, lambda x: jax.nn.softmax(x), jax.random.key(0), **args)


def test_single_draws_are_fine_where_nothing_needs_stratifying():
    # L = 0: no beta to stratify, so n_beta = 1 is allowed; plain MC takes single draws
    f = lambda z: jnp.concatenate([z, -z])  # noqa: E731
    clf = lambda x: jax.nn.softmax(x)  # noqa: E731
    assert np.isfinite(float(information_flow(f, clf, jax.random.key(0), K=1, L=0, n_alpha=4, n_beta=1)))
    assert np.isfinite(float(information_flow(f, clf, jax.random.key(0), K=1, L=0, n_alpha=1, n_beta=1,
                                              sampler="mc")))
    assert SAMPLERS[0] == "sobol"
