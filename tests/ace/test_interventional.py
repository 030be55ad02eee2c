"""Phase I estimators against independent references (float64 jax.hessian with numpy moments,
closed forms, Monte Carlo with stated tolerances)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.ace import estimators as E
from jcausal.ace import input_stats, intervention_grid, interventional_expectation, make_estimator
from jcausal.data import load_digits
from jcausal.models import MLP, functional
from tests.conftest import REPO

FEATS = [0, 5, 20, 27, 36, 43, 60]


class SmallCNN(nnx.Module):
    """8x8 digits: conv4 3x3 - act - [maxpool 2x2] - dense 5 (logits)."""

    def __init__(self, activation, pool, rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), padding="VALID", rngs=rngs)
        self.fc = nnx.Linear(4 * (3 * 3 if pool else 6 * 6), 5, rngs=rngs)
        self.act, self.pool = activation, pool

    def __call__(self, x, *, key=None):
        h = {"softplus": jax.nn.softplus, "tanh": jnp.tanh, "relu": jax.nn.relu}[self.act](
            self.conv(x.reshape(1, 8, 8, 1)))
        if self.pool:
            h = nnx.max_pool(h, (2, 2), strides=(2, 2))
        return self.fc(h.reshape(-1))


def _cast(tree, dtype):
    return jax.tree.map(lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _reference(apply, params, X, feats, alphas, head=None):
    """float64 reference: numpy moments, jax.hessian at each point, contraction with Sigma_i."""
    with jax.enable_x64(True):
        params = _cast(params, jnp.float64)
        X = np.asarray(X, np.float64)
        mu, Sig = X.mean(0), np.cov(X.T, bias=True)

        def f(x):
            y = jnp.atleast_1d(apply(params, x))
            return y if head is None else head(y)

        fh = jax.jit(lambda x: (f(x), jax.hessian(f)(x)))
        out = np.zeros((len(feats), len(alphas), 0)).tolist()
        for r, i in enumerate(feats):
            for c, a in enumerate(alphas):
                x = mu.copy()
                x[i] = a
                S = Sig.copy()
                S[i, :] = 0.0
                S[:, i] = 0.0
                y, H = fh(jnp.asarray(x))
                out[r][c] = np.asarray(y) + 0.5 * np.einsum("mjk,jk->m", np.asarray(H), S)
        return np.asarray(out)


def _rel(a, ref):
    return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / np.max(np.abs(ref)))


def _digits(n=400):
    return load_digits().X[:n]


def _models(dtype):
    return {
        "mlp_tanh": MLP((64, 32, 16, 5), activation="tanh", param_dtype=dtype, rngs=nnx.Rngs(0)),
        "mlp_softplus": MLP((64, 24, 5), activation="softplus", param_dtype=dtype, rngs=nnx.Rngs(1)),
        "cnn_softplus": SmallCNN("softplus", False, nnx.Rngs(2)),
    }


@pytest.mark.parametrize("name", ["mlp_tanh", "mlp_softplus", "cnn_softplus"])
@pytest.mark.parametrize("x64,tol", [(True, 1e-5), (False, 1e-4)])
def test_exact_methods_match_float64_hessian(name, x64, tol):
    dtype = jnp.float64 if x64 else jnp.float32
    X = _digits()
    alphas = np.array([0.0, 0.37, 1.0])
    apply, params = functional(_models(jnp.float32)[name])
    ref = _reference(apply, params, X, FEATS, alphas)
    with jax.enable_x64(x64):
        params = _cast(params, dtype)
        stats = input_stats(jnp.asarray(X, dtype), low=0.0, high=1.0)
        for method in ("directional", "exact"):
            out = interventional_expectation(apply, stats, alphas, params=params, features=FEATS,
                                             method=method)
            assert out.shape == (len(FEATS), 3, 5) and out.dtype == dtype
            assert _rel(out, ref) <= tol, (method, _rel(out, ref))
        # direction chunking changes nothing but memory
        out = interventional_expectation(apply, stats, alphas, params=params, features=FEATS,
                                         method=E.Directional(direction_batch_size=7))
        assert _rel(out, ref) <= tol


@pytest.mark.parametrize("which", ["mlp", "cnn"])
@pytest.mark.parametrize("x64,tol", [(True, 1e-5), (False, 1e-4)])
def test_gauss_newton_on_relu_bodies(which, x64, tol):
    dtype = jnp.float64 if x64 else jnp.float32
    X = _digits()
    alphas = np.array([0.1, 0.9])
    model = (MLP((64, 32, 16, 5), activation="relu", rngs=nnx.Rngs(3)) if which == "mlp"
             else SmallCNN("relu", True, nnx.Rngs(4)))
    apply, params = functional(model)
    ref = _reference(apply, params, X, FEATS, alphas, head=jax.nn.softmax)
    with jax.enable_x64(x64):
        params = _cast(params, dtype)
        stats = input_stats(jnp.asarray(X, dtype), low=0.0, high=1.0)
        out = interventional_expectation(apply, stats, alphas, params=params, features=FEATS,
                                         method=E.GaussNewton(head=jax.nn.softmax, check=True))
    assert _rel(out, ref) <= tol, _rel(out, ref)


def test_gauss_newton_check_rejects_smooth_body():
    apply, params = functional(MLP((64, 16, 5), activation="tanh", rngs=nnx.Rngs(0)))
    stats = input_stats(_digits(), low=0.0, high=1.0)
    with pytest.raises(ValueError, match="not piecewise linear"):
        interventional_expectation(apply, stats, [0.5], params=params, features=[20],
                                   method=E.GaussNewton(head=jax.nn.softmax, check=True))


# ---------------------------------------------------------------- quadratic model: closed forms

K = 8


def _quadratic(seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(K, K)) / np.sqrt(K)  # linear body
    B = rng.normal(size=(3, K, K))  # three quadratic outputs of the body
    c = rng.normal(size=(3, K))
    A = np.einsum("ji,mjl,lk->mik", W, B, W)  # f_m(x) = x^T A_m x + b_m^T x
    b = c @ W
    body = lambda p, x: p["W"] @ x  # noqa: E731
    head = lambda z: jnp.einsum("j,mjl,l->m", z, B_, z) + C_ @ z  # noqa: E731
    B_, C_ = jnp.asarray(B), jnp.asarray(c)
    full = lambda p, x: head(body(p, x))  # noqa: E731
    X = rng.normal(size=(3000, K)) @ rng.normal(size=(K, K)) * 0.5 + 1.0
    return full, body, head, {"W": W}, A, b, X


def _closed_form(A, b, X, feats, alphas):
    mu, Sig = X.mean(0), np.cov(X.T, bias=True)
    As = 0.5 * (A + np.swapaxes(A, 1, 2))
    out = np.zeros((len(feats), len(alphas), A.shape[0]))
    for r, i in enumerate(feats):
        for c, a in enumerate(alphas):
            x = mu.copy()
            x[i] = a
            S = Sig.copy()
            S[i, :] = S[:, i] = 0.0
            out[r, c] = np.einsum("j,mjk,k->m", x, A, x) + b @ x + np.einsum("mjk,jk->m", As, S)
    return out


def test_quadratic_all_methods_equal_closed_form():
    with jax.enable_x64(True):
        full, body, head, params, A, b, X = _quadratic()
        params = _cast(params, jnp.float64)
        stats = input_stats(jnp.asarray(X))
        feats = [0, 3, 7]
        alphas = intervention_grid(stats, 4, feats)
        truth = np.stack([_closed_form(A, b, X, [i], np.asarray(alphas[r]))[0] for r, i in enumerate(feats)])
        for method, kw in [("directional", {}), ("exact", {}), ("finite_difference", {"step": 1e-3}),
                           ("monte_carlo", {"data": X})]:
            data = kw.pop("data", None)
            out = interventional_expectation(full, stats, alphas, params=params, features=feats,
                                             method=make_estimator(method, **kw), data=data)
            np.testing.assert_allclose(out, truth, rtol=1e-8, atol=1e-8 * np.abs(truth).max(), err_msg=method)
        out = interventional_expectation(body, stats, alphas, params=params, features=feats,
                                         method=E.GaussNewton(head=head))
        np.testing.assert_allclose(out, truth, rtol=1e-8, atol=1e-8 * np.abs(truth).max())
        est, info = interventional_expectation(full, stats, alphas, params=params, features=feats,
                                               method=E.Hutchinson(key=jax.random.key(0), num_samples=64),
                                               return_info=True)
        z = np.abs(np.asarray(est) - truth) / np.asarray(info.stderr)
        assert np.all(z <= 4.0), z.max()
        assert np.all(np.asarray(info.stderr) > 0)
        # Hutchinson is unbiased: many samples shrink the error
        est2, info2 = interventional_expectation(full, stats, alphas, params=params, features=feats,
                                                 method=E.Hutchinson(key=jax.random.key(1), num_samples=4096),
                                                 return_info=True)
        assert float(np.max(info2.stderr)) < float(np.max(info.stderr)) / 5
        assert np.all(np.abs(np.asarray(est2) - truth) <= 4 * np.asarray(info2.stderr))


def test_monte_carlo_agrees_with_directional_on_gaussian_data():
    """Quadratic model, Gaussian data: the Taylor expansion is exact, so eqn 2 and eqn 4 agree
    (within 2%; with the empirical covariance they agree to round-off)."""
    full, _, _, params, A, b, _ = _quadratic(seed=1)
    rng = np.random.default_rng(5)
    X = (rng.normal(size=(4000, K)) @ rng.normal(size=(K, K)) * 0.3).astype(np.float32)
    stats = input_stats(X)
    params = _cast(params, jnp.float32)
    alphas = intervention_grid(stats, 5)
    mc, info = interventional_expectation(full, stats, alphas, params=params, method="monte_carlo",
                                          data=X, return_info=True)
    dr = interventional_expectation(full, stats, alphas, params=params)
    scale = np.abs(np.asarray(dr)).max()
    assert np.max(np.abs(np.asarray(mc) - np.asarray(dr))) <= 0.02 * scale


def test_truncation_error_within_bound():
    with jax.enable_x64(True):
        apply, params = functional(MLP((64, 32, 5), activation="tanh", param_dtype=jnp.float64,
                                       rngs=nnx.Rngs(7)))
        X = jnp.asarray(_digits(), jnp.float64)
        stats = input_stats(X, low=0.0, high=1.0)
        alphas = np.array([0.2, 0.8])
        full = interventional_expectation(apply, stats, alphas, params=params, features=FEATS)
        hess = jax.jit(jax.hessian(lambda x: apply(params, x)))
        for rank in (5, 0.5, 0.9, 0.99):
            out, info = interventional_expectation(apply, stats, alphas, params=params, features=FEATS,
                                                   method=E.Directional(rank=rank), return_info=True)
            assert 0 < info.rank < 64 and info.discarded_variance > 0
            for r, i in enumerate(FEATS):
                for c, a in enumerate(alphas):
                    H = hess(stats.mean.at[i].set(a))
                    norm = np.linalg.norm(np.asarray(H), ord=2, axis=(1, 2))  # per output
                    err = np.abs(np.asarray(out[r, c]) - np.asarray(full[r, c]))
                    assert np.all(err <= 0.5 * norm * info.discarded_variance + 1e-12)
            # and truncation really loses something at low rank
        assert info.discarded_variance < truncate_var(stats, 5)


def truncate_var(stats, r):
    return float(jnp.sum(stats.eigenvalues[r:]))


def test_recompile_guard():
    traces = []

    def f(p, x):
        traces.append(1)  # runs only while tracing
        return jnp.tanh(p @ x)

    p = jnp.asarray(np.random.default_rng(0).normal(size=(3, 6)), jnp.float32)
    stats = input_stats(np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32))
    from jcausal.ace import interventional as I

    interventional_expectation(f, stats, [0.0, 0.5], params=p, features=[1, 2])
    n, size = len(traces), I._run_points._cache_size()
    assert n > 0
    interventional_expectation(f, stats, [0.1, -0.5], params=p * 2, features=[3, 4])
    # same shapes: f is read once for this call (never a stale state), nothing is compiled again
    assert len(traces) == n + 1
    assert I._run_points._cache_size() == size


SHARD_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from flax import nnx
    from jcausal.ace import Execution, input_stats, interventional_expectation, intervention_grid
    from jcausal.ace import make_estimator
    from jcausal.models import MLP, functional
    assert len(jax.devices()) == 4, jax.devices()
    apply, params = functional(MLP((12, 16, 3), activation="tanh", param_dtype=jnp.float64,
                                   rngs=nnx.Rngs(0)))
    X = np.random.default_rng(0).normal(size=(300, 12))
    stats = input_stats(X)
    alphas = intervention_grid(stats, 7)  # 84 points: not a multiple of 4 x batch -> padding
    for method, kw in [("directional", {}), ("hutchinson", {"key": jax.random.key(3)}),
                       ("monte_carlo", {"data": X})]:
        data = kw.pop("data", None)
        est = make_estimator(method, **kw)
        one = interventional_expectation(apply, stats, alphas, params=params, method=est, data=data,
                                         run=Execution(devices=jax.devices()[:1], batch_size=8))
        four = interventional_expectation(apply, stats, alphas, params=params, method=est, data=data,
                                          run=Execution(batch_size=8))
        np.testing.assert_allclose(four, one, rtol=1e-12, atol=1e-12, err_msg=method)
    print("SHARDED-OK", len(jax.devices()))
""")


