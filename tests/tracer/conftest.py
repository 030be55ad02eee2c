"""A session-scoped MNIST AlexNet for the slow TRACER tests (trained once, skipped without data)."""

import pytest

from tests.conftest import require_mnist, trained_once


@pytest.fixture(scope="session")
def mnist_alexnet(tmp_path_factory):
    """``(model, (x_train, y_train, x_test, y_test))``: AlexNetSmall trained 2 epochs on 80% of the
    MNIST test set with ``jcausal.models.train`` (about 25 s on 2 CPU cores), once per run (the
    other xdist worker loads its checkpoint)."""
    mnist = require_mnist()
    from flax import nnx

    from tests.tracer._bench import bench

    data = bench.load_data(mnist)
    model = trained_once(tmp_path_factory, "mnist_alexnet",
                         lambda: bench.train_alexnet(data[0], data[1], epochs=2),
                         lambda: bench.AlexNetSmall(10, rngs=nnx.Rngs(0)))
    return model, data


@pytest.fixture(scope="session")
def breast_cancer_table(tmp_path_factory):
    """The issue-25 table's task, trained once per run however many xdist workers ask (about 15 s
    on 2 CPU cores): the CLI's breast-cancer MLP (30, 64, 32, 2) (seed 0, 200 epochs, lr 3e-3), the
    training inputs it assigns with probability >= 0.99, the tabular counterfactual GAN (latent 8,
    1500 steps, lambda 0.9, batch 64, seed 0), and the first 100 test rows with the other class as
    target. The tabular tests of ``test_counterfactual.py`` use the same models.

    Returns a dict: data, tr, te (the 75/25 split's rows), model, gan, index, x_train (confident
    rows), y_train (their model labels), x (100 rows), targets.
    """
    import jax
    from flax import nnx

    from jcausal.data import train_test_split
    from jcausal.models import MLP, Loop, train
    from jcausal.tracer import CounterfactualGAN, model_labels, nn_index, train_gan
    from jcausal.tracer.datasets import load_breast_cancer

    d = load_breast_cancer()
    tr, te = train_test_split(len(d.y), test_size=0.25, seed=0)

    def fit_model():
        model = MLP((30, 64, 32, 2), rngs=nnx.Rngs(0))
        train(model, d.X[tr], d.y[tr], key=jax.random.key(0), epochs=200, learning_rate=3e-3, progress=False)
        return model

    model = trained_once(tmp_path_factory, "breast_cancer_mlp", fit_model,
                         lambda: MLP((30, 64, 32, 2), rngs=nnx.Rngs(0)))
    y_model, p = model_labels(model, d.X[tr])
    keep = p.max(1) >= 0.99
    x_train, y_train = d.X[tr][keep], y_model[keep]
    index = nn_index(x_train, y_train, 2)

    def new_gan():
        return CounterfactualGAN(2, input_shape=(30,), kind="tabular", latent=8, channels=16,
                                 rngs=nnx.Rngs(0))

    def fit_gan():
        gan = new_gan()
        train_gan(gan, x_train, y_train, key=jax.random.key(0), steps=1500, lam=0.9, index=index,
                  batch_size=64, loop=Loop(progress=False))
        return gan

    gan = trained_once(tmp_path_factory, "breast_cancer_gan", fit_gan, new_gan)
    x = d.X[te][:100]
    pred, _ = model_labels(model, x)
    return {"data": d, "tr": tr, "te": te, "model": model, "gan": gan, "index": index, "x_train": x_train,
            "y_train": y_train, "x": x, "targets": 1 - pred}
