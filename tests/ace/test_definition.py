"""Eqn 2 (the definition) made fast: the Split model's rank-one first layer against the plain mean
of f over intervened rows (an independent numpy/vmap reference), standard errors, subsampling,
estimator objects, the eqn-4 check against eqn 2, and the bad inputs of the ACE-definition issue."""

import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.ace import estimators as E
from jcausal.ace import input_stats, interventional_expectation
from jcausal.models import GCECNN, MLP, Split, functional, split_functional
from tests.conftest import REPO


def _reference(apply, params, X, feats, alphas):
    """Brute force: every (feature, alpha), every row intervened, mean of f (float64 accumulate)."""
    fx = jax.jit(jax.vmap(lambda x: apply(params, x)))
    out = []
    for i in feats:
        row = []
        for a in alphas:
            Xi = np.array(X, copy=True)
            Xi[:, i] = a
            row.append(np.asarray(fx(jnp.asarray(Xi)), np.float64).mean(0))
        out.append(row)
    return np.asarray(out)


def _mlp(dtype=jnp.float32, act="softplus"):
    return MLP((12, 16, 8, 3), activation=act, param_dtype=dtype, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("act", ["softplus", "relu"])
def test_split_mlp_equals_plain_definition_float32(act):
    X = np.random.default_rng(0).normal(size=(300, 12)).astype(np.float32)
    model = _mlp(act=act)
    apply, params = functional(model)
    split, sparams = split_functional(model)
    stats = input_stats(X)
    feats, alphas = [0, 3, 11], np.linspace(-2, 2, 5).astype(np.float32)
    fast, info = interventional_expectation(split, stats, alphas, params=sparams, features=feats,
                                            data=X, method=E.Definition(row_batch_size=64), return_info=True)
    plain = interventional_expectation(apply, stats, alphas, params=params, features=feats,
                                       data=X, method="monte_carlo")
    ref = _reference(apply, params, X, feats, alphas)
    scale = np.max(np.abs(ref))
    assert info.method == "definition" and info.eqn == 2 and info.num_rows == 300
    assert np.max(np.abs(np.asarray(fast) - ref)) <= 1e-5 * scale
    assert np.max(np.abs(np.asarray(plain) - ref)) <= 1e-5 * scale
    # standard error of E: the spread of f over rows / sqrt(n), against numpy
    fx = jax.vmap(lambda x: apply(params, x))
    Xi = X.copy()
    Xi[:, 3] = alphas[2]
    Y = np.asarray(fx(jnp.asarray(Xi)), np.float64)
    np.testing.assert_allclose(info.stderr[1, 2], Y.std(0) / np.sqrt(300), rtol=1e-3)


def test_float32_sums_match_float64():
    """Eqn 2 in float32 over 8,000 binary rows and 10 softmax outputs against float64 numpy: the
    chunk sums keep float32 accuracy (measured 4e-8; one sequential dot per 1,365-row chunk
    shifted by the first row's value gave 1e-6)."""
    rng = np.random.default_rng(0)
    n, k = 8000, 100
    X = (rng.uniform(size=(n, k)) > 0.7).astype(np.float32)
    W1, W2 = rng.normal(size=(k, 64)) * 0.5, rng.normal(size=(64, 10)) * 1.5

    def first(p, x):
        return x @ p[0]

    def rest(p, z):
        return jax.nn.softmax(jnp.maximum(z, 0) @ p[1])

    alphas = np.linspace(0, 1, 6).astype(np.float32)
    params = (jnp.asarray(W1, jnp.float32), jnp.asarray(W2, jnp.float32))
    E = np.asarray(interventional_expectation(Split(first, rest), input_stats(X), alphas, params=params,
                                              features=[0, 3], data=X), np.float64)
    ref = []
    for i in (0, 3):
        Xa = np.repeat(X.astype(np.float64)[None], len(alphas), 0)
        Xa[:, :, i] = alphas[:, None]
        logits = np.maximum(Xa @ W1, 0) @ W2
        e = np.exp(logits - logits.max(-1, keepdims=True))
        ref.append((e / e.sum(-1, keepdims=True)).mean(1))
    err = np.max(np.abs(E - np.asarray(ref)))
    assert err < 2e-7, err


@pytest.mark.slow  # a float64 CNN over all rows (13 s)
def test_split_cnn_equals_plain_definition_float64():
    with jax.enable_x64(True):
        X = np.random.default_rng(1).uniform(size=(40, 784))
        model = GCECNN(4, rngs=nnx.Rngs(0))
        state = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), nnx.state(model))
        nnx.update(model, state)
        apply, params = functional(model)
        split, sparams = split_functional(model)
        stats = input_stats(X, low=0.0, high=1.0)
        feats, alphas = [100, 406], np.array([0.0, 0.5, 1.0])
        fast = interventional_expectation(split, stats, alphas, params=sparams, features=feats, data=X,
                                          method=E.Definition(row_batch_size=30))
        ref = _reference(apply, params, X, feats, alphas)
        assert fast.dtype == jnp.float64
        assert np.max(np.abs(np.asarray(fast) - ref)) <= 1e-10 * np.max(np.abs(ref))
        # without the first-layer cache (recomputed per row chunk): the same numbers
        est = E.Definition(data=jnp.asarray(X), cache_first=False, row_batch_size=30)
        again = interventional_expectation(split, stats, alphas, params=sparams, features=feats, method=est)
        assert np.max(np.abs(np.asarray(again) - ref)) <= 1e-10 * np.max(np.abs(ref))