@pytest.mark.slow  # a process with 4 fake devices (10 s)
def test_sharded_on_four_fake_devices_matches_single():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", SHARD_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "SHARDED-OK 4" in res.stdout


# ---------------------------------------------------------------- bad input

@pytest.fixture
def small():
    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    X[:, 4] = 2.0  # a constant feature
    p = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5)), jnp.float32)
    return (lambda p, x: jnp.tanh(p @ x)), p, input_stats(X, low=-5.0, high=5.0), X


def test_constant_feature_works(small):
    f, p, stats, _ = small
    out = interventional_expectation(f, stats, [2.0], params=p, features=[4], strict=True)
    ex = interventional_expectation(f, stats, [2.0], params=p, features=[4], method="exact")
    np.testing.assert_allclose(out, ex, rtol=1e-5)


@pytest.mark.parametrize("kwargs,err,match", [
    ({"features": [5]}, ValueError, "out of range"),
    ({"features": [-1]}, ValueError, "out of range"),
    ({"features": [1, 1]}, ValueError, "duplicates"),
    ({"alphas": [0.0, np.nan]}, ValueError, "NaN"),
    ({"alphas": [np.inf]}, ValueError, "NaN"),
    ({"alphas": [100.0], "strict": True}, ValueError, "outside"),
    ({"alphas": np.zeros((2, 3))}, ValueError, "shape"),
    ({"settings": {"rank": 6}}, ValueError, "rank"),
    ({"settings": {"rank": 0.0}}, ValueError, "rank"),
    ({"method": "exact", "settings": {"rank": 2}}, ValueError, "rank"),
    ({"method": "monte_carlo"}, ValueError, "data="),
    ({"method": "hutchinson"}, ValueError, "key="),
    ({"method": "gauss_newton"}, ValueError, "head="),
    ({"method": "finite_difference"}, ValueError, "float32"),
    ({"method": "newton"}, ValueError, "method"),
])
def test_bad_input(small, kwargs, err, match):
    f, p, stats, _ = small
    kwargs = {"alphas": [0.0], **kwargs}
    alphas = kwargs.pop("alphas")
    with pytest.raises(err, match=match):
        if "settings" in kwargs:  # estimator settings live on the estimator object
            kwargs["method"] = make_estimator(kwargs.pop("method", "directional"), **kwargs.pop("settings"))
        interventional_expectation(f, stats, alphas, params=p, **kwargs)


