import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.models import (
    GCECNN,
    MLP,
    AlexNetSmall,
    OneStepPredictor,
    SequenceClassifier,
    functional,
)

CASES = [
    ("mlp", lambda: MLP((4, 8, 3), rngs=nnx.Rngs(0)), (4,), (3,)),
    ("mlp_tanh", lambda: MLP((784, 32, 10), activation="tanh", rngs=nnx.Rngs(0)), (784,), (10,)),
    ("gce_cnn", lambda: GCECNN(2, rngs=nnx.Rngs(0)), (28, 28), (2,)),
    ("gce_cnn_flat", lambda: GCECNN(3, rngs=nnx.Rngs(0)), (784,), (3,)),
    ("alexnet", lambda: AlexNetSmall(10, rngs=nnx.Rngs(0)), (28, 28, 1), (10,)),
    ("gru_clf", lambda: SequenceClassifier(1, 4, 2, rngs=nnx.Rngs(0)), (15, 1), (2,)),
    ("lstm_clf", lambda: SequenceClassifier(2, 4, 3, cell="lstm", rngs=nnx.Rngs(0)), (15, 2), (3,)),
    ("gru_pred", lambda: OneStepPredictor(2, 4, rngs=nnx.Rngs(0)), (15, 2), (15, 2)),
    ("lstm_pred", lambda: OneStepPredictor(1, 3, cell="lstm", rngs=nnx.Rngs(0)), (9, 1), (9, 1)),
]


@pytest.mark.parametrize("name,make,in_shape,out_shape", CASES, ids=[c[0] for c in CASES])
def test_shapes_jit_vmap(name, make, in_shape, out_shape):
    apply, params = functional(make())
    x = jax.random.normal(jax.random.key(1), (3, *in_shape))
    single = jax.jit(apply)(params, x[0])
    assert single.shape == out_shape
    batched = jax.vmap(apply, in_axes=(None, 0))(params, x)
    assert batched.shape == (3, *out_shape)
    np.testing.assert_allclose(batched[0], single, rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(batched))


def test_dropout_only_with_key():
    apply, params = functional(GCECNN(2, rngs=nnx.Rngs(0)))
    x = jax.random.uniform(jax.random.key(0), (28, 28))
    np.testing.assert_array_equal(apply(params, x), apply(params, x))
    assert not np.allclose(apply(params, x, key=jax.random.key(1)), apply(params, x))


def test_sequence_classifier_ignores_padding():
    apply, params = functional(SequenceClassifier(1, 4, 2, rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(0), (15,))
    garbage = x.at[11:].set(1e3)
    np.testing.assert_array_equal(apply(params, x, 11), apply(params, garbage, 11))
    np.testing.assert_allclose(apply(params, x, 11), apply(params, x[:11]), rtol=1e-6)


def test_one_step_predictor_step_matches_call():
    model = OneStepPredictor(2, 3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (6, 2))
    carry, outs = model.init_carry(), []
    for t in range(6):
        carry, y = model.step(carry, x[t])
        outs.append(y)
    np.testing.assert_allclose(jnp.stack(outs), model(x), rtol=1e-5, atol=1e-6)


def test_pure_function_hessian():
    apply, params = functional(MLP((5, 7, 2), activation="tanh", rngs=nnx.Rngs(0)))
    H = jax.hessian(lambda x: apply(params, x))(jnp.ones(5))
    assert H.shape == (2, 5, 5)
    np.testing.assert_allclose(H, jnp.swapaxes(H, 1, 2), atol=1e-6)


def test_bad_shapes_and_names():
    with pytest.raises(ValueError, match="shape"):
        MLP((4, 3), rngs=nnx.Rngs(0))(jnp.ones(5))
    with pytest.raises(ValueError, match="activation"):
        MLP((4, 3), activation="nope", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="cell"):
        SequenceClassifier(1, 2, 2, cell="rnn", rngs=nnx.Rngs(0))