def test_common_rows_make_ace_differences_less_noisy():
    X = np.random.default_rng(2).normal(size=(500, 12)).astype(np.float32)
    split, params = split_functional(_mlp())
    stats = input_stats(X)
    _, info = interventional_expectation(split.then(jax.nn.softmax), stats, np.linspace(-1, 1, 7),
                                         params=params, data=X, return_info=True)
    assert info.stderr_ace.shape == info.stderr.shape == (12, 7, 3)
    # independent rows per alpha would give stderr of a difference >= stderr of E; shared rows do far better
    assert float(np.median(np.asarray(info.stderr_ace) / np.asarray(info.stderr))) < 0.5


def test_subsample_num_rows_and_target_stderr():
    X = np.random.default_rng(3).normal(size=(2000, 12)).astype(np.float32)
    split, params = split_functional(_mlp())
    stats = input_stats(X)
    full, ifull = interventional_expectation(split, stats, [0.0, 1.0], params=params, data=X,
                                             features=[0, 1], return_info=True)
    sub, isub = interventional_expectation(split, stats, [0.0, 1.0], params=params, data=X, features=[0, 1],
                                           method=E.Definition(num_rows=400, key=jax.random.key(1)),
                                           return_info=True)
    assert isub.num_rows == 400
    # a 400-row subsample of a 2000-row population: within 4 standard errors of the full mean
    assert np.all(np.abs(np.asarray(sub) - np.asarray(full)) <= 4 * np.asarray(isub.stderr) + 1e-7)
    target = float(np.max(np.asarray(ifull.stderr))) * 2.0
    _, itgt = interventional_expectation(split, stats, [0.0, 1.0], params=params, data=X, features=[0, 1],
                                         method=E.Definition(target_stderr=target, key=jax.random.key(1)),
                                         return_info=True)
    assert 256 <= itgt.num_rows < 2000
    assert float(np.max(np.asarray(itgt.stderr))) <= 1.5 * target


def test_default_method_follows_the_data():
    X = np.random.default_rng(4).normal(size=(100, 12)).astype(np.float32)
    apply, params = functional(_mlp())
    stats = input_stats(X)
    _, i1 = interventional_expectation(apply, stats, [0.0], params=params, data=X, return_info=True)
    _, i2 = interventional_expectation(apply, stats, [0.0], params=params, return_info=True)
    assert (i1.method, i2.method) == ("definition", "directional")