def test_outside_domain_warns(small):
    f, p, stats, _ = small
    with pytest.warns(UserWarning, match="outside"):
        interventional_expectation(f, stats, [100.0], params=p, features=[0])


@pytest.mark.filterwarnings("ignore:alphas outside")
def test_non_finite_output_reported(small):
    _, p, stats, _ = small

    def f(p, x):
        return jnp.log(x[:2] + 10.0)  # NaN when x_i < -10

    with pytest.raises(FloatingPointError, match=r"\(1, -20.0\)"):
        interventional_expectation(f, stats, [0.0, -20.0], params=p, features=[0, 1])
    out = interventional_expectation(f, stats, [0.0, -20.0], params=p, features=[0, 1], check_finite=False)
    assert np.isnan(np.asarray(out)).any()


def test_scalar_output_and_no_params():
    stats = input_stats(np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32))
    out = interventional_expectation(lambda x: jnp.sum(x ** 2), stats, [0.0, 1.0])
    assert out.shape == (3, 2, 1)
    # E[sum x^2 | do(x_i = a)] = a^2 + sum_{j != i} (mu_j^2 + Sigma_jj)
    mu, var = np.asarray(stats.mean), np.diag(np.asarray(stats.cov))
    for i in range(3):
        rest = sum(mu[j] ** 2 + var[j] for j in range(3) if j != i)
        np.testing.assert_allclose(out[i, :, 0], np.array([0.0, 1.0]) + rest, rtol=1e-5)


