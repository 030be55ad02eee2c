"""jcausal.wrap: one model contract for Flax NNX and Linen, Equinox, Keras (JAX) and PyTorch.

Every wrapped model is compared with the same network written by hand as ``f(params, x)`` from the
framework's weights (an independent reference: jax.numpy and lax only, no framework code).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import warnings  # noqa: E402
from functools import partial  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

import jcausal  # noqa: E402
from jcausal._src.calling import unwrap_model  # noqa: E402
from jcausal.ace import explain, input_stats, interventional_expectation  # noqa: E402
from jcausal.gce import information_flow  # noqa: E402
from jcausal.tracer import layer_outputs  # noqa: E402

eqx = pytest.importorskip("equinox")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from tests.frameworks import (  # noqa: E402
    CASES,
    FRAMEWORKS,
    K_MLP,
    OUT,
    LinenMLP,
    build,
    data,
    keras_mlp,
)


@pytest.mark.parametrize("fw,arch", CASES)
def test_ace_equals_the_hand_written_network(fw, arch):
    model, ex, kw, ref, P, names = build(fw, arch)
    w = jcausal.wrap(model, ex, **kw)
    X = data(ex)
    stats, feats, alphas = (
        input_stats(X),
        [0, X.shape[1] // 2, X.shape[1] - 1],
        jnp.asarray([-1.0, -0.2, 0.5, 1.5]),
    )
    np.testing.assert_allclose(
        np.asarray(jax.vmap(w)(X)), np.asarray(jax.vmap(partial(ref, P))(X)), atol=1e-5
    )
    assert w.split is not None, f"no split found for the {fw} {arch}"
    # explain runs interventional_expectation on the wrapped model's automatic split; the reference is
    # plain eqn 2 (every row, feature and alpha through the whole hand-written network)
    r_w = explain(w, X, features=feats, alphas=alphas, max_order=2)
    E_w = interventional_expectation(w, stats, alphas, features=feats, data=X)
    E_ref = interventional_expectation(ref, stats, alphas, params=P, features=feats, data=X)
    np.testing.assert_allclose(np.asarray(E_w), np.asarray(E_ref), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(r_w.expectations), np.asarray(E_ref), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fw,arch", CASES)
def test_layer_outputs_named_as_the_framework_names_them(fw, arch):
    model, ex, kw, ref, P, names = build(fw, arch)
    w = jcausal.wrap(model, ex, **kw)
    lo = layer_outputs(w, ex)
    assert lo.names == names
    x = data(ex)[0]
    out, vals = jax.jit(lo.apply)(lo.params, x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref(P, x)), atol=1e-5)
    np.testing.assert_allclose(np.asarray(vals[-1]), np.asarray(ref(P, x)), atol=1e-5)  # the output layer
    assert tuple(v.shape for v in vals) == lo.shapes
    only = layer_outputs(w, ex, layers=[names[0]])
    assert only.names == (names[0],)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_information_flow_takes_the_wrapped_classifier(fw):
    model, ex, kw, ref, P, _ = build(fw, "mlp")
    w = jcausal.wrap(model, ex, head=jax.nn.softmax, **kw)
    assert w.output == "probabilities"
    D = jnp.asarray(np.random.default_rng(2).normal(size=(2, K_MLP)), jnp.float32)

    def decode(d, z):
        return 3.0 * jnp.tanh(z @ d)

    key = jax.random.key(0)
    got = information_flow(decode, w, key, K=1, L=1, n_alpha=8, n_beta=8, params=(D, None))
    want = information_flow(
        decode, lambda p, x: jax.nn.softmax(ref(p, x)), key, K=1, L=1, n_alpha=8, n_beta=8, params=(D, P)
    )
    assert float(want) > 1e-3
    np.testing.assert_allclose(float(got), float(want), atol=1e-5)


def test_output_kind_detected_or_given():
    model, ex, _, ref, P, _ = build("torch", "mlp")
    assert jcausal.wrap(model, ex).output == "raw"
    assert jcausal.wrap(torch.nn.Sequential(model, torch.nn.Softmax(-1)), ex).output == "probabilities"
    assert jcausal.wrap(model, ex, output="probabilities").output == "probabilities"
    with pytest.raises(ValueError, match="output must be one of"):
        jcausal.wrap(model, ex, output="logits")


def test_plain_functions_closed_over_arrays_become_params():
    W = jnp.asarray(np.random.default_rng(3).normal(size=(K_MLP, OUT)), jnp.float32)
    x = data(np.zeros(K_MLP))[0]
    w = jcausal.wrap(lambda x: jnp.tanh(x @ W + 1.0), x)
    assert len(w.params) == 1 and w.params[0].shape == W.shape and w.split is not None
    np.testing.assert_allclose(np.asarray(w(x)), np.asarray(jnp.tanh(x @ W + 1.0)), atol=1e-6)
    w2 = jcausal.wrap(lambda p, x: p["W"].T @ x, x, params={"W": W})
    np.testing.assert_allclose(np.asarray(w2(x)), np.asarray(W.T @ x), atol=1e-6)


def _ie(w, X):
    return np.asarray(
        interventional_expectation(w, input_stats(X), jnp.asarray([-0.5, 0.5]), features=[0, 1], data=X)
    )


def test_training_after_wrapping_is_seen_by_the_next_call_and_wrap():
    """The wrapped object reads its model at every call (issue 21, item 2; issue 22): trained after
    wrapping, the SAME wrapped object gives the new answer, equal to a fresh wrap's."""
    X = data(np.zeros(K_MLP))
    y = np.arange(X.shape[0]) % OUT
    # NNX: one gradient step on the module
    m, ex, _, ref, _, _ = build("nnx", "mlp")
    w = jcausal.wrap(m, ex)
    before = _ie(w, X)
    graphdef, state = nnx.split(m)

    def loss(s):
        logits = jax.vmap(nnx.merge(graphdef, s))(jnp.asarray(X))
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.asarray(y)[:, None], axis=1))

    nnx.update(m, jax.tree.map(lambda p, g: p - 1.0 * g, state, jax.grad(loss)(state)))
    after = _ie(w, X)
    np.testing.assert_array_equal(after, _ie(jcausal.wrap(m, ex), X))
    P = dict(W1=m.fc1.kernel[...], b1=m.fc1.bias[...], W2=m.fc2.kernel[...], b2=m.fc2.bias[...])
    want = np.asarray(
        interventional_expectation(
            ref, input_stats(X), jnp.asarray([-0.5, 0.5]), params=P, features=[0, 1], data=X
        )
    )
    assert np.max(np.abs(after - before)) > 1e-3
    np.testing.assert_allclose(after, want, atol=1e-5)
    # torch: one SGD step
    m, ex, _, _, _, _ = build("torch", "mlp")
    w = jcausal.wrap(m, ex)
    before = _ie(w, X)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    torch.nn.functional.cross_entropy(m(torch.from_numpy(X)), torch.from_numpy(y)).backward()
    opt.step()
    after = _ie(w, X)
    np.testing.assert_array_equal(after, _ie(jcausal.wrap(m, ex), X))
    X0 = X.copy()
    X0[:, 0] = -0.5  # eqn 2 at (feature 0, alpha -0.5), computed by the trained torch module itself
    np.testing.assert_allclose(after[0, 0], m(torch.from_numpy(X0)).detach().numpy().mean(0), atol=1e-5)
    assert np.max(np.abs(after - before)) > 1e-3
    # Keras: one epoch of fit
    m, ex, _, _, _, _ = build("keras", "mlp")
    w = jcausal.wrap(m, ex)
    before = _ie(w, X)
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        m.compile(optimizer=keras.optimizers.SGD(1.0), loss="sparse_categorical_crossentropy")
        m.fit(X, y, epochs=1, batch_size=X.shape[0], verbose=0)
        ref0 = np.asarray(m.predict(X0, verbose=0)).mean(0)
    after = _ie(w, X)
    np.testing.assert_array_equal(after, _ie(jcausal.wrap(m, ex), X))
    assert np.max(np.abs(after - before)) > 1e-3
    np.testing.assert_allclose(after[0, 0], ref0, atol=1e-5)
    # a plain function's closed-over arrays: read again at every call
    W = jnp.asarray(np.random.default_rng(5).normal(size=(K_MLP, OUT)), jnp.float32)
    w = jcausal.wrap(lambda x: jax.nn.softmax(x @ W), jnp.asarray(X[0]))
    before = _ie(w, X)
    W = 3.0 * W
    np.testing.assert_allclose(_ie(w, X), _ie(lambda x: jax.nn.softmax(x @ W), X), atol=1e-6)
    assert np.max(np.abs(_ie(w, X) - before)) > 1e-3