def test_expansion_checked_against_definition_and_warns():
    # a saturated model: far from quadratic over the data's spread
    rng = np.random.default_rng(5)
    X = rng.uniform(-3, 3, size=(400, 4)).astype(np.float32)
    W = jnp.asarray(rng.normal(size=(3, 4)) * 3.0, jnp.float32)

    def probs(W, x):
        return jax.nn.softmax(W @ x)

    stats = input_stats(X, low=-3.0, high=3.0)
    with pytest.warns(UserWarning) as rec:
        E4, info = interventional_expectation(probs, stats, np.linspace(-3, 3, 6), params=W, data=X,
                                              method="directional", return_info=True)
    messages = " | ".join(str(w.message) for w in rec)
    assert "off the definition" in messages and "leave [0, 1]" in messages
    E2 = interventional_expectation(probs, stats, np.linspace(-3, 3, 6), params=W, data=X)
    # the gap reported is the one measured on the whole data within subsampling noise
    gap_full = float(np.max(np.abs(np.asarray(E4) - np.asarray(E2))) / np.max(np.abs(np.asarray(E2))))
    assert info.expansion_gap > 0.1 and abs(info.expansion_gap - gap_full) <= 0.5 * gap_full
    # a quadratic model: the expansion is exact, no warning, gap ~ 0
    A = jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, iq = interventional_expectation(lambda A, x: x @ A @ x, stats, [0.0, 1.0], params=A, data=X,
                                           method="directional", return_info=True)
    assert iq.expansion_gap < 1e-4


def test_estimator_objects_and_registry():
    X = np.random.default_rng(6).normal(size=(60, 12)).astype(np.float32)
    apply, params = functional(_mlp())
    stats = input_stats(X)
    by_name = interventional_expectation(apply, stats, [0.5], params=params,
                                         method=E.make_estimator("directional", rank=5))
    by_obj = interventional_expectation(apply, stats, [0.5], params=params, method=E.Directional(rank=5))
    np.testing.assert_array_equal(by_name, by_obj)
    assert set(E.REGISTRY) == {"definition", "directional", "exact", "hutchinson", "gauss_newton",
                               "finite_difference"}
    leaves, treedef = jax.tree.flatten(E.Hutchinson(key=jax.random.key(0), num_samples=8))
    assert len(leaves) == 1  # the key is a leaf; settings are static


def test_recompile_guard_definition():
    traces = []

    def rest(p, z):
        traces.append(1)
        return jnp.tanh(p["w"] @ z)

    def first(p, x):
        return p["a"] @ x + p["b"]

    split = Split(first, rest)
    rng = np.random.default_rng(7)
    p = {"a": jnp.asarray(rng.normal(size=(5, 6)), jnp.float32), "b": jnp.zeros(5, jnp.float32),
         "w": jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)}
    X = rng.normal(size=(50, 6)).astype(np.float32)
    stats = input_stats(X)
    from jcausal.ace import interventional as I

    interventional_expectation(split, stats, [0.0, 0.5], params=p, features=[1, 2], data=X)
    n, size = len(traces), I._run_features._cache_size()
    p2 = jax.tree.map(lambda a: a * 2, p)
    interventional_expectation(split, stats, [0.1, -0.5], params=p2, features=[3, 4], data=X)
    # the model is read once per call (never a stale state); the compiled program is reused
    assert len(traces) == n + 1
    assert I._run_features._cache_size() == size