def test_model_width_differs_from_the_data_names_both_sizes():
    """f takes 5 features, X has 4: the error names the data's width and the model's own error
    (which names the 5), for a plain callable, a Split and an NNX model, through ace.explain and
    interventional_expectation."""
    from jcausal.ace import explain
    from jcausal.models import Split, split_functional

    W = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)), jnp.float32)
    X = np.random.default_rng(1).uniform(size=(20, 4)).astype(np.float32)
    stats = input_stats(X)
    width = r"cannot be evaluated on one row of the data \(k = 4 features; the model must take inputs of "
    split = "the first part of the Split"
    cases = [(lambda x: jnp.tanh(W @ x), None, r"the model '.*<lambda>' " + width),
             (Split(lambda x: W @ x, jnp.tanh), None, rf"the model '.*<lambda>' \({split}\) " + width),
             (*split_functional(MLP((5, 8, 3), rngs=nnx.Rngs(0))), rf"\({split}\) " + width)]
    for f, params, match in cases:
        with pytest.raises(ValueError, match=match) as info1:
            explain(f, X, params=params, num_alphas=5, max_order=2)
        with pytest.raises(ValueError, match=match) as info2:
            interventional_expectation(f, stats, intervention_grid(stats, 3), params=params, data=X)
        for info in (info1, info2):
            msg = str(info.value)
            assert "shape (4,)" in msg and "(5,)" in msg, msg  # both sizes: the data's and the model's
