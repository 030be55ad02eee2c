"""Training C + lambda D: Proposition 3, frozen classifier, checkpoints, non-finite stop, bad input."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.gce import ExplainerSettings, LinearGaussian, fit_explainer, generative, information_flow
from jcausal.models import Loop, load
from jcausal.models.vae import mlp_vae

QUIET = Loop(progress=False)
SMALL = ExplainerSettings(n_alpha=8, n_beta=4)
TINY = ExplainerSettings(n_alpha=4, n_beta=4)


def probit_params(a, x):
    p1 = jax.scipy.stats.norm.cdf(a @ x)
    return jnp.stack([1.0 - p1, p1])


@pytest.mark.parametrize("N", [2, 4])
def test_proposition_3_linear_classifier(N):
    """K = 1, L = N - 1, unit columns: w_alpha -> +-a/|a| and W_beta^T a -> 0 (Proposition 3)."""
    rng = np.random.default_rng(N)
    a = jnp.asarray(rng.normal(size=N) * 2.0, jnp.float32)
    model = LinearGaussian(N, 1, N - 1, gamma=0.05, unit_columns=True, rngs=nnx.Rngs(N))
    res = fit_explainer(model, probit_params, key=jax.random.key(0), K=1, L=N - 1, lam=0.1, steps=300,
                        classify_params=a, loop=QUIET,
                        settings=ExplainerSettings(n_alpha=64, n_beta=16, learning_rate=0.05))
    assert res.nonfinite_step is None and res.steps == 300
    W = np.asarray(model.weights)
    an = np.asarray(a) / np.linalg.norm(np.asarray(a))
    cos_alpha = abs(W[:, 0] @ an) / np.linalg.norm(W[:, 0])
    cos_beta = np.abs(W[:, 1:].T @ an) / np.linalg.norm(W[:, 1:], axis=0)
    print(f"\nN={N}: |cos(w_alpha, a)| = {cos_alpha:.4f}, max |cos(w_beta_j, a)| = {cos_beta.max():.4f}")
    assert cos_alpha >= 0.99
    assert cos_beta.max() <= 0.05
    assert res.history["C"][-1] > res.history["C"][0]


def test_classifier_is_frozen_and_params_are_arguments():
    a = jnp.asarray([1.5, -0.5], jnp.float32)
    a_before = np.asarray(a).copy()
    model = LinearGaussian(2, 1, 1, gamma=0.0, rngs=nnx.Rngs(0))
    res = fit_explainer(model, probit_params, key=jax.random.key(1), K=1, L=1, lam=0.1, steps=3,
                        classify_params=a, settings=SMALL, loop=QUIET)
    np.testing.assert_array_equal(np.asarray(a), a_before)
    assert res.steps == 3 and len(res.history["C"]) == 3


def test_same_seed_same_result_and_checkpoint(tmp_path):
    X = jax.random.normal(jax.random.key(0), (40, 3))

    def clf(x):
        return jax.nn.softmax(jnp.stack([x[0], -x[0]]))

    runs = []
    for _ in range(2):
        vae = mlp_vae(3, 2, hidden=(8,), rngs=nnx.Rngs(0))
        ck = tmp_path / "vae.msgpack"
        res = fit_explainer(vae, clf, X, key=jax.random.key(3), K=1, L=1, lam=0.1, steps=3,
                            settings=dataclasses.replace(SMALL, batch_size=16),
                            loop=Loop(ck, 2, progress=False))
        runs.append(res)
    np.testing.assert_array_equal(runs[0].history["loss"], runs[1].history["loss"])
    meta = json.loads((tmp_path / "vae.msgpack.json").read_text())
    assert meta["step"] == 3
    fresh = generative(mlp_vae(3, 2, hidden=(8,), rngs=nnx.Rngs(9))).params
    loaded = load(tmp_path / "vae.msgpack", fresh)
    for x, y in zip(jax.tree.leaves(loaded), jax.tree.leaves(runs[1].params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    """The classifier returns NaN once the generator's weight grows past a threshold."""

    def clf(x):
        p1 = jax.nn.sigmoid(x[0])
        p1 = jnp.where(jnp.abs(x[0]) > 30.0, jnp.nan, p1)
        return jnp.stack([1.0 - p1, p1])

    model = LinearGaussian(2, 1, 1, gamma=0.0, rngs=nnx.Rngs(0))
    model.W[...] = jnp.asarray([[1.0, 0.0], [0.0, 1.0]], jnp.float32)
    ck = tmp_path / "lg.msgpack"
    # C rewards a large |w_alpha|; lam = 0 and a big learning rate push it past the NaN threshold
    res = fit_explainer(model, clf, key=jax.random.key(0), K=1, L=1, lam=0.0, steps=200,
                        settings=ExplainerSettings(n_alpha=16, n_beta=4, learning_rate=20.0),
                        loop=Loop(ck, 1000, progress=False))
    assert res.nonfinite_step is not None and res.steps < res.nonfinite_step
    assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(res.params))
    gen = generative(model)
    C = information_flow(gen.decode, clf, jax.random.key(1), K=1, L=1, n_alpha=16, n_beta=4,
                         params=(res.params, None))
    assert np.isfinite(float(C))  # the kept parameters are good ones
    meta = json.loads((tmp_path / "lg.msgpack.json").read_text())
    assert meta["nonfinite_step"] == res.nonfinite_step and meta["step"] == res.steps
    loaded = load(ck, generative(LinearGaussian(2, 1, 1, gamma=0.0, rngs=nnx.Rngs(5))).params)
    np.testing.assert_array_equal(np.asarray(jax.tree.leaves(loaded)[0]),
                                  np.asarray(jax.tree.leaves(res.params)[0]))


