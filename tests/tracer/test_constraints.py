"""Actionable counterfactuals: constraint resolution (names, indices, data units through the scaler),
projection, sparse decoding against a brute-force minimum on linear classifiers, bounded repair,
the L1 and projected training objective against a numpy reference, several counterfactuals per
input, and every bad input."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.data import MinMaxScaler
from jcausal.models import Loop
from jcausal.tracer import (
    Constraints,
    CounterfactualGAN,
    Decoding,
    GANObjective,
    counterfactuals,
    generate,
    make_constraints,
    pairwise_diversity,
    sparse_decode,
    train_gan,
)
from jcausal.tracer import constraints as C
from jcausal.tracer.gan import gan_functions, generator_loss

NAMES = ("age", "income", "debt", "rooms", "height", "weight")


def test_make_constraints_names_indices_and_scaler_units():
    rng = np.random.default_rng(0)
    raw = rng.uniform([0, 1e3, -5, 1, 150, 40], [90, 1e5, 5, 9, 200, 120], size=(200, 6))
    sc = MinMaxScaler.fit(raw)
    ranges = {"income": (2e4, 6e4), 2: (None, 1.5), "rooms": (3, None)}
    c = make_constraints(6, immutable=["age", 4], ranges=ranges, feature_names=NAMES, scaler=sc)
    assert c.immutable == (0, 4) and c.mutable.tolist() == [False, True, True, True, False, True]
    span = sc.high - sc.low
    # independent reference: (v - low) / span in float64, then the float32 bounds enclose it
    for j, (lo, hi) in {1: (2e4, 6e4), 2: (-np.inf, 1.5), 3: (3, np.inf)}.items():
        ref_lo, ref_hi = (lo - sc.low[j]) / span[j], (hi - sc.low[j]) / span[j]
        for got, ref in ((c.low[j], ref_lo), (c.high[j], ref_hi)):
            assert (np.isinf(ref) and got == ref) or got == pytest.approx(ref, rel=1e-6, abs=1e-7)
    assert np.isinf(c.low[[0, 4, 5]]).all() and np.isinf(c.high[[0, 4, 5]]).all()
    # rounded inwards: the float32 bounds map back inside the data-unit ranges, and the next float32
    # outwards does not (so nothing allowed is lost beyond one float32 step)
    for j, (lo, hi) in {1: (2e4, 6e4), 2: (None, 1.5), 3: (3, None)}.items():
        for bound, ref, out in ((c.low[j], lo, -np.inf), (c.high[j], hi, np.inf)):
            if ref is None:
                continue
            row = np.zeros((2, 6), np.float32)
            row[:, j] = bound, np.nextafter(bound, np.float32(out))
            back = sc.inverse_transform(row)[:, j]
            inside = (back >= ref) if out < 0 else (back <= ref)
            assert inside[0] and not inside[1], (j, back, ref)
    # without a scaler, ranges are in model units; without names, defaults x0.. in messages
    c2 = make_constraints(3, ranges={1: (0.2, 0.4)})
    assert 0.2 <= c2.low[1] <= np.nextafter(np.float32(0.2), np.float32(1)) and c2.names == ("x0", "x1", "x2")
    assert np.nextafter(np.float32(0.4), np.float32(0)) <= c2.high[1] <= 0.4
    assert not make_constraints(3).constrained and c2.constrained


@pytest.mark.parametrize("kwargs, match", [
    (dict(immutable=["salary"]), "unknown feature 'salary'"),
    (dict(ranges={"salary": (0, 1)}), "unknown feature 'salary'"),
    (dict(immutable=[6]), "index 6 is out of range"),
    (dict(ranges={"age": (5, 1)}), "low 5.0 > high 1.0"),
    (dict(ranges={"age": 5}), r"needs a \(low, high\) pair"),
    (dict(ranges={"age": (np.nan, 1)}), "invalid bound"),
    (dict(immutable=[1.5]), "an index or a name"),
])
def test_make_constraints_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_constraints(6, feature_names=NAMES, **kwargs)


def test_make_constraints_default_names():
    with pytest.raises(ValueError, match=r"'age'; known features: x0 .. x5 \(no feature_names"):
        make_constraints(6, immutable=["age"])
    assert make_constraints(6, immutable=["x4"]).immutable == (4,)
    with pytest.raises(ValueError, match="5 feature names for 6"):
        make_constraints(6, feature_names=NAMES[:5])


def test_check_immutable_in_range_names_inputs():
    c = make_constraints(3, immutable=[1], ranges={1: (0.0, 0.5)})
    x = np.array([[0.1, 0.2, 0.3], [0.1, 0.9, 0.3], [0.1, 0.7, 0.3]], np.float32)
    with pytest.raises(ValueError, match=r"'x1' is immutable but its range excludes .*\[1, 2\]"):
        C.check_immutable_in_range(c, x)
    C.check_immutable_in_range(c, x[:1])  # no error


class Linear(nnx.Module):
    """Two-class logistic model: logits ``(0, w.x + b)``."""

    def __init__(self, w, b):
        self.w = nnx.Param(jnp.asarray(w, jnp.float32))
        self.b = nnx.Param(jnp.asarray(b, jnp.float32))

    def __call__(self, x):
        z = jnp.dot(x.reshape(-1), self.w[...]) + self.b[...]
        return jnp.stack([jnp.zeros_like(z), z])


def _brute_min_features(w, b, x, delta, scales, low, high, mutable):
    """Fewest features, each at 0 or one of the scales of the proposal's change (projected), that
    make ``w.x' + b > 0``; float64 enumeration of every assignment."""
    d = len(x)
    opts = [[0.0] + [float(np.clip(x[j] + s * delta[j], low[j], high[j]) - x[j]) if mutable[j] else 0.0
                     for s in scales] for j in range(d)]
    best = None
    for combo in itertools.product(*[range(len(o)) for o in opts]):
        chg = np.array([opts[j][k] for j, k in enumerate(combo)])
        if np.dot(w, x + chg) + b > 1e-6:
            cnt = int(np.sum(chg != 0))
            best = cnt if best is None else min(best, cnt)
    return best