# ---- bad inputs ---------------------------------------------------------------------------------


def test_refuses_what_it_cannot_wrap():
    with pytest.raises(TypeError, match="accepts a flax.nnx.Module.*torch.nn.Module"):
        jcausal.wrap(object(), np.zeros(3, np.float32))


def test_example_the_model_rejects_names_both_shapes():
    m = nnx.Linear(K_MLP, OUT, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"rejects an example of shape \(5,\).*\(6, ?3\)|\(5,\).*6"):
        jcausal.wrap(m, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"shape \(5,\); it expects inputs of shape \(None, 6\)"):
        jcausal.wrap(keras_mlp(), np.zeros(5, np.float32))


def test_output_must_be_one_array():
    with pytest.raises(TypeError, match="one array"):
        jcausal.wrap(lambda x: (x, 2 * x), np.zeros(3, np.float32))

    class Two(nnx.Module):
        def __init__(self):
            self.fc = nnx.Linear(3, 2, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.fc(x), x

    with pytest.raises(TypeError, match="returned tuple of 2 arrays"):
        jcausal.wrap(Two(), np.zeros(3, np.float32))
    w = jcausal.wrap(Two(), np.zeros(3, np.float32), head=lambda out: out[0])  # a head selects one
    assert w(np.ones(3, np.float32)).shape == (2,)


def test_call_arguments_bound_by_keyword_or_refused_by_name():
    m, ex, _, _, _, _ = build("nnx", "cnn")
    with pytest.raises(TypeError, match=r"required argument\(s\) \['deterministic'\]"):
        jcausal.wrap(m, ex)
    with pytest.raises(TypeError, match=r"takes no argument\(s\) \['train'\]"):
        jcausal.wrap(m, ex, deterministic=True, train=False)
    # issue 32: a misspelt keyword was not named, only the argument it missed
    with pytest.raises(TypeError, match=r"required argument\(s\) \['deterministic'\] .*; and it takes no "
                                        r"argument\(s\) \['determinstic'\] \(misspelt\?\)"):
        jcausal.wrap(m, ex, determinstic=True)


def test_linen_needs_its_variables():
    with pytest.raises(ValueError, match="needs its variables"):
        jcausal.wrap(LinenMLP(), np.zeros(K_MLP, np.float32))


def test_keras_on_another_backend_says_how_to_switch(monkeypatch):
    m = keras_mlp()
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax before importing keras"):
        jcausal.wrap(m, np.zeros(K_MLP, np.float32))


def test_unwrap_model_refuses_a_second_params_and_passes_others_through():
    w = jcausal.wrap(build("nnx", "mlp")[0], np.zeros(K_MLP, np.float32))
    with pytest.raises(ValueError, match="carries its parameters"):
        unwrap_model(w, {"other": 1})
    # w.params is read afresh from the module at each access: a new tree of the same arrays
    got = unwrap_model(w, w.params)[1]
    assert all(a is b for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(w.params), strict=True))
    f = lambda x: x  # noqa: E731
    assert unwrap_model(f, None) == (f, None)


