"""Entry-point checks: counts against a numpy reference, on numpy and jax arrays."""

import jax.numpy as jnp
import numpy as np
import pytest

from jcausal._src.checks import class_indices, nonfinite_counts, require_finite


def test_counts_match_numpy_on_host_and_device():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(7, 3, 2)).astype(np.float32)
    A[1, 0, 0], A[1, 2, 1], A[5, 1, 0] = np.nan, np.inf, -np.inf
    bad = ~np.isfinite(A)
    ref = (int(bad.reshape(7, -1).any(1).sum()), int(bad.sum()))
    assert ref == (2, 3)
    assert nonfinite_counts(A) == ref and nonfinite_counts(jnp.asarray(A)) == ref
    assert nonfinite_counts(np.arange(6).reshape(2, 3)) == (0, 0)  # integers are always finite
    assert nonfinite_counts(np.float32(np.nan)) == (1, 1) and nonfinite_counts(np.zeros((0, 3))) == (0, 0)
    msg = r"^A holds NaN/inf: 3 non-finite entries in 2 of its 7 rows; fix it$"
    with pytest.raises(ValueError, match=msg):
        require_finite(A, "A", fix="fix it")
    with pytest.raises(ValueError, match=r"^a holds NaN/inf: 3 non-finite entries of 42$"):
        require_finite(jnp.asarray(A), "a", rows=None)
    require_finite(np.nan_to_num(A), "A")


def test_class_indices():
    np.testing.assert_array_equal(class_indices(np.array([0.0, 2.0]), 3), [0, 2])
    assert class_indices([], 3).dtype == np.int64
    with pytest.raises(ValueError, match=r"y\[2\] = 0.5 is not a whole number"):
        class_indices([1, 2, 0.5], 3, name="y")
    with pytest.raises(ValueError, match=r"targets\[0\] = inf is not a whole number"):
        class_indices([np.inf], 3)
