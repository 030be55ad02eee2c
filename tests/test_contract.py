"""One model contract: the same wrapped classifier of each framework goes through every method.

For Flax NNX and Linen, Equinox, Keras 3 and PyTorch, ONE ``jcausal.wrap`` of a small MLP
classifier (logits; every framework holds the same trained weights) is given to ACE's ``explain``,
Integrated Gradients, GCE's ``information_flow``, TRACER's ``trace`` and TRACER's
``counterfactuals`` (with ``immutable=`` and ``ranges=``). Each number is checked against the
network written by hand (``tests/frameworks.py``), and the counterfactuals must be valid for at
least 95% of 50 inputs with the constraints held exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jcausal
from jcausal.ace import explain
from jcausal.comparisons import integrated_gradients
from jcausal.gce import information_flow, mutual_information
from jcausal.models import Loop
from jcausal.tracer import CounterfactualGAN, counterfactuals, model_labels, nn_index, trace, train_gan
from tests.frameworks import FRAMEWORKS, HID, K_MLP, OUT, build, mlp_ref, set_mlp_weights

N_TRAIN, N_CF, GAN_STEPS = 300, 50, 300


def _softmax_ref(ref):
    return lambda p, x: jax.nn.softmax(ref(p, x))


@pytest.fixture(scope="module")
def task():
    """Three Gaussian classes in 6-D, the MLP of tests/frameworks.py trained on them (optax on the
    hand-written network: the weights every framework then holds), its labels, the nearest-neighbour
    index and ONE tabular counterfactual GAN: every framework computes the same function, so the same
    GAN serves them all."""
    import optax

    rng = np.random.default_rng(4)
    centres = 2.0 * rng.normal(size=(OUT, K_MLP))
    cls = np.arange(N_TRAIN) % OUT
    X = (centres[cls] + rng.normal(size=(N_TRAIN, K_MLP))).astype(np.float32)
    P = {"W1": 0.3 * rng.normal(size=(K_MLP, HID)), "b1": np.full(HID, 0.1),
         "W2": 0.3 * rng.normal(size=(HID, OUT)), "b2": np.zeros(OUT)}
    P = {k: jnp.asarray(v, jnp.float32) for k, v in P.items()}
    tx = optax.adam(3e-2)
    labels = jnp.asarray(cls, jnp.int32)

    def loss(p):
        logits = jax.vmap(lambda x: mlp_ref(p, x))(X)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s)
        return optax.apply_updates(p, u), s

    with jax.numpy_dtype_promotion("standard"):  # optax's step counter meets float hyperparameters
        state = tx.init(P)
        for _ in range(300):
            P, state = step(P, state)
    y = np.asarray(jax.vmap(lambda x: mlp_ref(P, x))(X)).argmax(1)
    assert (y == cls).mean() > 0.9 and len(np.unique(y)) == OUT
    index = nn_index(X, y, OUT)
    gan = CounterfactualGAN(OUT, input_shape=(K_MLP,), kind="tabular", latent=4, rngs=nnx.Rngs(0))
    train_gan(gan, X, y, key=jax.random.key(1), steps=GAN_STEPS, lam=0.9, batch_size=64, index=index,
              loop=Loop(progress=False))
    return X, P, y, index, gan


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_every_method_takes_the_same_wrapped_classifier(fw, task):
    X, P, y_ref, index, gan = task
    model, ex, kw, ref, _, names = build(fw, "mlp")
    model, kw = set_mlp_weights(fw, model, kw, P)
    w = jcausal.wrap(model, ex, **kw)
    assert w.output == "raw"
    rng = np.random.default_rng(5)

    # ACE (eqn 2 through the wrapped model's split) against the hand-written network
    feats, alphas = [0, 3, 5], np.linspace(-1.5, 1.5, 5).astype(np.float32)
    got = explain(w, X[:64], features=feats, alphas=alphas, max_order=2)
    want = explain(ref, X[:64], params=P, features=feats, alphas=alphas, max_order=2)
    np.testing.assert_allclose(got.expectations, want.expectations, atol=1e-5, rtol=0)

    # Integrated Gradients from another row
    ig = np.asarray(integrated_gradients(w, X[0], X[1]))
    np.testing.assert_allclose(ig, np.asarray(integrated_gradients(ref, X[0], X[1], params=P)), atol=1e-5)

    # GCE: the wrapped classifier gives logits; information_flow applies its softmax once
    D = jnp.asarray(rng.normal(size=(2, K_MLP)), jnp.float32)

    def decode(d, z):
        return 3.0 * jnp.tanh(z @ d)

    key = jax.random.key(0)
    flow = information_flow(decode, w, key, K=1, L=1, n_alpha=16, n_beta=8, params=(D, None))
    want_flow = information_flow(decode, _softmax_ref(ref), key, K=1, L=1, n_alpha=16, n_beta=8,
                                 params=(D, P))
    assert float(want_flow) > 1e-3
    np.testing.assert_allclose(float(flow), float(want_flow), atol=1e-5)

    # TRACER's local analysis: the model's own probabilities (one softmax), every layer's node
    t = trace(w, X[0])
    np.testing.assert_allclose(t.probs, np.asarray(jax.nn.softmax(ref(P, X[0]))), atol=1e-5)
    assert t.graph.layer_names == names  # every layer, named as the framework names it
    assert [i for g in t.graph.groups for i in g] == list(range(len(names)))  # a partition, in order
    assert all(np.all(np.isfinite(c.features)) for c in t.contributions)

    # TRACER's counterfactuals with an immutable feature and a range, on the wrapped model
    y, _ = model_labels(w, X)
    np.testing.assert_array_equal(y, y_ref)
    xs, pred = X[:N_CF], y[:N_CF]
    targets = (pred + 1) % OUT
    r = counterfactuals(gan, w, xs, targets, index, x_train=X, immutable=[0], ranges={1: (-2.0, 2.0)},
                        on_unreachable="keep")
    assert r.valid.mean() >= 0.95, (fw, r.valid.mean())
    np.testing.assert_array_equal(r.counterfactuals[:, 0], xs[:, 0])  # immutable: bit for bit
    changed = r.counterfactuals[:, 1] != xs[:, 1]
    assert np.all((r.counterfactuals[changed, 1] >= -2.0) & (r.counterfactuals[changed, 1] <= 2.0))
    # validity as the hand-written network sees it
    probs = np.asarray(jax.vmap(lambda x: jax.nn.softmax(ref(P, x)))(jnp.asarray(r.counterfactuals)))
    np.testing.assert_array_equal(probs.argmax(1) == targets, r.valid)

    # the same classifier with its softmax inside: its output is probabilities, never softmaxed again
    wp = jcausal.wrap(model, ex, head=jax.nn.softmax, **kw)
    assert wp.output == "probabilities"
    np.testing.assert_allclose(trace(wp, X[0]).probs, t.probs, atol=1e-5)
    np.testing.assert_array_equal(model_labels(wp, X)[0], y_ref)
    for clf in (w, wp):
        got = information_flow(decode, clf, key, K=1, L=1, n_alpha=16, n_beta=8, params=(D, None))
        np.testing.assert_allclose(float(got), float(want_flow), atol=1e-5)
        mi = mutual_information(decode, clf, key, dim=2, factors=[0], n_outer=16, n_inner=8, params=(D, None))
        np.testing.assert_allclose(float(mi), float(want_flow), atol=1e-5)  # the joint flow at K = 1
    if fw == "nnx":  # the decoding reads log-probabilities the same way whatever the framework
        rp = counterfactuals(gan, wp, xs, targets, index, x_train=X, immutable=[0], ranges={1: (-2.0, 2.0)},
                             on_unreachable="keep")
        assert rp.valid.mean() >= 0.95, (fw, rp.valid.mean())
        np.testing.assert_array_equal(rp.counterfactuals[:, 0], xs[:, 0])
