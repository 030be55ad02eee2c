"""A library call never returns a result computed from a model state that no longer holds
(issue 21, item 2): closures, globals and NNX modules changed between two calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.ace import explain, input_stats, interventional_expectation
from jcausal.ace.latent import traversals
from jcausal.ace.recurrent import lag_tau
from jcausal.gce import factor_flows
from jcausal.models import MLP, functional, predict

RNG = np.random.default_rng(0)
X = RNG.normal(size=(120, 4)).astype(np.float32)
W0 = jnp.asarray(RNG.normal(size=(4, 3)), jnp.float32)
STATS = input_stats(X)
ALPHAS = [-1.0, 0.0, 1.0]


def reference(W):
    """Eqn 2 written out in NumPy: mean over rows of softmax(x W) with x_i = a."""
    out = np.zeros((4, len(ALPHAS), 3))
    for i in range(4):
        for j, a in enumerate(ALPHAS):
            Xa = X.astype(np.float64).copy()
            Xa[:, i] = a
            z = Xa @ np.asarray(W, np.float64)
            p = np.exp(z - z.max(1, keepdims=True))
            out[i, j] = (p / p.sum(1, keepdims=True)).mean(0)
    return out


def test_closure_change_gives_the_new_answer():
    W = W0
    f = lambda x: jax.nn.softmax(x @ W)  # noqa: E731 - the probe's model: a closure
    E1 = interventional_expectation(f, STATS, ALPHAS, data=X)
    W = 5 * W0
    E2 = interventional_expectation(f, STATS, ALPHAS, data=X)
    np.testing.assert_allclose(E1, reference(W0), atol=2e-6)
    np.testing.assert_allclose(E2, reference(5 * W0), atol=2e-6)
    assert float(jnp.max(jnp.abs(E2 - E1))) > 0.05


GLOBAL_W = {"w": W0}


def _global_model(x):
    return jax.nn.softmax(x @ GLOBAL_W["w"])


def test_global_change_gives_the_new_answer_with_explain_and_every_method():
    r1 = explain(_global_model, X, num_alphas=6, max_order=2)
    GLOBAL_W["w"] = -3 * W0
    try:
        r2 = explain(_global_model, X, num_alphas=6, max_order=2)
        alphas = np.asarray(r2.alphas)
        ref = np.stack([reference_at(-3 * W0, i, alphas[i]) for i in range(4)])
        np.testing.assert_allclose(r2.expectations, ref, atol=2e-6)
        assert float(jnp.max(jnp.abs(r2.expectations - r1.expectations))) > 0.05
        # eqn 4: the Hessian of the changed model, not the old one
        d1 = interventional_expectation(_global_model, STATS, ALPHAS, method="directional")
        GLOBAL_W["w"] = W0
        d0 = interventional_expectation(_global_model, STATS, ALPHAS, method="directional")
        ex = interventional_expectation(_global_model, STATS, ALPHAS, method="exact")
        np.testing.assert_allclose(d0, ex, atol=1e-5)
        assert float(jnp.max(jnp.abs(d1 - d0))) > 0.05
    finally:
        GLOBAL_W["w"] = W0


def reference_at(W, i, alphas):
    out = []
    for a in alphas:
        Xa = X.astype(np.float64).copy()
        Xa[:, i] = a
        z = Xa @ np.asarray(W, np.float64)
        p = np.exp(z - z.max(1, keepdims=True))
        out.append((p / p.sum(1, keepdims=True)).mean(0))
    return np.stack(out)


def test_nnx_module_trained_in_place_gives_the_new_answer():
    model = MLP((4, 8, 3), rngs=nnx.Rngs(0))
    f = lambda x: jax.nn.softmax(model(x))  # noqa: E731 - closes over the module
    E1 = interventional_expectation(f, STATS, ALPHAS, data=X)
    model.layers[0].kernel[...] = model.layers[0].kernel[...] * 3.0  # "trained" in place
    E2 = interventional_expectation(f, STATS, ALPHAS, data=X)
    apply, params = functional(model)
    ref = interventional_expectation(lambda p, x: jax.nn.softmax(apply(p, x)), STATS, ALPHAS, params=params,
                                     data=X)
    np.testing.assert_allclose(E2, ref, atol=1e-6)
    assert float(jnp.max(jnp.abs(E2 - E1))) > 1e-3


def test_repeated_call_of_a_fresh_lambda_compiles_once():
    from jcausal.ace import interventional as I

    W = W0
    interventional_expectation(lambda x: jax.nn.softmax(x @ W), STATS, ALPHAS, data=X)
    size = I._run_features._cache_size()
    W = 2 * W0
    E = interventional_expectation(lambda x: jax.nn.softmax(x @ W), STATS, ALPHAS, data=X)
    assert I._run_features._cache_size() == size
    np.testing.assert_allclose(E, reference(2 * W0), atol=2e-6)


def test_latent_traversals_and_lag_tau_and_predict_read_the_current_state():
    D = jnp.asarray(RNG.normal(size=(5, 3)), jnp.float32)
    dec = lambda u: D @ u  # noqa: E731
    t1 = traversals(dec, num_latents=1, num_classes=2, label=0, alphas=[1.0])
    D = 2 * D
    t2 = traversals(dec, num_latents=1, num_classes=2, label=0, alphas=[1.0])
    np.testing.assert_allclose(t2, 2 * t1, rtol=1e-6)

    c = jnp.float32(0.0)
    f = lambda x: x[-1] + c * x[-2]  # noqa: E731
    S = RNG.normal(size=(6, 4, 1)).astype(np.float32)
    assert float(lag_tau(f, S, t=3).tau) == 0.0
    c = jnp.float32(0.5)
    assert float(lag_tau(f, S, t=3).tau) == 1.0

    A = jnp.eye(2)
    g = lambda p, x: A @ x  # noqa: E731
    y1 = predict(g, None, jnp.ones((3, 2)))
    A = 3 * jnp.eye(2)
    np.testing.assert_allclose(predict(g, None, jnp.ones((3, 2))), 3 * y1)


def test_gce_factor_flows_read_the_current_classifier():
    a = jnp.asarray([4.0, 0.0], jnp.float32)

    def classify(x):
        p1 = jax.nn.sigmoid(a @ x)
        return jnp.stack([1 - p1, p1])

    decode = lambda z: z  # noqa: E731
    f1 = np.asarray(factor_flows(decode, classify, jax.random.key(0), K=1, L=1, n_outer=64, n_inner=64))
    a = jnp.asarray([0.0, 4.0], jnp.float32)  # now the second latent drives the classifier
    f2 = np.asarray(factor_flows(decode, classify, jax.random.key(0), K=1, L=1, n_outer=64, n_inner=64))
    assert f1[0] > 10 * f1[1] and f2[1] > 10 * f2[0]


def test_keras_model_trained_in_between():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("keras is not on the JAX backend")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    def f(x):  # Keras relies on NumPy's implicit rank and dtype promotion (the suite makes them strict)
        with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
            return model(x[None])[0]

    E1 = interventional_expectation(f, STATS, ALPHAS, data=X)
    k = model.layers[0].kernel
    k.assign(k.value * 4.0)
    E2 = interventional_expectation(f, STATS, ALPHAS, data=X)
    W, b = (np.asarray(v) for v in model.layers[0].get_weights())
    ref = interventional_expectation(lambda x: jax.nn.softmax(x @ W + b), STATS, ALPHAS, data=X)
    np.testing.assert_allclose(E2, ref, atol=1e-6)
    assert float(jnp.max(jnp.abs(E2 - E1))) > 1e-3
