import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.comparisons import completeness_gap, gradient_saliency, integrated_gradients, quadrature
from jcausal.models import MLP, functional


def prod(x):
    return x[0] * x[1]


@pytest.mark.parametrize("x,expected", [([3.0, 5.0], [3.5, 7.5]), ([3.0, 100.0], [51.0, 245.0])])
def test_ig_product_closed_form(x, expected):
    base = jnp.array([2.0, 2.0])
    ig = integrated_gradients(prod, jnp.array(x), base, steps=2000, rule="trapezoid")
    np.testing.assert_allclose(ig[0], expected, atol=0.01)
    # the paper's left Riemann sums (3.4985/7.4985, 50.951/244.951) are within 0.05
    left = integrated_gradients(prod, jnp.array(x), base, steps=1000, rule="left")
    np.testing.assert_allclose(left[0], expected, atol=0.05)
    paper = {3.5: 3.4985, 7.5: 7.4985, 51.0: 50.951, 245.0: 244.951}
    np.testing.assert_allclose(left[0], [paper[e] for e in expected], atol=0.05)


@pytest.mark.parametrize("rule", ["left", "right", "midpoint", "trapezoid"])
def test_quadrature_integrates_polynomials(rule):
    t, w = quadrature(400, rule, jnp.float32)
    assert abs(float(jnp.sum(w)) - 1.0) < 1e-6
    assert abs(float(jnp.sum(w * t**2)) - 1 / 3) < 3e-3


def test_completeness_on_small_mlp_all_outputs_and_vmap():
    apply, params = functional(MLP((6, 16, 3), activation="tanh", rngs=nnx.Rngs(0)))
    X = jax.random.normal(jax.random.key(0), (5, 6))
    ig = jax.vmap(lambda x: integrated_gradients(apply, x, params=params, steps=256))(X)
    assert ig.shape == (5, 3, 6)
    gaps = jax.vmap(lambda x, a: completeness_gap(apply, x, a, params=params))(X, ig)
    assert float(jnp.max(jnp.abs(gaps))) <= 1e-3
    g = gradient_saliency(apply, X[0], params=params)
    np.testing.assert_allclose(g, jax.jacrev(lambda x: apply(params, x))(X[0]), rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rule"):
        quadrature(10, "simpson")
    with pytest.raises(ValueError, match="shape"):
        integrated_gradients(prod, jnp.ones(2), jnp.ones(3))