def test_sparse_decode_minimal_on_linear_models_and_exact_elsewhere():
    d, n = 6, 64
    hits = 0
    for seed in range(5):
        r = np.random.default_rng(seed)
        w, b = r.normal(size=d), -0.5
        model = Linear(w, b)
        x = r.uniform(0.2, 0.8, size=(n, d)).astype(np.float32)
        x = x[x @ w + b < -0.1][:8]  # inputs of class 0, target class 1
        prop = np.clip(x + r.normal(0, 0.3, size=x.shape), 0, 1).astype(np.float32)
        cons = make_constraints(d, immutable=[0], ranges={1: (0.1, 0.9)})
        dec = sparse_decode(model, x, prop, np.ones(len(x), int), cons, input_shape=(d,),
                            decoding=Decoding(scales=(1.0, 2.0), repair_steps=0),
                            domain=(np.zeros(d), np.ones(d)))
        for i in range(len(x)):
            lo = np.maximum(cons.low, np.minimum(0.0, x[i]))
            hi = np.minimum(cons.high, np.maximum(1.0, x[i]))
            ref = _brute_min_features(w, b, x[i].astype(np.float64), (prop[i] - x[i]).astype(np.float64),
                                      (1.0, 2.0), lo, hi, cons.mutable)
            assert dec.valid[i] == (ref is not None)
            if ref is None:
                continue
            hits += 1
            cf = dec.counterfactuals[i]
            assert int(np.sum(cf != x[i])) == ref  # greedy is optimal for a linear logit
            assert np.dot(w, cf) + b > 0  # valid, checked independently
            assert cf[0] == x[i, 0] and 0.1 <= cf[1] * (1 + 1e-7) and cf[1] <= 0.9 * (1 + 1e-7)
            untouched = ~dec.selected[i]
            np.testing.assert_array_equal(cf[untouched].view(np.uint32), x[i][untouched].view(np.uint32))
    assert hits >= 20