@pytest.mark.parametrize("kw, match", [
    (dict(lam=-0.1), "lam = -0.1"),
    (dict(K=0), "K = 0"),
    (dict(settings=dict(n_alpha=1, n_beta=4)), "2 draws to stratify, got n_alpha = 1"),
])
def test_bad_input(kw, match):
    if "settings" in kw:
        kw = kw | {"settings": ExplainerSettings(**kw["settings"])}
    args = dict(key=jax.random.key(0), K=1, L=1, lam=0.1, steps=1, settings=TINY, loop=QUIET) | kw
    with pytest.raises(ValueError, match=match):
        fit_explainer(LinearGaussian(2, 1, 1, rngs=nnx.Rngs(0)), lambda x: jax.nn.softmax(x), **args)


@pytest.mark.parametrize("kw, match", [
    (dict(n_alpha=0, n_beta=4), "n_alpha = 0"),
    (dict(n_alpha=4, n_beta=0), "n_beta = 0"),
    (dict(n_alpha=4, n_beta=4, sampler="qmc"), "sampler = 'qmc': choose one"),
    (dict(variant="both"), "variant = 'both'"),
    (dict(batch_size=0), "batch_size must be an int >= 1"),
    (dict(learning_rate=float("nan")), "learning_rate = nan"),
])
def test_bad_settings_are_refused_when_built(kw, match):
    """Options are validated when they are built (STYLE.md 8): no fit_explainer call needed."""
    with pytest.raises(ValueError, match=match):
        ExplainerSettings(**kw)


def test_logits_instead_of_probabilities_is_rejected():
    with pytest.raises(ValueError, match="sum to"):
        fit_explainer(LinearGaussian(2, 1, 1, rngs=nnx.Rngs(0)), lambda x: x * 3.0 + 1.0,
                      key=jax.random.key(0), K=1, L=1, lam=0.1, steps=1, settings=TINY, loop=QUIET)