def test_no_affine_prefix_means_no_split_and_one_warning():
    w = jcausal.wrap(lambda x: jnp.sin(x) * 2.0, np.zeros(3, np.float32))
    assert w.split is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert unwrap_model(w, None, split=False) == (w.apply, w.params)  # whole-model callers: no warning
    with pytest.warns(UserWarning, match="no affine first layer"):
        w.__jcausal_model__()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w.__jcausal_model__()  # said once


class _TrainingModeNet(nnx.Module):
    """Dropout and batch norm left in training mode (their defaults): the call fixes no mode."""

    def __init__(self, rngs):
        self.fc = nnx.Linear(4, 6, rngs=rngs)
        self.bn = nnx.BatchNorm(6, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.out = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(jax.nn.relu(self.bn(self.fc(x)))))


def test_nnx_model_in_training_mode_is_evaluated_in_inference_mode_with_a_warning():
    """Issue 32: dropout in training mode applied the same frozen mask to every call, and batch norm
    normalised ONE example by itself (the output was the last bias for every input). The wrapped
    model now computes what the model computes after ``.eval()``, says so, and leaves the user's
    model in its mode."""
    model = _TrainingModeNet(nnx.Rngs(0))
    X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"training mode \(bn \(BatchNorm\), drop \(Dropout\)\)"):
        w = jcausal.wrap(model, X[0])
    assert model.drop.deterministic is False and model.bn.use_running_average is False  # left as it is
    ref = nnx.clone(model)
    ref.eval()
    want = np.stack([np.asarray(ref(x[None])[0]) for x in X])
    got = np.stack([np.asarray(w(x)) for x in X])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.ptp(got, axis=0).max() > 1e-3  # the inputs are told apart (training mode: one bias for all)
    # jcausal's own models fix the mode at the call (dropout only under a key): no warning
    from jcausal.models import MLP

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jcausal.wrap(MLP((4, 6, 3), dropout=0.5, rngs=nnx.Rngs(1)), X[0])


