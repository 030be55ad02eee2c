"""Evaluation on a hand-built explainer whose answers are known exactly; the figures."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcausal.gce import latent_sweeps, resample_accuracy
from jcausal.plot.gce import plot_accuracy_drop, plot_factor_flow, plot_sweeps, plot_training


def encode(x):  # the identity "VAE": z = x
    return x, jnp.zeros_like(x)


def decode(z):
    return z


def classify(x):  # class 1 iff x_0 > 0, sharply
    p1 = jax.nn.sigmoid(50.0 * x[0])
    return jnp.stack([1.0 - p1, p1])


def data(n=1000):
    X = jax.random.normal(jax.random.key(0), (n, 3))
    return X, (np.asarray(X[:, 0]) > 0).astype(np.int32)


def test_resample_accuracy_known_answer():
    X, y = data()
    acc = resample_accuracy(encode, decode, classify, jax.random.key(1), X, y, batch_size=256)
    assert float(acc.original) == pytest.approx(1.0, abs=0.01)
    assert float(acc.reencoded) == float(acc.original)
    # resampling z_0 keeps the class only when the new sign matches: 1/2 (binomial sd 0.016)
    assert float(acc.resampled[0]) == pytest.approx(0.5, abs=0.06)
    np.testing.assert_allclose(np.asarray(acc.resampled[1:]), float(acc.original))


def test_resample_accuracy_with_params_matches_closure_free_call():
    X, y = data(256)
    W = jnp.eye(3, dtype=jnp.float32) * 2.0
    acc = resample_accuracy(lambda W, x: (W @ x / 4.0, jnp.zeros(3)), lambda W, z: W @ z,
                            classify, jax.random.key(1), X, y, params=(W, None))
    ref = resample_accuracy(encode, decode, classify, jax.random.key(1), X, y)
    assert float(acc.original) == float(ref.original)


def test_latent_sweeps_shapes_and_center_column():
    X, _ = data(5)
    sw = latent_sweeps(encode, decode, classify, X, offsets=[-2.0, 0.0, 2.0])
    assert sw.images.shape == (5, 3, 3, 3) and sw.probs.shape == (5, 3, 3, 2)
    np.testing.assert_allclose(np.asarray(sw.images[:, :, 1]), np.repeat(np.asarray(X)[:, None], 3, 1))
    # shifting z_0 by +2 moves every image's first coordinate by 2
    np.testing.assert_allclose(np.asarray(sw.images[:, 0, 2, 0] - sw.images[:, 0, 1, 0]), 2.0, rtol=1e-6)


def test_bad_evaluation_input():
    X, y = data(10)
    with pytest.raises(ValueError, match="same non-zero length"):
        resample_accuracy(encode, decode, classify, jax.random.key(0), X, y[:5])
    with pytest.raises(ValueError, match="offsets"):
        latent_sweeps(encode, decode, classify, X, offsets=[[0.0]])


def test_figures():
    fig = plot_factor_flow([0.5, 0.01, 0.02], K=1)
    assert len(fig.axes[0].patches) == 3
    fig = plot_accuracy_drop(0.99, 0.97, [0.5, 0.96, 0.97], K=1)
    assert len(fig.axes[0].patches) == 5
    images = np.random.default_rng(0).uniform(size=(2, 3, 5, 28, 28, 1))
    probs = np.random.default_rng(1).dirichlet([1, 1], size=(2, 3, 5))
    fig = plot_sweeps(images, probs, np.linspace(-2, 2, 5), K=1, class_names=["3", "8"])
    assert len(fig.axes) == 15
    fig = plot_training({"step": [1, 2], "C": [0.1, 0.2], "D": [-3.0, -2.0]}, lam=0.05)
    assert len(fig.axes) == 2


def test_nonfinite_inputs_are_refused():
    """A NaN row gave NaN latents, an accuracy computed on garbage and NaN sweeps, silently."""
    X, y = data(40)
    X = X.at[3, 1].set(jnp.nan).at[7, 0].set(jnp.inf)
    msg = r"^X holds NaN/inf: 2 non-finite entries in 2 of its 40 inputs"
    with pytest.raises(ValueError, match=msg):
        resample_accuracy(encode, decode, classify, jax.random.key(1), X, y)
    with pytest.raises(ValueError, match=msg):
        latent_sweeps(encode, decode, classify, X)


def test_fine_sweeps_zoom_into_the_decision_change():
    from jcausal.gce import fine_sweeps
    from jcausal.plot.gce import plot_fine_sweep

    X = jnp.array([[-0.8, 0.3, 0.0], [1.3, -1.0, 2.0], [0.1, 0.0, 0.0]])
    fs = fine_sweeps(encode, decode, classify, X, n_fine=9, half_width=0.4)
    offs = np.asarray(fs.offsets)
    assert fs.images.shape == (3, 9, 3) and fs.probs.shape == (3, 9, 2) and offs.shape == (3, 9)
    # the decision flips where x_0 + offset = 0: each window is centred there, to the coarse
    # grid's half spacing (61 offsets over [-3, 3]: 0.05)
    np.testing.assert_allclose(offs.mean(axis=1), -np.asarray(X[:, 0]), atol=0.05 + 1e-6)
    np.testing.assert_allclose(np.diff(offs, axis=1), 0.1, atol=1e-6)
    p1 = np.asarray(fs.probs)[..., 1]
    assert np.all(p1[:, 0] < 0.5) and np.all(p1[:, -1] > 0.5)  # both classes within every window
    # only factor 0 moves; the others stay at the latent mean
    np.testing.assert_allclose(np.asarray(fs.images)[:, :, 1:], np.repeat(np.asarray(X)[:, None, 1:], 9, 1))
    fig = plot_fine_sweep(np.ones((3, 9, 4, 4)), fs.probs, fs.offsets, class_names=["neg", "pos"])
    assert len(fig.axes) == 27
    with pytest.raises(ValueError, match="factor = 3: the latent has 3 factors"):
        fine_sweeps(encode, decode, classify, X, factor=3)
    with pytest.raises(ValueError, match="n_fine >= 2"):
        fine_sweeps(encode, decode, classify, X, n_fine=1)