def test_latent_size_other_than_k_plus_l_is_refused_before_any_step(tmp_path):
    """K + L = 4 for a map with 3 latents raised a raw dot_general TypeError (or, with
    fidelity_only, trained without a word): a ValueError names both sizes, before any step."""
    from jcausal.gce import Generative

    clf = jax.nn.softmax
    kw = dict(key=jax.random.key(0), lam=0.1, steps=2, loop=QUIET)
    lg = LinearGaussian(4, 1, 2, rngs=nnx.Rngs(0))
    W0 = np.asarray(lg.W[...]).copy()
    for settings in (TINY, dataclasses.replace(TINY, fidelity_only=True)):
        with pytest.raises(ValueError, match=r"K \+ L = 2 \+ 2 = 4, but the generative map's latent has 3 "):
            fit_explainer(lg, clf, K=2, L=2, settings=settings, **kw | dict(loop=Loop(tmp_path / "lg.msgpack",
                                                                                       progress=False)))
    np.testing.assert_array_equal(np.asarray(lg.W[...]), W0)  # no step was taken
    assert not (tmp_path / "lg.msgpack").exists()
    X = jax.random.uniform(jax.random.key(1), (20, 3))
    vae = mlp_vae(3, 2, hidden=(8,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"K \+ L = 1 \+ 2 = 3, but the generative map's latent has 2 "):
        fit_explainer(vae, lambda x: jax.nn.softmax(x[:2]), X, K=1, L=2, settings=TINY, **kw)
    # a map without an encoder: the decoder is probed on K + L zeros (shapes only)
    gen = generative(LinearGaussian(4, 1, 2, rngs=nnx.Rngs(0)))
    bare = Generative(gen.decode, gen.fidelity, None, gen.params, False)
    with pytest.raises(ValueError, match=r"decoder rejects a latent of K \+ L = 1 \+ 1 = 2 factors .*"
                                         r"dot_general"):
        fit_explainer(bare, clf, K=1, L=1, settings=TINY, **kw)
    assert fit_explainer(lg, clf, K=1, L=2, settings=TINY, **kw).steps == 2  # the right sizes train


def test_nonfinite_data_is_refused_with_counts():
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    X[4, :2] = np.nan
    with pytest.raises(ValueError, match=r"^data holds NaN/inf: 2 non-finite entries in 1 of its 20 inputs"):
        fit_explainer(mlp_vae(3, 2, hidden=(8,), rngs=nnx.Rngs(0)), lambda x: jax.nn.softmax(x[:2]), X,
                      key=jax.random.key(0), K=1, L=1, lam=0.1, steps=1, settings=TINY, loop=QUIET)


def test_plateau_is_found_and_warned_about():
    from jcausal.gce import PlateauWarning, find_plateau

    flat = {"step": list(range(1, 41)), "C": [0.3] * 20 + [1e-4] * 20, "D": [-100.0] * 40}
    p = find_plateau(flat)
    assert p is not None and p.since == 31 and p.C_max == pytest.approx(1e-4)
    assert find_plateau({"step": [1, 2, 3, 4], "C": [0.0, 0.0, 0.0, 0.2], "D": [0.0] * 4}) is None
    assert find_plateau({"step": [1], "C": [0.0], "D": [0.0]}) is None
    # a classifier that ignores its input: C is exactly 0 at every step
    with pytest.warns(PlateauWarning, match="C stayed below"):
        fit_explainer(LinearGaussian(2, 1, 1, rngs=nnx.Rngs(0)), lambda x: jnp.full(2, 0.5) + 0 * x[0],
                      key=jax.random.key(0), K=1, L=1, lam=0.1, steps=24, settings=TINY, loop=QUIET)


def test_stratifying_many_causal_factors_says_what_it_does():
    model = LinearGaussian(4, 3, 1, rngs=nnx.Rngs(0))
    with pytest.warns(UserWarning, match="K = 3: alpha is a Latin hypercube"):
        fit_explainer(model, lambda x: jax.nn.softmax(x[:2]), key=jax.random.key(0), K=3, L=1, lam=0.1,
                      steps=1, settings=TINY, loop=QUIET)