def test_sparse_decode_repair_and_unreachable_and_recompile_guard():
    w = np.array([3.0, 1.0, 0.0, 0.0], np.float32)
    model = Linear(w, -2.0)
    x = np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.0, 0.5, 0.5]], np.float32)
    useless = x.copy()  # the proposal changes nothing: only the repair can help
    free = make_constraints(4)
    dec = sparse_decode(model, x, useless, [1, 1], free, input_shape=(4,), domain=(np.zeros(4), np.ones(4)))
    assert dec.valid.all() and dec.repaired.all()
    assert np.all(dec.counterfactuals @ w - 2.0 > 0) and np.all(dec.counterfactuals <= 1.0)
    # only feature 1 may move, and w_1 * 1 - 2 < 0 at its best: unreachable, the search ends
    stuck = make_constraints(4, immutable=[0])
    dec2 = sparse_decode(model, x, useless, [1, 1], stuck, input_shape=(4,), domain=(np.zeros(4), np.ones(4)),
                         decoding=Decoding(repair_steps=50))
    assert not dec2.valid.any() and not dec2.repaired.any()
    np.testing.assert_array_equal(dec2.counterfactuals[:, 0], x[:, 0])
    size = C._decode._cache_size()
    sparse_decode(model, x + 0.01, useless + 0.02, [1, 1], free, input_shape=(4,),
                  domain=(np.zeros(4), np.ones(4)))
    assert C._decode._cache_size() == size


def test_pairwise_diversity_reference():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 3, 4))
    ref = [np.mean([np.linalg.norm(a[i, p] - a[i, q]) for p, q in itertools.combinations(range(3), 2)])
           for i in range(5)]
    np.testing.assert_allclose(pairwise_diversity(a), ref, rtol=1e-12)
    assert np.all(pairwise_diversity(a[:, :1]) == 0)


