"""max_pool_2x2: nnx.max_pool's values with a cheap custom derivative."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.models.cnn import max_pool_2x2


def _ref(x):
    return nnx.max_pool(x, (2, 2), strides=(2, 2))


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (1, 9, 7, 2)])
def test_values_and_derivatives_match_reduce_window(shape):
    x = jax.random.normal(jax.random.key(0), shape)
    v = jax.random.normal(jax.random.key(1), shape)
    np.testing.assert_array_equal(max_pool_2x2(x), _ref(x))

    def loss(pool):
        return lambda y: jnp.sum(jnp.sin(pool(y)) * pool(y) ** 2)

    np.testing.assert_allclose(jax.grad(loss(max_pool_2x2))(x), jax.grad(loss(_ref))(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.jvp(loss(max_pool_2x2), (x,), (v,))[1], jax.jvp(loss(_ref), (x,), (v,))[1],
                               rtol=1e-5)

    def second(pool):
        return jax.jvp(lambda y: jax.jvp(loss(pool), (y,), (v,))[1], (x,), (v,))[1]

    np.testing.assert_allclose(second(max_pool_2x2), second(_ref), rtol=1e-5)


def test_ties_share_the_gradient():
    x = jnp.zeros((1, 2, 2, 1))
    g = jax.grad(lambda y: max_pool_2x2(y).sum())(x)
    np.testing.assert_allclose(g, np.full((1, 2, 2, 1), 0.25))
