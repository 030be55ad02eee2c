"""Algorithm 1: the search logic on a scripted measure, and a real run on the linear-Gaussian map."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jcausal.gce import LinearGaussian, make_measure, select_parameters
from jcausal.plot.gce import plot_selection


def scripted(calls):
    """D saturates at 4 latents; lambda >= 0.1 restores D; C gains stop after K = 2."""

    def measure(K, L, lam):
        calls.append((K, L, lam))
        n = K + L
        D = -10.0 * 2.0 ** (-min(n, 4))
        if K > 0 and lam < 0.1:
            D -= 1.0  # the causal term pulls D away unless lambda is large enough
        C = {0: 0.0, 1: 0.3, 2: 0.5, 3: 0.51, 4: 0.515}[K]
        return C, D

    return measure


def test_algorithm_1_scripted():
    calls = []
    path = select_parameters(scripted(calls), max_latents=8, lambdas=[0.01, 0.1, 1.0], progress=False)
    assert (path.K, path.L, path.lam) == (2, 2, 0.1)
    assert path.D_target == pytest.approx(-10.0 / 16)
    # step 1 stopped at the first non-improving size; step 2 never lowered lambda again
    assert [c for c in calls if c[0] == 0] == [(0, n, 0.0) for n in range(1, 6)]
    assert [c for c in calls if c[0] > 0] == [(1, 3, 0.01), (1, 3, 0.1), (2, 2, 0.1), (3, 1, 0.1)]
    accepted = [(t["K"], t["lam"]) for t in path.trials if t["accepted"] and t["stage"] == 2]
    assert accepted == [(1, 0.1), (2, 0.1), (3, 0.1)]
    fig = plot_selection(path)
    assert len(fig.axes) == 3


@pytest.mark.slow
def test_algorithm_1_linear_gaussian_picks_one_causal_factor():
    """Data N(0, I_3), linear classifier: D needs 3 factors, C saturates with K = 1 -> (1, 2)."""
    a = jnp.asarray([2.0, -1.0, 0.5], jnp.float32)

    def clf(a, x):
        p1 = jax.scipy.stats.norm.cdf(a @ x)
        return jnp.stack([1.0 - p1, p1])

    measure = make_measure(lambda K, L: LinearGaussian(3, K, L, gamma=0.05, rngs=nnx.Rngs(0)), clf,
                           key=jax.random.key(0), steps=150, classify_params=a, n_alpha=32, n_beta=8,
                           n_eval=(200, 50), learning_rate=0.05)
    path = select_parameters(measure, max_latents=5, lambdas=[0.1, 1.0], d_tol=0.05, c_tol=0.1,
                             progress=False)
    s1 = [t["D"] for t in path.trials if t["stage"] == 1]
    assert s1[2] > s1[1] > s1[0]  # D improves until K + L = 3 = N
    assert (path.K, path.L) == (1, 2), path.trials


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_latents = 0"):
        select_parameters(scripted([]), max_latents=0, lambdas=[0.1])
    with pytest.raises(ValueError, match="lambdas"):
        select_parameters(scripted([]), max_latents=3, lambdas=[1.0, 0.1])
