"""Latent ACE (ACE paper section 5.4) against closed forms on a synthetic decoder whose pixel means
are a known function of (z, c), and the conditional beta-VAE's pieces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.ace.latent import latent_ace, rank_latents
from jcausal.models import Split, split_functional
from jcausal.models.cvae import ConditionalVAE, train_cvae

K, C, P = 3, 4, 5


def _decoder():
    """x_p = (W_p . [z; c])^2: first layer linear, rest squares. Latent 1 is ignored (W[:, 1] = 0)."""
    W = np.random.default_rng(0).normal(size=(P, K + C)).astype(np.float32)
    W[:, 1] = 0.0
    return Split(lambda W, u: W @ u, lambda W, h: h ** 2), jnp.asarray(W), W


def test_latent_ace_matches_closed_form_within_4_stderr():
    split, Wj, W = _decoder()
    alphas = np.linspace(-3, 3, 7)
    res = latent_ace(split, jax.random.key(0), num_latents=K, num_classes=C, params=Wj, alphas=alphas,
                     num_samples=4000)
    assert res.expectations.shape == (K, C, 7, P) and res.stderr.shape == (K, C, 7, P)
    # E[(W_pk a + W_p,K+l + sum_{j != k} W_pj z_j)^2] = (W_pk a + W_p,K+l)^2 + sum_{j != k, j < K} W_pj^2
    for k in range(K):
        other = (W[:, :K] ** 2).sum(1) - W[:, k] ** 2
        for lab in range(C):
            truth = (W[:, k][None] * alphas[:, None] + W[:, K + lab][None]) ** 2 + other[None]
            z = np.abs(np.asarray(res.expectations[k, lab]) - truth) / np.asarray(res.stderr[k, lab])
            assert z.max() <= 4.0, (k, lab, z.max())
    # the ignored latent has ACE 0 up to float32 rounding of the sums (common random numbers: every
    # alpha decodes the same samples; jaxlib 0.8.1 measured 2.4e-7 on |E| up to 38.5, 0.10 gives 0)
    scale = float(np.abs(np.asarray(res.expectations)).max())
    assert np.abs(np.asarray(res.ace()[1])).max() <= 1e-7 * scale
    ranking = rank_latents(res)
    assert ranking[-1]["latent"] == 1 and ranking[-1]["negligible"]
    assert ranking[-1]["total_effect"] <= 1e-6 * ranking[0]["total_effect"]
    # class latents: E[x | do(c_k = 1)] = (W_p,K+k)^2 + sum_{j<K} W_pj^2; baseline averages the others
    zsum = (W[:, :K] ** 2).sum(1)
    for k in range(C):
        e1 = W[:, K + k] ** 2 + zsum
        e0 = np.mean([W[:, K + j] ** 2 + zsum for j in range(C) if j != k], axis=0)
        got = np.asarray(res.class_ace()[k])
        se = np.asarray(res.class_stderr[k])
        assert np.all(np.abs(got - (e1 - e0)) <= 4 * se + 1e-5), (k, got, e1 - e0, se)


def test_latent_ace_bad_input():
    split, Wj, _ = _decoder()
    for kw, match in [({"num_latents": 0}, "num_latents"), ({"num_samples": 1}, "num_samples"),
                      ({"latents": [5]}, "latents"), ({"low": 3.0, "high": -3.0}, "low < high"),
                      ({"alphas": [np.nan]}, "alphas")]:
        args = {"num_latents": K, "num_classes": C, "params": Wj, **kw}
        with pytest.raises(ValueError, match=match):
            latent_ace(split, jax.random.key(0), **args)
    with pytest.raises(ValueError, match="flat vector"):
        latent_ace(Split(lambda W, u: W @ u, lambda W, h: jnp.outer(h, h)), jax.random.key(0),
                   num_latents=K, num_classes=C, params=Wj)


def test_cvae_decoder_split_and_one_training_step_lowers_loss(tmp_path):
    rng = np.random.default_rng(1)
    X = (rng.uniform(size=(64, 36)) > 0.5).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    model = ConditionalVAE(36, latent=2, num_classes=3, hidden=(16,), beta=1.0, rngs=nnx.Rngs(0))
    split, params = split_functional(model.decoder)
    u = jnp.asarray(rng.normal(size=5), jnp.float32)
    np.testing.assert_allclose(split.rest(params, split.first(params, u)), model.decoder(u), rtol=1e-6)

    def mean_loss(m):
        keys = jax.random.split(jax.random.key(9), 64)
        return float(jnp.mean(jax.vmap(m.loss)(jnp.asarray(X), jax.nn.one_hot(y, 3), keys)))

    before = mean_loss(model)
    res = train_cvae(model, X, y, key=jax.random.key(0), epochs=3, batch_size=64, learning_rate=1e-2,
                     progress=False, checkpoint=tmp_path / "cvae.msgpack")
    assert res.steps == 3 and mean_loss(model) < before
    from jcausal.models import load

    other = ConditionalVAE(36, latent=2, num_classes=3, hidden=(16,), beta=1.0, rngs=nnx.Rngs(5))
    load(tmp_path / "cvae.msgpack", other)
    np.testing.assert_array_equal(other.decoder(u), model.decoder(u))
    with pytest.raises(ValueError, match="labels"):
        train_cvae(model, X, y + 5, key=jax.random.key(0), epochs=1, progress=False)


@pytest.fixture(scope="session")
def mnist_cvae(request):
    from tests.conftest import require_mnist

    mnist = require_mnist()
    from jcausal.data import load_mnist

    data = load_mnist(mnist, val_fraction=0.2, seed=0, flatten=True)
    model = ConditionalVAE(784, latent=10, num_classes=10, hidden=(512, 256), beta=10.0, rngs=nnx.Rngs(0))
    train_cvae(model, data.x_train, data.y_train, key=jax.random.key(0), epochs=15, batch_size=128,
               learning_rate=1e-3, progress=False)
    return data, model


@pytest.mark.slow
def test_mnist_latent_ace(mnist_cvae, tmp_path):
    """ACE paper section 5.4 on the MNIST test set: 15 epochs of a conditional beta-VAE (beta = 10)
    on 8,000 digits, 800 prior samples x 7 intervention values per latent."""
    from jcausal.plot.latent import plot_class_ace, plot_latent_ace_rows, plot_latent_ranking, plot_traversals

    data, model = mnist_cvae
    split, params = split_functional(model.decoder)
    res = latent_ace(split, jax.random.key(1), num_latents=10, num_classes=10, params=params,
                     alphas=np.linspace(-3, 3, 7), num_samples=800)
    X, y = np.asarray(data.x_train), np.asarray(data.y_train)
    overall = X.mean(0)
    cors = []
    for k in range(10):
        target = X[y == k].mean(0) - overall
        cors.append(float(np.corrcoef(np.asarray(res.class_ace()[k]), target)[0, 1]))
    assert min(cors) >= 0.5, cors
    ranking = rank_latents(res)
    tot = [r["total_effect"] for r in ranking]
    assert tot[0] >= 10 * max(tot[-1], 1e-12), ranking
    from jcausal.ace.latent import traversals

    grid = np.linspace(-3, 3, 7)
    imgs = traversals(split, num_latents=10, num_classes=10, label=3, alphas=grid, params=params)
    figs = [("class", plot_class_ace(res)), ("rows", plot_latent_ace_rows(res, 3)),
            ("trav", plot_traversals(imgs, grid)), ("rank", plot_latent_ranking(ranking))]
    for name, fig in figs:
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 5000
    print("class-map correlations", np.round(cors, 3).tolist())
    print("latent ranking", [(r["latent"], round(r["total_effect"], 2)) for r in ranking])
