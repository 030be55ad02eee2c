"""Layer capture with nnx.capture: order, values, filter, randomness detection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.models import MLP, AlexNetSmall
from jcausal.tracer.activations import activations, detect_randomness, layer_outputs


class Reversed(nnx.Module):
    """Attributes declared in the opposite order of execution: order must come from the program."""

    def __init__(self, rngs):
        self.last = nnx.Linear(4, 2, rngs=rngs)
        self.first = nnx.Linear(3, 4, rngs=rngs)
        self.noise = nnx.Dropout(0.5)

    def __call__(self, x, *, key=None):
        h = jnp.tanh(self.first(x))
        h = self.noise(h, deterministic=key is None, rngs=key)
        return self.last(h)


def test_alexnet_layers_match_model_own_activations():
    m = AlexNetSmall(10, rngs=nnx.Rngs(0))
    X = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
    acts = activations(m, X, layers=["convs.*", "fcs.*"], batch_size=2)  # padded last chunk
    assert acts.names == ("convs.0", "convs.1", "convs.2", "convs.3", "convs.4", "fcs.0", "fcs.1", "fcs.2")
    for i in range(3):
        out, own = m(X[i], return_activations=True)
        np.testing.assert_allclose(np.asarray(acts.output[i]), np.asarray(out), atol=1e-5)
        for a, b in zip(acts.values[:7], own[:7]):  # captured = pre-activation; the model's = ReLU
            np.testing.assert_allclose(np.asarray(jax.nn.relu(a[i])).reshape(-1), np.asarray(b).reshape(-1),
                                       atol=1e-5)
        np.testing.assert_allclose(np.asarray(acts.values[7][i]), np.asarray(own[7]), atol=1e-5)


def test_execution_order_and_randomness_sources():
    m = Reversed(nnx.Rngs(0))
    lo = layer_outputs(m, jnp.ones(3))
    assert lo.names == ("first", "noise", "last")
    rep = detect_randomness(m, jnp.ones(3), jax.random.key(1), jax.random.key(2))
    assert rep.varying == ("noise", "last") and rep.sources == ("noise",)
    assert rep.max_abs_diff["first"] == 0.0
    mlp = MLP((4, 6, 6, 3), dropout=0.5, rngs=nnx.Rngs(1))
    rep = detect_randomness(mlp, jnp.ones(4), jax.random.key(1), jax.random.key(2))
    assert rep.sources == ("dropout#0", "dropout#1")  # both dropout calls, not the dense layers
    assert "layers.2" in rep.varying and "layers.0" not in rep.varying
    det = MLP((4, 6, 3), rngs=nnx.Rngs(1))  # dropout 0: nothing varies
    assert detect_randomness(det, jnp.ones(4), jax.random.key(1), jax.random.key(2)).varying == ()


def test_layers_filter_errors():
    m = MLP((4, 6, 3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="selects no layer"):
        layer_outputs(m, jnp.ones(4), layers=["conv*"])
    with pytest.raises(ValueError, match="not a layer"):
        layer_outputs(m, jnp.ones(4), layers=["layers.7"])
    lo = layer_outputs(m, jnp.ones(4), layers=lambda n: n.startswith("layers"))
    assert lo.names == ("layers.0", "layers.1") and lo.shapes == ((6,), (3,))


def test_no_recompile_for_new_inputs_and_exogenous_in_graph():
    from jcausal.tracer.activations import _batched
    from jcausal.tracer.explain import trace

    m = MLP((4, 6, 3), dropout=0.5, rngs=nnx.Rngs(0))
    lo = layer_outputs(m, jnp.ones(4))
    activations(lo, jnp.ones((5, 4)), batch_size=5)
    before = _batched._cache_size()
    activations(lo, jnp.zeros((5, 4)), batch_size=5)
    assert _batched._cache_size() == before
    keys = (jax.random.key(0), jax.random.key(1))
    ex = trace(m, jnp.arange(1.0, 5.0, dtype=jnp.float32), randomness_keys=keys)
    assert ex.graph.exogenous == ("dropout",) and ex.graph.to_dict()["exogenous"] == ["dropout"]


def test_nonfinite_inputs_are_refused():
    """NaN inputs gave NaN layer outputs silently; in detect_randomness NaN != NaN made every layer
    look random."""
    m = MLP((4, 6, 3), dropout=0.5, rngs=nnx.Rngs(0))
    X = np.ones((5, 4), np.float32)
    X[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"^X holds NaN/inf: 1 non-finite entry in 1 of its 5 examples"):
        activations(m, X)
    keys = (jax.random.key(0), jax.random.key(1))
    with pytest.raises(ValueError, match=r"^the input x holds NaN/inf: 1 non-finite entry of 4"):
        detect_randomness(m, X[1], *keys)
    assert detect_randomness(m, X[0], *keys).sources == ("dropout",)
