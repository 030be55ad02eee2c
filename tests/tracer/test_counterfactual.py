"""Counterfactual GAN: exact nearest neighbours vs float64 brute force, one step lowers the generator
loss, save/load reproduces counterfactuals, bad input, and the tabular pipeline (breast cancer)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jcausal.models import MLP, Loop, load
from jcausal.tracer import (
    CounterfactualGAN,
    GANObjective,
    contrastive,
    counterfactuals,
    feature_changes,
    generate,
    model_labels,
    nearest,
    nn_index,
    train_gan,
)
from jcausal.tracer.gan import build_steps, gan_functions, generator_loss
from jcausal.tracer.neighbours import brute_force_nearest

QUIET = Loop(log_every=10, progress=False)  # train_gan's default loop, without the progress bar


def test_nearest_equals_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(700, 50)).astype(np.float32) * 3.0 + 10.0  # large norms stress |p|^2 - 2 q.p
    y = rng.integers(0, 4, 700)
    y[y == 3] = 2  # class 3 has no instances
    q = rng.normal(size=(300, 50)).astype(np.float32) * 3.0 + 10.0
    t = rng.integers(0, 3, 300)
    index = nn_index(x, y, 4)
    rows, dist = nearest(index, q, t, batch_size=64)
    ref_rows, ref_dist = brute_force_nearest(x, y, q, t)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5)
    assert np.all(y[rows] == t)
    # queries that are training points find themselves at distance 0
    r0, d0 = nearest(index, x[:20], y[:20])
    np.testing.assert_array_equal(r0, np.arange(20))
    assert np.all(d0 < 1e-3)
    with pytest.raises(ValueError, match="no training instances"):
        nearest(index, q[:2], [0, 3])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        nearest(index, q[:1], [4])
    with pytest.raises(ValueError, match="features"):
        nearest(index, q[:1, :10], [0])


def _toy(n=96, d=6, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = np.clip(0.5 + 0.25 * np.eye(3, d)[y] + 0.05 * rng.normal(size=(n, d)), 0, 1).astype(np.float32)
    return x, y


def test_one_generator_step_lowers_loss():
    x, y = _toy()
    gan = CounterfactualGAN(3, input_shape=(6,), kind="tabular", latent=4, hidden=(16,), rngs=nnx.Rngs(0))
    fns = gan_functions(gan)
    tx = optax.adam(1e-3)
    steps = build_steps(fns, tx, optax.adam(1e-3))
    index = nn_index(x, y, 3)
    tgt = (y[:32] + 1) % 3
    rows, _ = nearest(index, x[:32], tgt)
    onehot = jnp.asarray(np.eye(3, dtype=np.float32)[tgt])
    data, idx, lam = jnp.asarray(x), jnp.arange(32), jnp.asarray(0.5, jnp.float32)
    with jax.numpy_dtype_promotion("standard"):
        opt = tx.init(fns.g_params)
    before = generator_loss(fns, fns.g_params, fns.d_params, data[idx], onehot, data[rows], lam)[0]
    rows = jnp.asarray(rows)
    g2, opt2, loss, _ = steps.g_step(fns.g_params, opt, fns.d_params, data, idx, rows, onehot, lam)
    after = generator_loss(fns, g2, fns.d_params, data[idx], onehot, data[rows], lam)[0]
    assert float(loss) == pytest.approx(float(before), rel=1e-5)
    assert float(after) < float(before)
    # recompile guard: a second step with new values reuses the compiled function
    n_before = steps.g_step._cache_size()
    steps.g_step(g2, opt2, fns.d_params, data, idx + 1, rows, onehot, lam)
    assert steps.g_step._cache_size() == n_before


def test_train_save_load_identical_and_bad_input(tmp_path):
    x, y = _toy()
    gan = CounterfactualGAN(3, input_shape=(6,), kind="tabular", latent=4, hidden=(16,), rngs=nnx.Rngs(0))
    res = train_gan(gan, x, y, key=jax.random.key(0), steps=30,
                    loop=Loop(tmp_path / "gan.msgpack", checkpoint_every=20, log_every=10, progress=False))
    assert res.steps == 30 and res.nonfinite_step is None and res.checkpoint.is_file()
    assert len(res.history["g_loss"]) == 3
    t = (y + 1) % 3
    a = generate(gan, x, t)
    other = CounterfactualGAN(3, input_shape=(6,), kind="tabular", latent=4, hidden=(16,), rngs=nnx.Rngs(5))
    assert not np.allclose(generate(other, x, t), a)
    load(res.checkpoint, other)
    np.testing.assert_array_equal(generate(other, x, t), a)
    # the same seed trains the same GAN
    gan2 = CounterfactualGAN(3, input_shape=(6,), kind="tabular", latent=4, hidden=(16,), rngs=nnx.Rngs(0))
    train_gan(gan2, x, y, key=jax.random.key(0), steps=30, loop=QUIET)
    np.testing.assert_array_equal(generate(gan2, x, t), a)
    with pytest.raises(ValueError, match="shape"):
        generate(gan, x[:, :5], t)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        generate(gan, x[:2], [0, 3])
    with pytest.raises(ValueError, match="lambda"):
        train_gan(gan, x, y, key=jax.random.key(0), steps=1, lam=1.5, loop=QUIET)


def test_nonfinite_loss_keeps_last_good_checkpoint(tmp_path):
    x, y = _toy()
    gan = CounterfactualGAN(3, input_shape=(6,), kind="tabular", latent=4, hidden=(16,), rngs=nnx.Rngs(0))
    # an infinite learning rate: the first discriminator update is non-finite, so the generator loss
    # of step 1 is NaN; training stops and keeps (and checkpoints) the initial parameters
    res = train_gan(gan, x, y, key=jax.random.key(0), steps=50, learning_rate=np.inf,
                    loop=dataclasses.replace(QUIET, checkpoint=tmp_path / "g.msgpack"))
    assert res.nonfinite_step == 1 and res.steps == 0 and res.checkpoint.is_file()
    fresh = CounterfactualGAN(3, input_shape=(6,), kind="tabular", latent=4, hidden=(16,), rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(generate(gan, x, (y + 1) % 3), generate(fresh, x, (y + 1) % 3))
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(nnx.state(gan)))
    restored = CounterfactualGAN(3, input_shape=(6,), kind="tabular", latent=4, hidden=(16,),
                                 rngs=nnx.Rngs(1))
    load(res.checkpoint, restored)
    np.testing.assert_array_equal(generate(restored, x, (y + 1) % 3), generate(gan, x, (y + 1) % 3))


@pytest.fixture(scope="module")
def tabular(breast_cancer_table):
    """The breast-cancer MLP and tabular GAN of the issue-25 table (tests/tracer/conftest.py), trained
    once per run: data, training and test rows, classifier, GAN, and the GAN's neighbour index
    over the confident training rows."""
    b = breast_cancer_table
    return b["data"], b["tr"], b["te"], b["model"], b["gan"], b["index"], b["x_train"]


def test_tabular_validity_and_feature_changes(tabular):
    d, tr, te, clf, gan, index, x_train = tabular
    x = d.X[te]
    pred, _ = model_labels(clf, x)
    r = counterfactuals(gan, clf, x, 1 - pred, index, x_train=x_train)
    s = r.summary()
    print(f"\ntabular counterfactuals: {s}")
    assert s["changed"] == len(te) and s["validity_percent"] >= 80.0
    # distances recomputed independently
    np.testing.assert_allclose(r.dist_input, np.linalg.norm(r.counterfactuals - x, axis=1), rtol=1e-5)
    np.testing.assert_allclose(r.dist_nn, np.linalg.norm(r.counterfactuals - x_train[r.nn_rows], axis=1),
                               rtol=1e-5, atol=1e-6)
    ch = feature_changes(x[0], r.counterfactuals[0], d.scaler, d.feature_names, top=10)
    assert 0 < len(ch) <= 10
    raw_x = d.scaler.inverse_transform(x[:1])[0]
    names = list(d.feature_names)
    for c in ch:
        j = names.index(c.feature)
        assert c.before == pytest.approx(raw_x[j], rel=1e-4)
        assert c.delta == pytest.approx(c.scaled_delta * (d.scaler.high[j] - d.scaler.low[j]), rel=1e-4)
    assert all(abs(a.scaled_delta) >= abs(b.scaled_delta) for a, b in zip(ch, ch[1:]))
    # target equal to the prediction: the input comes back, and says so
    same = counterfactuals(gan, clf, x[:3], pred[:3], index)
    np.testing.assert_array_equal(same.counterfactuals, x[:3])
    assert same.unchanged.all() and "unchanged" in same.messages[0]
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        counterfactuals(gan, clf, x[:1], [2], index)
    with pytest.raises(ValueError, match="shape"):
        counterfactuals(gan, clf, x[:1, :29], [0], index)


def test_tabular_contrastive_and_plots(tabular):
    from jcausal.plot.counterfactual import plot_contrastive, plot_feature_changes

    d, tr, te, clf, gan, index, _ = tabular
    x, y = d.X[te], d.y[te]
    pred, _ = model_labels(clf, x)
    wrong = np.flatnonzero(pred != y)
    if len(wrong) == 0:
        pytest.skip("the classifier makes no test error")
    i = int(wrong[0])
    mean = np.asarray(d.X[tr].mean(0), np.float32)
    c = contrastive(clf, gan, x[i], int(y[i]), index, layers=["layers.*"], baseline_kind="mean", value=mean)
    assert c.label == int(y[i]) and c.prediction == int(pred[i])
    assert c.original.target == c.prediction and c.counterfactual_explanation.target == c.cf_prediction
    np.testing.assert_allclose(c.difference, c.counterfactual - c.x)
    assert c.to_dict()["label"] == c.label
    fig = plot_contrastive(c, feature_names=d.feature_names)
    assert len(fig.axes) >= 3
    fig2 = plot_feature_changes(feature_changes(c.x, c.counterfactual, d.scaler, d.feature_names, top=8))
    assert len(fig2.axes) == 1
    right = int(np.flatnonzero(pred == y)[0])
    with pytest.raises(ValueError, match="classified correctly"):
        contrastive(clf, gan, x[right], int(y[right]), index)


@pytest.mark.slow  # an image GAN's programs (8-13 s)
def test_image_gan_shapes_and_wrong_shape():
    from jcausal.plot.counterfactual import plot_counterfactuals

    rng = np.random.default_rng(0)
    x = rng.random((16, 28, 28, 1)).astype(np.float32)
    y = np.arange(16) % 4
    gan = CounterfactualGAN(4, latent=4, channels=4, rngs=nnx.Rngs(0))
    res = train_gan(gan, x, y, key=jax.random.key(0), steps=2, batch_size=8,
                    objective=GANObjective(distance="squared"), loop=Loop(log_every=1, progress=False))
    assert res.steps == 2 and np.all(np.isfinite(res.history["g_loss"]))
    g = generate(gan, x[:3, :, :, 0], [1, 2, 3])  # (n, 28, 28) accepted for one channel
    assert g.shape == (3, 28, 28, 1) and 0 <= g.min() and g.max() <= 1
    for bad in (x[:2, :27], x[:2].reshape(2, 28, 28, 1, 1), x[0]):
        with pytest.raises(ValueError, match="shape"):
            generate(gan, bad, [0, 1])
    with pytest.raises(ValueError, match=r"\(28, 28, c\)"):
        CounterfactualGAN(4, input_shape=(32, 32, 3), rngs=nnx.Rngs(0))

    class Tiny(nnx.Module):
        def __init__(self):
            self.lin = nnx.Linear(784, 4, rngs=nnx.Rngs(0))

        def __call__(self, v):
            return self.lin(v.reshape(-1))

    r = counterfactuals(gan, Tiny(), x[:5], [0, 1, 2, 3, 0], nn_index(x, y, 4), x_train=x)
    assert r.counterfactuals.shape == (5, 28, 28, 1)
    fig = plot_counterfactuals(r, n=5)
    assert len(fig.axes) == 10


def test_non_integer_targets_are_refused_naming_the_first():
    """A target of 1.7 became class 1; NaN became a huge negative int caught only by the range."""
    x, y = _toy(n=12)
    gan = CounterfactualGAN(3, input_shape=(6,), kind="tabular", latent=4, hidden=(8,), rngs=nnx.Rngs(0))
    clf = MLP((6, 8, 3), rngs=nnx.Rngs(1))
    index = nn_index(x, y, 3)
    rule = r"^targets must be integer class indices in \[0, 3\); "
    cases = [([0.0, 1.7], rule + r"targets\[1\] = 1.7 is not a whole number"),
             (np.array([2.0, np.nan, 0.5]), rule + r"targets\[1\] = nan is not a whole number"),
             ([0, 1, 3], rule + r"targets\[2\] = 3 is outside it \(1 of the 3 targets are\)"),
             ([-1.0, 4.0], rule + r"targets\[0\] = -1.0 is outside it \(2 of the 2 targets are\)"),
             (np.array([True, False]), r"of dtype bool")]
    for targets, match in cases:
        with pytest.raises(ValueError, match=match):
            counterfactuals(gan, clf, x[:len(targets)], targets, index)
        with pytest.raises(ValueError, match=match):
            generate(gan, x[:len(targets)], targets)
        with pytest.raises(ValueError, match=match):
            nearest(index, x[:len(targets)], targets)
    # whole floats are the classes they name: the same counterfactuals as the ints
    t = np.array([1, 2, 0])
    np.testing.assert_array_equal(generate(gan, x[:3], t.astype(np.float32)), generate(gan, x[:3], t))
    r = counterfactuals(gan, clf, x[:3], t.astype(np.float64), index)
    np.testing.assert_array_equal(r.targets, t)
