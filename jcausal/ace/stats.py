"""Input moments for interventional expectations (ACE paper, sections 4.2 and 4.6, appendix A.5).

One symmetric eigendecomposition of the data covariance serves every feature: with
``Sigma = V V^T`` the interventional covariance of feature ``i`` is
``Sigma_i = P_i Sigma P_i = (P_i V)(P_i V)^T``, ``P_i = I - e_i e_i^T`` (Corollary 2.1), i.e. the
factor with row ``i`` zeroed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.checks import feature_indices, require_int
from jcausal._src.xla import jit

__all__ = ["InputStats", "input_stats", "intervention_grid", "truncate", "with_domain"]


class InputStats(NamedTuple):
    """Moments and domain of the model's inputs (a pytree; passes through ``jit``).

    Fields:
      mean: ``(k,)`` data mean ``mu``.
      cov: ``(k, k)`` covariance of the empirical distribution (divides by ``n``).
      factor: ``(k, k)`` ``V`` with ``cov = V V^T``; column ``r`` is ``sqrt(lambda_r) u_r``, sorted
        by decreasing variance ``lambda_r`` (negative round-off eigenvalues clipped to 0).
      eigenvalues: ``(k,)`` the ``lambda_r``, decreasing.
      explained: ``(k,)`` cumulative explained-variance fraction of the first ``r + 1`` columns.
      low, high: ``(k,)`` per-feature intervention domain ``[low_i, high_i]``.
      count: ``()`` number of rows the moments were computed from (in the floating dtype).
    """

    mean: jax.Array
    cov: jax.Array
    factor: jax.Array
    eigenvalues: jax.Array
    explained: jax.Array
    low: jax.Array
    high: jax.Array
    count: jax.Array


@jit
def _batch_moments(x):
    mean = jnp.mean(x, axis=0)
    xc = x - mean[None, :]
    return mean, xc.T @ xc, jnp.min(x, axis=0), jnp.max(x, axis=0)


@jit
def _combine(a, b):
    """Chan, Golub & LeVeque (1979) pairwise update of (count, mean, M2, min, max); the count is
    carried in the floating dtype of the data."""
    na, ma, sa, lo_a, hi_a = a
    nb, mb, sb, lo_b, hi_b = b
    n = na + nb
    delta = mb - ma
    wb = nb / n
    mean = ma + delta * wb
    m2 = sa + sb + jnp.outer(delta, delta) * (na * wb)
    return n, mean, m2, jnp.minimum(lo_a, lo_b), jnp.maximum(hi_a, hi_b)


def _check_batch(x, k, where: str):
    if np.iscomplexobj(x):  # astype(float) would drop the imaginary part with a mere warning
        raise ValueError(f"X must hold real numbers; {where} is complex ({np.asarray(x).dtype})")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if x.ndim != 2:
        raise ValueError(f"X must be a 2-d array (rows, features); {where} has shape {x.shape}")
    if k is not None and x.shape[1] != k:
        raise ValueError(f"X: {where} has {x.shape[1]} features, earlier batches had {k}")
    if not bool(jnp.all(jnp.isfinite(x))):
        bad = np.argwhere(~np.isfinite(np.asarray(x)))[:3].tolist()
        raise ValueError(f"X contains NaN/inf ({where}, first at row/column {bad})")
    return x


def input_stats(X, *, low=None, high=None) -> InputStats:
    """Mean, covariance, covariance factor and intervention domain of the inputs.

    Args:
      X: ``(n, k)`` array, or an iterable of ``(n_b, k)`` batches for data that does not fit in
        memory; batches are combined with the pairwise (Chan et al.) update, which gives the same
        moments as the in-memory path up to round-off.
      low, high: ``(k,)`` or scalar domain bounds; default the data's per-feature min and max.

    Returns:
      :class:`InputStats` in the floating dtype of ``X`` (float64 needs ``jax_enable_x64``).

    Raises:
      ValueError: X not 2-d, NaN/inf in X, fewer than 2 rows, or ``low > high`` somewhere.

    A constant (zero-variance) feature is fine: its factor row is zero and its domain a point.

    Examples:
      >>> import numpy as np
      >>> from jcausal.ace import input_stats
      >>> X = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]], np.float32)
      >>> s = input_stats(X)
      >>> s.mean.tolist(), s.low.tolist(), s.high.tolist()
      ([2.0, 4.0], [0.0, 1.0], [4.0, 8.0])
      >>> bool(np.allclose(s.factor @ s.factor.T, np.cov(X.T, bias=True), atol=1e-5))
      True
    """
    if hasattr(X, "shape") and not isinstance(X, (list, tuple)):
        batches: Iterable = (X,)
    else:
        batches = X
    acc, k = None, None
    for j, xb in enumerate(batches):
        xb = _check_batch(xb, k, f"batch {j}" if j else "the data")
        k = xb.shape[1]
        if xb.shape[0] == 0:
            continue
        mean, m2, lo, hi = _batch_moments(xb)
        cur = (jnp.asarray(xb.shape[0], mean.dtype), mean, m2, lo, hi)
        acc = cur if acc is None else _combine(acc, cur)
    rows = 0 if acc is None else int(acc[0])
    if rows < 2:
        raise ValueError(f"X needs at least 2 rows to estimate a covariance, got {rows}")
    n, mean, m2, lo, hi = acc
    cov = m2 / n
    cov = 0.5 * (cov + cov.T)
    w, U = jnp.linalg.eigh(cov)
    w, U = jnp.clip(w[::-1], 0.0), U[:, ::-1]

    total = jnp.sum(w)
    explained = jnp.cumsum(w) / jnp.where(total > 0, total, 1.0)
    factor = U * jnp.sqrt(w)[None, :]
    # A constant feature (zero variance, exactly) has a zero factor row whatever round-off LAPACK
    # leaves in the eigenvectors (it is not exactly zero on every jax version).
    factor = jnp.where((jnp.diag(cov) > 0)[:, None], factor, 0.0)
    stats = InputStats(mean, cov, factor, w, explained, lo, hi, n)
    return with_domain(stats, low, high)


def with_domain(stats: InputStats, low=None, high=None) -> InputStats:
    """``stats`` with the intervention domain replaced where ``low`` / ``high`` (scalar or
    ``(k,)``) are given. Raises ``ValueError`` when ``low > high`` for some feature."""
    dt, shape = stats.mean.dtype, stats.mean.shape
    low = stats.low if low is None else jnp.broadcast_to(jnp.asarray(low, dt), shape)
    high = stats.high if high is None else jnp.broadcast_to(jnp.asarray(high, dt), shape)
    if bool(jnp.any(low > high)):
        raise ValueError(f"low > high for features {np.flatnonzero(np.asarray(low > high))[:10].tolist()}")
    return stats._replace(low=low, high=high)


def truncate(stats: InputStats, rank: int | float | None) -> tuple[jax.Array, float]:
    """The leading columns of the factor and the variance they leave out.

    Args:
      stats: from :func:`input_stats`.
      rank: ``None`` (all ``k`` columns), an int ``1 <= r <= k``, or a float in ``(0, 1]``: the
        fewest columns whose explained-variance fraction reaches it (e.g. 0.95).

    Returns:
      ``(V_r (k, r), discarded)`` where ``discarded = sum of the left-out eigenvalues`` =
      ``Tr(Sigma) - Tr(V_r V_r^T)``, which bounds the truncation error of
      ``1/2 Tr(H Sigma_i)`` by ``1/2 ||H||_2 * discarded``.

    Examples:
      >>> import numpy as np
      >>> from jcausal.ace import input_stats, truncate
      >>> X = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32) * np.float32([3, 1, 0.01])
      >>> V, kept = truncate(input_stats(X), 0.99)
      >>> V.shape
      (3, 2)
    """
    k = stats.factor.shape[0]
    if rank is None:
        r = k
    elif isinstance(rank, bool):
        raise TypeError("rank must be an int, a float fraction or None")
    elif isinstance(rank, (int, np.integer)):
        if not 1 <= rank <= k:
            raise ValueError(f"rank must be in [1, {k}] (the number of features), got {rank}")
        r = int(rank)
    elif isinstance(rank, (float, np.floating)):
        if not 0.0 < rank <= 1.0:
            raise ValueError(f"a fractional rank must be in (0, 1], got {rank}")
        explained = np.asarray(stats.explained)
        r = min(int(np.searchsorted(explained, rank - 1e-12)) + 1, k)
    else:
        raise TypeError(f"rank must be an int, a float fraction or None, got {type(rank).__name__}")
    discarded = float(np.sum(np.asarray(stats.eigenvalues)[r:]))
    return stats.factor[:, :r], discarded


def intervention_grid(stats: InputStats, num: int, features=None) -> jax.Array:
    """``num`` evenly spaced intervention values on each feature's domain, ``(F, num)``
    (Algorithm 1 of the ACE paper, appendix A.4.1).

    Examples:
      >>> import numpy as np
      >>> from jcausal.ace import input_stats, intervention_grid
      >>> s = input_stats(np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]], np.float32))
      >>> intervention_grid(s, 3).tolist()
      [[0.0, 2.0, 4.0], [1.0, 4.5, 8.0]]
    """
    require_int(num, "num")
    k = stats.mean.shape[0]
    idx = feature_indices(features, k)
    t = jnp.linspace(0.0, 1.0, num, dtype=stats.mean.dtype)
    lo, hi = stats.low[idx], stats.high[idx]
    return lo[:, None] + (hi - lo)[:, None] * t[None, :]