def test_max_memory_shrinks_the_batch():
    from jcausal.ace import interventional as I

    X = np.random.default_rng(8).normal(size=(64, 12)).astype(np.float32)
    apply, params = functional(_mlp())
    stats = input_stats(X)
    _, big = interventional_expectation(apply, stats, np.linspace(-1, 1, 16), params=params, method="exact",
                                        run=I.Execution(batch_size=64), return_info=True)
    need64 = I._memory_bytes(I.compiled(apply, stats, np.linspace(-1, 1, 16), params=params, method="exact",
                                        run=I.Execution(batch_size=64)))
    need8 = I._memory_bytes(I.compiled(apply, stats, np.linspace(-1, 1, 16), params=params, method="exact",
                                       run=I.Execution(batch_size=8)))
    assert need8 < need64
    _, small = interventional_expectation(apply, stats, np.linspace(-1, 1, 16), params=params, method="exact",
                                          run=I.Execution(batch_size=64, max_memory=(need8 + need64) // 2),
                                          return_info=True)
    assert big.batch_size == 64 and small.batch_size < 64


def test_closed_over_parameters_are_arguments_not_constants():
    """Closed-over parameters are read at each call and passed to the compiled program (no
    warning needed any more): the same numbers as params=, and new numbers after a change."""
    X = np.random.default_rng(9).normal(size=(30, 12)).astype(np.float32)
    apply, params = functional(_mlp())
    stats = input_stats(X)

    def f(x):
        return apply(params, x)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        closed = interventional_expectation(f, stats, [0.0, 1.0], features=[0, 3], data=X)
    explicit = interventional_expectation(apply, stats, [0.0, 1.0], params=params, features=[0, 3], data=X)
    np.testing.assert_allclose(closed, explicit, rtol=1e-6, atol=1e-7)
    params = jax.tree.map(lambda a: 2 * a, params)
    doubled = interventional_expectation(apply, stats, [0.0, 1.0], params=params, features=[0, 3], data=X)
    np.testing.assert_allclose(interventional_expectation(f, stats, [0.0, 1.0], features=[0, 3], data=X),
                               doubled, rtol=1e-6, atol=1e-7)
    assert not np.allclose(doubled, explicit)


# ---------------------------------------------------------------- bad input

def _small():
    X = np.random.default_rng(10).normal(size=(40, 5)).astype(np.float32)
    p = {"a": jnp.asarray(np.random.default_rng(1).normal(size=(4, 5)), jnp.float32)}
    return X, p, input_stats(X)


def test_split_whose_first_part_is_not_affine():
    X, p, stats = _small()
    bad = Split(lambda p, x: jnp.tanh(p["a"] @ x), lambda p, z: z[:2])
    with pytest.raises(ValueError, match="not affine"):
        interventional_expectation(bad, stats, [0.0], params=p, data=X)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_rows": 41}, "larger than"),
    ({"num_rows": 0}, "num_rows"),
    ({"target_stderr": 0.0}, "target_stderr"),
    ({"target_stderr": -1.0}, "target_stderr"),
    ({"num_rows": 5, "target_stderr": 0.1}, "not both"),
    ({"row_batch_size": 0}, "row_batch_size"),
    ({"method": "directional", "num_rows": 5}, "num_rows"),
    ({"direction_batch_size": -1, "method": "directional"}, "direction_batch_size"),
    ({"features": []}, "non-empty"),
])
def test_bad_input(kwargs, match):
    X, p, stats = _small()
    kwargs = {"data": X, **kwargs}
    if kwargs.get("method") == "directional":
        kwargs.pop("data")
    settings = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("data", "method", "features")}
    with pytest.raises(ValueError, match=match):
        if settings:  # estimator settings live on the estimator object
            kwargs["method"] = E.make_estimator(kwargs.pop("method", "definition"), **settings)
        interventional_expectation(lambda p, x: jnp.tanh(p["a"] @ x), stats, [0.0], params=p, **kwargs)


def test_rows_with_nan_and_two_d_outputs():
    X, p, stats = _small()
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        interventional_expectation(lambda p, x: jnp.tanh(p["a"] @ x), stats, [0.0], params=p, data=Xn)
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        interventional_expectation(lambda p, x: (p["a"] @ x).reshape(2, 2), stats, [0.0], params=p)


SHARD_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from flax import nnx
    from jcausal.ace import Execution, input_stats, interventional_expectation, intervention_grid
    from jcausal.models import MLP, split_functional
    assert len(jax.devices()) == 4, jax.devices()
    split, params = split_functional(MLP((12, 16, 3), activation="tanh", param_dtype=jnp.float64,
                                         rngs=nnx.Rngs(0)))
    X = np.random.default_rng(0).normal(size=(300, 12))
    stats = input_stats(X)
    alphas = intervention_grid(stats, 7, [0, 1, 2, 3, 4, 5, 6])  # 7 features over 4 devices: padding
    one = interventional_expectation(split, stats, alphas, params=params, features=list(range(7)),
                                     data=X, run=Execution(devices=jax.devices()[:1]))
    four = interventional_expectation(split, stats, alphas, params=params, features=list(range(7)), data=X)
    np.testing.assert_allclose(four, one, rtol=1e-12, atol=1e-12)
    print("SHARDED-OK", len(jax.devices()))
""")


@pytest.mark.slow  # a process with 4 fake devices (7 s)
def test_definition_sharded_on_four_fake_devices():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", SHARD_SCRIPT], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "SHARDED-OK 4" in res.stdout
