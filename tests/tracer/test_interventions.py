"""Interventions: index sets, intervention values, batched intervened inputs (checked element by element)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jcausal.tracer.interventions import (
    blur,
    feature_index_sets,
    intervene,
    intervention_values,
    make_interventions,
    patch_index_sets,
)


def test_single_features_zero_one_entry_each():
    x = jnp.arange(1.0, 7.0, dtype=jnp.float32)
    iv = make_interventions(x)
    assert iv.inputs.shape == (6, 6) and iv.index_sets.shape == (6, 1)
    np.testing.assert_array_equal(np.asarray(iv.inputs), np.asarray(x)[None] * (1 - np.eye(6)))
    np.testing.assert_array_equal(np.asarray(iv.mask), np.eye(6, dtype=bool))


def test_patches_size_stride_cover_and_values():
    x = jnp.asarray(np.random.default_rng(0).random((7, 7, 2)), jnp.float32)
    sets = patch_index_sets(x.shape, 3, 2)
    assert sets.shape == (9, 18)  # starts 0, 2, 4 per axis -> 3 x 3 patches
    mask = np.zeros((9, 98), bool)
    for k, s in enumerate(sets):
        mask[k, s] = True
    assert mask.any(0).all()  # every pixel and channel covered
    # flush-border patch when (H - size) % stride != 0
    assert patch_index_sets((8, 8), 3, 2).shape == (16, 9)
    iv = make_interventions(x, patch=3, stride=2, baseline_kind="constant", value=-1.0)
    ref = np.asarray(x).copy()
    ref[2:5, 4:7, :] = -1.0  # patch k = row-start 2, col-start 4 -> index 1 * 3 + 2
    np.testing.assert_array_equal(np.asarray(iv.inputs[5]), ref)
    np.testing.assert_array_equal(np.asarray(iv.mask), mask)


def test_baselines_mean_values_blur():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.random((6, 6)), jnp.float32)
    mu = jnp.asarray(rng.random((6, 6)), jnp.float32)
    iv = make_interventions(x, patch=2, stride=2, baseline_kind="mean", value=mu)
    k = 4  # row-start 2, col-start 2
    got, ref = np.asarray(iv.inputs[k]), np.asarray(x).copy()
    ref[2:4, 2:4] = np.asarray(mu)[2:4, 2:4]
    np.testing.assert_array_equal(got, ref)
    # blur: a constant image is unchanged; a delta spreads to a normalised Gaussian
    np.testing.assert_allclose(np.asarray(blur(jnp.full((9, 9), 0.3, jnp.float32), 1.0)), 0.3, atol=1e-6)
    delta = jnp.zeros((15, 15), jnp.float32).at[7, 7].set(1.0)
    b = np.asarray(blur(delta, 1.0))
    assert b.sum() == pytest.approx(1.0, abs=1e-5)
    t = np.arange(-3, 4)
    g = np.exp(-0.5 * t**2)
    g /= g.sum()
    np.testing.assert_allclose(b[4:11, 4:11], np.outer(g, g), atol=1e-6)
    vals = jnp.full((6, 6), 9.0, jnp.float32)
    out = intervene(x, jnp.asarray([[0, 7]]), intervention_values(x, "values", value=vals))
    assert float(out[0, 0, 0]) == 9.0 and float(out[0, 1, 1]) == 9.0 and float(out[0, 0, 1]) == float(x[0, 1])


def test_bad_input():
    with pytest.raises(ValueError, match="patch size"):
        patch_index_sets((5, 5), 6)
    with pytest.raises(ValueError, match="stride"):
        patch_index_sets((5, 5), 2, 0)
    with pytest.raises(ValueError, match="image shape"):
        patch_index_sets((25,), 2)
    with pytest.raises(ValueError, match="baseline kind"):
        make_interventions(jnp.ones(3), baseline_kind="noise")
    with pytest.raises(ValueError, match="does not match"):
        make_interventions(jnp.ones(3), baseline_kind="values", value=jnp.ones(4))
    with pytest.raises(ValueError, match="index_sets"):
        make_interventions(jnp.ones(3), index_sets=[[3]])
    with pytest.raises(ValueError):
        feature_index_sets(0)
