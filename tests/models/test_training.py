import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.data import load_iris, load_mnist, train_test_split
from jcausal.models import GCECNN, MLP, accuracy, functional, train


def test_iris_mlp_accuracy():
    d = load_iris()
    tr, te = train_test_split(150, test_size=30, seed=0)
    model = MLP((4, 8, 3), rngs=nnx.Rngs(0))
    res = train(model, d.X[tr], d.y[tr], key=jax.random.key(0), epochs=300, batch_size=16,
                learning_rate=1e-2, X_val=d.X[te], y_val=d.y[te], progress=False)
    apply, params = functional(model)
    acc = accuracy(apply, params, d.X[te], d.y[te])
    assert acc >= 0.93
    assert res.history["loss"][-1] < res.history["loss"][0]
    assert res.history["val_accuracy"][-1] == pytest.approx(acc)


def test_training_is_seeded():
    d = load_iris()
    outs = []
    for _ in range(2):
        model = MLP((4, 5, 3), rngs=nnx.Rngs(1))
        train(model, d.X, d.y, key=jax.random.key(7), epochs=3, progress=False)
        apply, params = functional(model)
        outs.append(apply(params, d.X[0]))
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_data_rejected(bad):
    X = np.ones((10, 4), np.float32)
    X[3, 2] = bad
    with pytest.raises(ValueError, match="NaN/inf"):
        train(MLP((4, 3), rngs=nnx.Rngs(0)), X, np.zeros(10, np.int32), key=jax.random.key(0),
              epochs=1, progress=False)


def test_length_mismatch_rejected():
    with pytest.raises(ValueError, match="same"):
        train(MLP((4, 3), rngs=nnx.Rngs(0)), jnp.ones((10, 4)), jnp.zeros(9, jnp.int32),
              key=jax.random.key(0), epochs=1, progress=False)


@pytest.mark.slow
def test_gce_cnn_mnist_3_vs_8(mnist_dir):
    d = load_mnist(mnist_dir, classes=(3, 8), val_fraction=0.2, seed=0)
    model = GCECNN(2, rngs=nnx.Rngs(0))
    train(model, d.x_train, d.y_train, key=jax.random.key(0), epochs=8, batch_size=64,
          learning_rate=1e-3, progress=False)
    apply, params = functional(model)
    acc = accuracy(apply, params, d.x_val, d.y_val)
    print(f"GCE CNN MNIST 3-vs-8 validation accuracy: {acc:.4f} on {len(d.y_val)} images")
    assert acc >= 0.97