def test_complex_integer_empty_or_nonfinite_inputs_refused_at_the_boundary():
    """Issue 32: wrap accepted a complex example (a ComplexWarning only), a zero-size batch and a
    function returning an argmax (taken as "raw"), and a model wrapped on an integer example failed
    inside XLA at its first float call; integrated_gradients returned NaN attributions for an input
    with NaN; interventional_expectation accepted complex data rows."""
    from jcausal.comparisons import integrated_gradients

    def f(x):
        return jnp.tanh(x[:3] * 2.0)

    x = np.array([0.1, -0.4, 0.3, 0.2], np.float32)
    with pytest.raises(TypeError, match="example must hold real numbers, got dtype complex64"):
        jcausal.wrap(f, x.astype(np.complex64))
    with pytest.raises(TypeError, match="example must hold real numbers, got dtype bool"):
        jcausal.wrap(f, x > 0)
    w_int = jcausal.wrap(lambda v: jnp.tanh(2.0 * v[:3].astype(jnp.float32)), x.astype(np.int32))  # ids: fine
    with pytest.raises(TypeError, match="wrapped with an integer example .* got float32"):
        w_int(x)  # ... but a float input is refused by name, not inside XLA
    with pytest.raises(ValueError, match=r"example has shape \(0, 4\), with no entries"):
        jcausal.wrap(f, np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="example holds NaN/inf: 1 non-finite entry of 4"):
        jcausal.wrap(f, np.array([0.1, np.nan, 0.3, 0.2], np.float32))
    with pytest.raises(TypeError, match="the function model returns int32 values; jcausal needs real-valued"):
        jcausal.wrap(lambda v: jnp.argmax(v).astype(jnp.int32)[None], x)
    with pytest.raises(ValueError, match="the input x holds NaN/inf: 1 non-finite entry of 4"):
        integrated_gradients(f, np.array([0.1, np.nan, 0.3, 0.2], np.float32))
    with pytest.raises(TypeError, match="the input x must hold real floating-point numbers, got dtype bool"):
        integrated_gradients(f, x > 0)
    X = np.random.default_rng(0).uniform(size=(20, 4)).astype(np.float32)
    with pytest.raises(TypeError, match="data must hold real numbers, got dtype complex64"):
        interventional_expectation(f, input_stats(X), [0.0, 0.5], data=X.astype(np.complex64))


def test_a_two_argument_function_without_params_is_told_about_params():
    """Issue 32: ``wrap(lambda p, v: ..., x)`` without ``params=`` suggested binding ``v`` by keyword."""
    with pytest.raises(TypeError, match=r"takes \(p, v, \.\.\.\) and no params= was given: a function "
                                        r"f\(params, x\) needs its parameters"):
        jcausal.wrap(lambda p, v: p * v, np.ones(3, np.float32))
