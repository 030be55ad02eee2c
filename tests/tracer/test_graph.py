"""Causal graph: synthetic models with known structure, contributions against a closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.tracer.explain import trace
from jcausal.tracer.graph import causal_graph, layer_groups, merge_cka, node_contribution


class Identity(nnx.Module):
    def __call__(self, x):
        return x


class Scale(nnx.Module):
    def __init__(self, s):
        self.s = s

    def __call__(self, x):
        return self.s * x


class Rotate(nnx.Module):
    def __init__(self, seed, p):
        q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(p, p)))
        self.q = nnx.Param(jnp.asarray(q, jnp.float32))

    def __call__(self, x):
        return x @ self.q[...]


class Wiggle(nnx.Module):
    def __call__(self, x):
        return jnp.sin(25.0 * x) + 0.2 * jnp.cos(40.0 * x[::-1])


class Blocks(nnx.Module):
    """Block A (linear, scaled, rotated: one representation), a strong nonlinearity starting block B
    (three equivalent layers), then a layer that re-reads block A's output (a skip)."""

    def __init__(self, rngs):
        self.a1 = nnx.Linear(6, 6, rngs=rngs)
        self.a2 = Scale(3.0)
        self.a3 = Rotate(0, 6)
        self.b1 = Wiggle()
        self.b2 = Scale(-2.0)
        self.b3 = Rotate(1, 6)
        self.c = Scale(0.5)
        self.head = nnx.Linear(12, 3, rngs=rngs)

    def __call__(self, x):
        a = self.a3(self.a2(self.a1(x)))
        b = self.b3(self.b2(self.b1(a)))
        return self.head(jnp.concatenate([b, self.c(a)]))


def test_blocks_give_expected_groups_and_links():
    m = Blocks(nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=6), jnp.float32)
    ex = trace(m, x, layers=["a*", "b*", "c"], baseline_kind="constant", value=3.0, eps=0.05)
    g = ex.graph
    assert g.layer_names == ("a1", "a2", "a3", "b1", "b2", "b3", "c")
    assert g.node_names() == [["a1", "a2", "a3"], ["b1", "b2", "b3"], ["c"]]
    assert g.links == ((0, 1), (0, 2), (1, 2))  # (0, 2): c is block A's representation again
    assert g.cka[2, 3] < 0.9  # the nonlinearity really separates the blocks
    d = g.to_dict()
    assert d["groups"][0] == ["a1", "a2", "a3"] and d["links"] == [[0, 1], [0, 2], [1, 2]]
    assert len(ex.contributions) == 3 and all(c.features.shape == (6,) for c in ex.contributions)


def test_identity_layers_one_group():
    class Ids(nnx.Module):
        def __init__(self):
            self.layers = nnx.List([Identity() for _ in range(4)])
            self.head = Scale(1.0)

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return self.head(x)

    ex = trace(Ids(), jnp.arange(1.0, 6.0, dtype=jnp.float32), eps=0.0)
    assert ex.graph.num_nodes == 1 and ex.graph.links == ()
    assert ex.graph.node_names() == [["layers.0", "layers.1", "layers.2", "layers.3", "head"]]


def test_groups_need_mutual_merging():
    cka = np.array([[1, .97, .90], [.97, 1, .97], [.90, .97, 1]])
    assert layer_groups(merge_cka(cka, 0.05)) == ((0, 1), (2,))
    assert layer_groups(merge_cka(cka, 0.2)) == ((0, 1, 2),)


def test_contributions_closed_form_linear_node():
    # a dense node with units u = W x (x in R^4, single-feature zero interventions):
    # delta_{k,u} = W[u, k] x_k; an output drop Delta_k = 2 * delta_{k,0} is explained by unit 0 alone.
    rng = np.random.default_rng(3)
    W = rng.normal(size=(5, 4))
    x = rng.normal(size=4)
    Xs = np.concatenate([x[None], x[None] * (1 - np.eye(4))])
    acts = Xs @ W.T
    delta_out = 2.0 * (acts[0, 0] - acts[1:, 0])
    nc = node_contribution(0, "d", jnp.asarray(acts, jnp.float32), delta_out, np.eye(4, dtype=bool), top=1)
    assert nc.units == (0,)
    np.testing.assert_allclose(nc.slopes[0], 2.0, rtol=1e-4)
    np.testing.assert_allclose(nc.features, 2.0 * W[0] * x, rtol=1e-4, atol=1e-5)


def test_bad_eps_and_shapes():
    with pytest.raises(ValueError, match="eps"):
        causal_graph(np.eye(2), ["a", "b"], eps=1.0)
    with pytest.raises(ValueError, match="eps"):
        merge_cka(np.eye(2), -0.1)
    with pytest.raises(ValueError, match="layer names"):
        causal_graph(np.eye(2), ["a"])


class Log(nnx.Module):
    def __call__(self, x):
        return jnp.log(x)


class LogNet(nnx.Module):
    """``head(log(a(x)))``: NaN wherever ``a(x)`` has a negative entry."""

    def __init__(self):
        self.a = Scale(1.0)
        self.b = Log()
        self.head = Rotate(2, 4)

    def __call__(self, x):
        return self.head(self.b(self.a(x)))


