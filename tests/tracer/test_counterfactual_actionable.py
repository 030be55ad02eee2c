"""Issue 25's acceptance on its table's task (breast-cancer MLP, first 100 test rows, each asked for
the other class): the default counterfactuals are valid, sparse and close; immutable features keep
the input's bits and ranges (data units) hold; three valid, pairwise different counterfactuals per
input. Validity is recomputed with the classifier itself, counts and distances with numpy."""

import numpy as np
import pytest

from jcausal.tracer import counterfactuals

IMMUTABLE = ["radius error", "worst texture", "worst area", "mean concave points", "worst concave points"]
RANGES = {"mean concavity": (0.0, 0.15), "worst radius": (8.0, 25.0), "area error": (None, 100.0)}


def _predict(model, x):
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(x, jnp.float32)
    flat = x.reshape(-1, x.shape[-1])
    return np.asarray(jax.vmap(lambda v: jnp.argmax(model(v)))(flat)).reshape(x.shape[:-1])


def test_defaults_valid_sparse_close(breast_cancer_table):
    b = breast_cancer_table
    x, t = b["x"], b["targets"]
    r = counterfactuals(b["gan"], b["model"], x, t, b["index"], x_train=b["x_train"])
    cf = r.counterfactuals
    valid = _predict(b["model"], cf) == t
    n_changed = np.sum(cf != x, 1)
    l2 = np.linalg.norm(cf.astype(np.float64) - x, axis=1)
    print(f"\ndefaults: validity {100 * valid.mean():.0f}%, {n_changed.mean():.2f} features, "
          f"L2 {l2.mean():.3f}")
    np.testing.assert_array_equal(r.valid, valid)
    np.testing.assert_array_equal(r.features_changed, n_changed)
    assert valid.mean() >= 0.98
    assert n_changed.mean() <= 4.0
    assert l2.mean() <= 0.80
    assert r.summary()["mean_features_changed"] == pytest.approx(n_changed.mean())


@pytest.mark.parametrize("num", [1, 3])
def test_immutable_bitwise_and_ranges_in_data_units(breast_cancer_table, num):
    b = breast_cancer_table
    d, x, t = b["data"], b["x"], b["targets"]
    names = list(d.feature_names)
    r = counterfactuals(b["gan"], b["model"], x, t, b["index"], x_train=b["x_train"], immutable=IMMUTABLE,
                        ranges=RANGES, feature_names=names, scaler=d.scaler, num=num)
    alts = r.alternatives  # (100, num, 30)
    assert alts.shape == (100, num, 30)
    fixed = [names.index(f) for f in IMMUTABLE]
    got = alts[:, :, fixed]
    want = np.repeat(x[:, None, fixed], num, 1)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    raw = d.scaler.inverse_transform(alts)  # data units, float64
    for f, (lo, hi) in RANGES.items():
        v = raw[..., names.index(f)]
        assert lo is None or v.min() >= lo, (f, v.min())
        assert hi is None or v.max() <= hi, (f, v.max())
    # the constraints bite: without them these features move
    free = counterfactuals(b["gan"], b["model"], x, t, b["index"], x_train=b["x_train"])
    assert np.any(free.counterfactuals[:, fixed] != x[:, fixed])
    valid = _predict(b["model"], alts) == t[:, None]
    np.testing.assert_array_equal(r.alternatives_valid, valid)
    print(f"\nimmutable + ranges, num={num}: validity {100 * valid[:, 0].mean():.0f}%, "
          f"{np.sum(r.counterfactuals != x, 1).mean():.2f} features")
    assert valid[:, 0].mean() >= 0.95


def test_three_valid_pairwise_different(breast_cancer_table):
    b = breast_cancer_table
    x, t = b["x"], b["targets"]
    r = counterfactuals(b["gan"], b["model"], x, t, b["index"], x_train=b["x_train"], num=3)
    alts = r.alternatives
    valid = _predict(b["model"], alts) == t[:, None]
    different = np.ones(len(x), bool)
    dists = []
    for i, j in ((0, 1), (0, 2), (1, 2)):
        different &= np.any(alts[:, i] != alts[:, j], -1)
        dists.append(np.linalg.norm(alts[:, i].astype(np.float64) - alts[:, j], axis=1))
    ok = valid.all(1) & different
    print(f"\nnum=3: {100 * ok.mean():.0f}% of inputs with three valid, pairwise different counterfactuals; "
          f"diversity {np.mean(dists):.3f}")
    assert ok.mean() >= 0.95
    np.testing.assert_allclose(r.diversity, np.mean(dists, 0), rtol=1e-6)
    assert r.summary()["all_valid_distinct_percent"] == pytest.approx(100 * ok.mean())


def test_unreachable_target_names_the_inputs(breast_cancer_table):
    b = breast_cancer_table
    d, x, t = b["data"], b["x"], b["targets"]
    names = list(d.feature_names)
    # every feature fixed but one, whose range is pinned to a narrow band: nothing can change the class
    keep = names[0]
    lo_raw = float(d.scaler.inverse_transform(x[:3])[:, 0].min())
    with pytest.raises(ValueError, match=r"no counterfactual reaches the target for input\(s\) 0 \(target"):
        counterfactuals(b["gan"], b["model"], x[:3], t[:3], b["index"], immutable=names[1:],
                        ranges={keep: (lo_raw, lo_raw * 1.001)}, feature_names=names, scaler=d.scaler)


def test_an_input_of_the_target_class_outside_a_range_comes_back_inside(breast_cancer_table):
    """Issue 32: an input already of the target class was returned unchanged and counted valid even
    when it violated ``ranges=`` ("mean area" 201.9 against 300-1500). Such an input is now searched
    like the others: it comes back within the range and of the target class; one inside every range
    is still returned as it is."""
    b = breast_cancer_table
    d, x = b["data"], b["x"]
    names = list(d.feature_names)
    j = names.index("mean area")
    pred = _predict(b["model"], x)
    raw = d.scaler.inverse_transform(x)[:, j]
    lo, hi = np.quantile(raw, 0.3), np.quantile(raw, 0.9)
    outside = np.flatnonzero((raw < lo) | (raw > hi))[:10]
    inside = np.flatnonzero((raw >= lo) & (raw <= hi))[:5]
    rows = np.concatenate([outside, inside])
    assert len(outside) >= 5 and len(inside) >= 3
    r = counterfactuals(b["gan"], b["model"], x[rows], pred[rows], b["index"], x_train=b["x_train"],
                        ranges={"mean area": (lo, hi)}, feature_names=names, scaler=d.scaler,
                        on_unreachable="keep")
    got = d.scaler.inverse_transform(r.counterfactuals)[:, j]
    n_out = len(outside)
    assert not r.unchanged[:n_out].any() and r.unchanged[n_out:].all()
    assert np.all((got >= lo) & (got <= hi)), got  # every counterfactual within the range
    np.testing.assert_array_equal(r.counterfactuals[n_out:], x[rows[n_out:]])
    assert r.valid.mean() >= 0.9
    np.testing.assert_array_equal(_predict(b["model"], r.counterfactuals) == pred[rows], r.valid)