def _toy(n=96, d=6, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.clip(0.5 + 0.25 * np.eye(2, d)[y] + 0.05 * rng.normal(size=(n, d)), 0, 1).astype(np.float32)
    return x, y


def test_generator_loss_l1_and_projection_reference():
    x, y = _toy()
    gan = CounterfactualGAN(2, input_shape=(6,), kind="tabular", latent=4, hidden=(16,), rngs=nnx.Rngs(0))
    fns = gan_functions(gan)
    onehot = jnp.asarray(np.eye(2, dtype=np.float32)[1 - y[:16]])
    xb, x_nn = jnp.asarray(x[:16]), jnp.asarray(x[16:32])
    cons = make_constraints(6, immutable=[0, 3], ranges={1: (0.4, 0.45)})
    arr = cons.arrays((6,))
    lam = jnp.asarray(0.7, jnp.float32)
    base, (g0, d0) = generator_loss(fns, fns.g_params, fns.d_params, xb, onehot, x_nn, lam)
    with_l1, _ = generator_loss(fns, fns.g_params, fns.d_params, xb, onehot, x_nn, lam, l1=0.5)
    fake = np.asarray(generate(gan, x[:16], 1 - y[:16]), np.float64)
    l1_ref = np.mean(np.sum(np.abs(fake - x[:16]), 1))
    assert float(with_l1) - float(base) == pytest.approx(0.5 * l1_ref, rel=1e-4)
    # projected: the distance term is computed on the projected generator output
    _, (_, d_proj) = generator_loss(fns, fns.g_params, fns.d_params, xb, onehot, x_nn, lam, cons=arr)
    proj = fake.copy()
    proj[:, [0, 3]] = x[:16][:, [0, 3]]
    proj[:, 1] = np.clip(proj[:, 1], cons.low[1], cons.high[1])
    d_ref = np.mean(np.linalg.norm(proj - np.asarray(x_nn, np.float64), axis=1))
    assert float(d_proj) == pytest.approx(d_ref, rel=1e-5)
    assert float(d0) != pytest.approx(d_ref, rel=1e-3)  # the projection mattered
    with pytest.raises(ValueError, match="l1"):
        train_gan(gan, x, y, key=jax.random.key(0), steps=1, objective=GANObjective(l1=-1.0),
                  loop=Loop(progress=False))


def test_generate_noise():
    x, y = _toy()
    gan = CounterfactualGAN(2, input_shape=(6,), kind="tabular", latent=4, hidden=(16,), rngs=nnx.Rngs(0))
    a = generate(gan, x[:5], 1 - y[:5])
    np.testing.assert_array_equal(generate(gan, x[:5], 1 - y[:5], noise=np.zeros((5, 4))), a)
    assert not np.allclose(generate(gan, x[:5], 1 - y[:5], noise=np.ones((5, 4))), a)
    with pytest.raises(ValueError, match=r"noise must have shape \(5, 4\)"):
        generate(gan, x[:5], 1 - y[:5], noise=np.zeros((5, 3)))


@pytest.fixture(scope="module")
def toy_gan():
    x, y = _toy(n=128)
    gan = CounterfactualGAN(2, input_shape=(6,), kind="tabular", latent=4, hidden=(16,), rngs=nnx.Rngs(0))
    res = train_gan(gan, x, y, key=jax.random.key(0), steps=200, lam=0.9,
                    objective=GANObjective(immutable=[5]), loop=Loop(log_every=10, progress=False))
    # class 1 iff feature 1 > feature 0 (the toy's two classes differ in features 0 and 1)
    model = Linear(np.array([-4.0, 4.0, 0, 0, 0, 0], np.float32), 0.0)
    return x, y, gan, res.index, model


def test_counterfactuals_constraints_several_and_bad_input(toy_gan):
    x, y, gan, index, model = toy_gan
    xs = x[:12]
    pred = (xs[:, 1] > xs[:, 0]).astype(int)
    r = counterfactuals(gan, model, xs, 1 - pred, index, immutable=[2, "x3"], ranges={4: (0.45, 0.55)},
                        num=3)
    assert r.alternatives.shape == (12, 3, 6) and r.alternatives_valid.shape == (12, 3)
    np.testing.assert_array_equal(r.alternatives[:, 0], r.counterfactuals)
    a = r.alternatives
    fixed = np.repeat(xs[:, None, [2, 3]], 3, 1)
    np.testing.assert_array_equal(a[:, :, [2, 3]].view(np.uint32), fixed.view(np.uint32))
    assert np.all((a[:, :, 4] >= np.float32(0.45)) & (a[:, :, 4] <= np.float32(0.55)))
    valid_ref = (a[:, :, 1] > a[:, :, 0]) == (1 - pred)[:, None].astype(bool)
    np.testing.assert_array_equal(r.alternatives_valid, valid_ref)
    np.testing.assert_array_equal(r.features_changed, np.sum(r.counterfactuals != xs, 1))
    s = r.summary()
    assert s["num"] == 3 and s["all_valid_distinct_percent"] is not None and s["mean_diversity"] > 0
    with pytest.raises(ValueError, match="num = 0"):
        counterfactuals(gan, model, xs, 1 - pred, index, num=0)
    with pytest.raises(ValueError, match="unknown feature 'salary'"):
        counterfactuals(gan, model, xs, 1 - pred, index, immutable=["salary"], feature_names=NAMES)
    with pytest.raises(ValueError, match="low 0.9 > high 0.1"):
        counterfactuals(gan, model, xs, 1 - pred, index, ranges={1: (0.9, 0.1)})
    with pytest.raises(ValueError, match="immutable but its range excludes"):
        counterfactuals(gan, model, xs, 1 - pred, index, immutable=[4], ranges={4: (0.9, 1.0)})
    # the class depends on features 0 and 1 only: fixing both makes every target unreachable
    with pytest.raises(ValueError, match=r"input\(s\) 0 \(target \d\), 1 .*features age, income fixed"):
        counterfactuals(gan, model, xs, 1 - pred, index, immutable=["age", "income"], feature_names=NAMES)
    kept = counterfactuals(gan, model, xs, 1 - pred, index, immutable=[0, 1], on_unreachable="keep")
    assert not kept.valid.any() and all("no valid counterfactual" in m for m in kept.messages)
    np.testing.assert_array_equal(kept.counterfactuals[:, :2], xs[:, :2])
    with pytest.raises(ValueError, match="on_unreachable"):
        counterfactuals(gan, model, xs, 1 - pred, index, on_unreachable="ignore")
    with pytest.raises(ValueError, match="pass key="):
        counterfactuals(gan, model, xs, 1 - pred, index, num=2, decoding=Decoding.dense())
    with pytest.raises(ValueError, match="scales"):
        counterfactuals(gan, model, xs, 1 - pred, index, decoding=Decoding(scales=(1.0, -2.0)))


def test_dense_decoding_is_the_gan_output_and_varies_with_noise(toy_gan):
    x, y, gan, index, model = toy_gan
    xs = x[:8]
    pred = (xs[:, 1] > xs[:, 0]).astype(int)
    r = counterfactuals(gan, model, xs, 1 - pred, index, decoding=Decoding.dense(), num=2,
                        key=jax.random.key(3))
    np.testing.assert_array_equal(r.counterfactuals, generate(gan, xs, 1 - pred))
    assert np.all(r.diversity > 0)
    assert isinstance(make_constraints(6), Constraints)