def test_nonfinite_input_and_baseline_are_refused():
    """An all-NaN input returned a graph; a NaN baseline value too."""
    m = Blocks(nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"^the input x holds NaN/inf: 6 non-finite entries of 6"):
        trace(m, jnp.full((6,), jnp.nan, jnp.float32))
    x = jnp.asarray(np.random.default_rng(0).normal(size=6), jnp.float32)
    x_inf = x.at[2].set(jnp.inf)
    with pytest.raises(ValueError, match=r"^the input x holds NaN/inf: 1 non-finite entry of 6"):
        trace(m, x_inf)
    with pytest.raises(ValueError, match=r"^the baseline value \(baseline_kind='constant'\) holds NaN/inf"):
        trace(m, x, value=float("nan"))
    with pytest.raises(ValueError, match=r"^the baseline value \(baseline_kind='values'\) holds NaN/inf: "
                                         r"1 non-finite entry of 6"):
        trace(m, x, baseline_kind="values", value=np.where(np.arange(6) == 4, np.inf, 0.0))


def test_nonfinite_activations_name_the_first_layer_and_where():
    m = LogNet()
    pos = jnp.asarray([1.0, 2.0, 3.0, 4.0], jnp.float32)
    with pytest.raises(ValueError, match=r"^layer 'b' is NaN/inf under 4 of the 4 interventions"):
        trace(m, pos, value=-1.0)  # log of the negative baseline
    neg = pos.at[0].set(-1.0)
    with pytest.raises(ValueError, match=r"^layer 'b' is NaN/inf at the input x and under 3 of the 4 "):
        trace(m, neg, value=1.0)  # only the intervention on feature 0 removes the negative entry
    ex = trace(m, pos, value=0.5)  # finite everywhere: the same model is explained
    assert np.all(np.isfinite(ex.graph.cka)) and ex.graph.layer_names == ("a", "b", "head")


def test_graph_and_contributions_refuse_nonfinite_values():
    """A NaN CKA entry never merged (layers split silently); NaN activations or output drops gave
    NaN slopes and units ranked by NaN."""
    cka = np.array([[1.0, 0.99, 0.2], [0.99, 1.0, np.nan], [0.2, np.nan, 1.0]])
    with pytest.raises(ValueError, match=r"^the CKA matrix holds NaN/inf: 2 non-finite entries in 2 of its"):
        causal_graph(cka, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"^the CKA matrix holds NaN/inf"):
        merge_cka(cka, 0.05)
    rng = np.random.default_rng(0)
    acts, delta, mask = rng.normal(size=(5, 3)), rng.normal(size=4), np.eye(4, dtype=bool)
    bad = acts.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"^the activations of layer 'dense' holds NaN/inf: 1 non-finite "
                                         r"entry in 1 of its 5 inputs"):
        node_contribution(0, "dense", bad, delta, mask)
    with pytest.raises(ValueError, match=r"^delta_out holds NaN/inf: 1 non-finite entry in 1 of its 4 "):
        node_contribution(0, "dense", acts, np.where(np.arange(4) == 1, np.nan, delta), mask)
    assert np.all(np.isfinite(node_contribution(0, "dense", acts, delta, mask).features))


def test_global_view_and_faithfulness_refuse_nonfinite_inputs():
    import jax

    from jcausal.tracer import deletion_insertion, feature_changes, global_view

    class Img(nnx.Module):  # an 8 x 8 image model: Blocks on its first 6 pixels
        def __init__(self):
            self.net = Blocks(nnx.Rngs(0))

        def __call__(self, x):
            return self.net(x.reshape(-1)[:6])

    X = np.random.default_rng(1).uniform(size=(6, 8, 8)).astype(np.float32)
    X[2, 3, 3] = np.nan
    kw = dict(per_class=None, patch=4, chunk=2, progress=False)
    with pytest.raises(ValueError, match=r"^X holds NaN/inf: 1 non-finite entry in 1 of its 6 images"):
        global_view(Img(), X, **kw)
    with pytest.raises(ValueError, match=r"^the baseline value holds NaN/inf"):
        global_view(Img(), np.nan_to_num(X), value=np.inf, **kw)
    assert len(global_view(Img(), np.nan_to_num(X), **kw).graphs) == 6
    x = jnp.asarray(X[0].reshape(-1))
    sal = np.arange(64.0)
    sal[5] = np.nan

    def prob(v):
        return jax.nn.softmax(jnp.stack([jnp.sum(v), -jnp.sum(v)]))

    with pytest.raises(ValueError, match=r"^saliency holds NaN/inf: 1 non-finite entry of 64"):
        deletion_insertion(prob, x, jnp.asarray(sal), 0)
    with pytest.raises(ValueError, match=r"^the input x holds NaN/inf: 1 non-finite entry of 64"):
        deletion_insertion(prob, jnp.asarray(X[2].reshape(-1)), jnp.arange(64.0), 0)
    # under vmap the values are unknown: no check, the curves as before
    curves = jax.vmap(lambda s: deletion_insertion(prob, x, s, 0).deletion_auc)(jnp.ones((2, 64)))
    assert np.all(np.isfinite(np.asarray(curves)))
    with pytest.raises(ValueError, match=r"^counterfactual holds NaN/inf: 1 non-finite entry of 3"):
        feature_changes(np.zeros(3), np.array([0.0, np.nan, 1.0]))


def test_trace_softmaxes_logits_once_and_probabilities_never():
    """An NNX module that returns probabilities (its own softmax) is read as it is: TracerResult.probs
    equals the model's output; one that returns logits gets one softmax."""
    body = nnx.Sequential(nnx.Linear(4, 3, rngs=nnx.Rngs(0)), nnx.tanh, nnx.Linear(3, 3, rngs=nnx.Rngs(1)))
    x = jnp.arange(1.0, 5.0, dtype=jnp.float32) / 4
    logits = np.asarray(body(x))
    np.testing.assert_allclose(trace(body, x).probs, np.asarray(jax.nn.softmax(logits)), atol=1e-6)
    probs_model = nnx.Sequential(body, jax.nn.softmax)
    np.testing.assert_allclose(trace(probs_model, x).probs, np.asarray(jax.nn.softmax(logits)), atol=1e-6)
