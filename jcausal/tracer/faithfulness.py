"""Deletion / insertion faithfulness of a saliency map (beyond the paper; Petsiuk et al. 2018, RISE).

Features are ranked by saliency (most supporting first). **Deletion**: starting from ``x``, the top
``t`` fraction of features is set to the baseline and the target-class probability is tracked;
**insertion**: starting from the baseline, the top ``t`` fraction is restored from ``x``. The areas
under the curves over ``t`` in [0, 1] (trapezoid rule, ``steps + 1`` points) summarise them: a
faithful map has a *low* deletion AUC and a *high* insertion AUC. Ties are broken by feature index
(stable sort), so the score is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.checks import require_finite, require_int

__all__ = ["Faithfulness", "deletion_insertion"]


class Faithfulness(NamedTuple):
    """``deletion``/``insertion``: ``(steps + 1,)`` probability curves; ``*_auc``: scalars."""

    deletion: jax.Array
    insertion: jax.Array
    deletion_auc: jax.Array
    insertion_auc: jax.Array


def _auc(curve):
    return (jnp.sum(curve) - 0.5 * (curve[0] + curve[-1])) / (curve.shape[0] - 1)


def deletion_insertion(prob: Callable, x: jax.Array, saliency: jax.Array, target, *, steps: int = 28,
                       baseline: jax.Array | float = 0.0) -> Faithfulness:
    """Deletion and insertion curves for ONE input (pure; ``vmap`` over inputs).

    Args:
      prob: ``prob(x) -> (m,)`` class probabilities for ONE input (close over parameters outside jit
        only if they are small; otherwise wrap with ``functools.partial`` and pass them in).
      x: the input, any shape (``d = x.size``).
      saliency: ``x.size`` values (any shape), larger = more supporting.
      target: the class whose probability is tracked (int or 0-d int array).
      steps: curve resolution (``steps + 1`` points from 0 to all features).
      baseline: value(s) for removed features, scalar or ``x.shape``.

    Returns:
      :class:`Faithfulness`.
    """
    require_int(steps, "steps")
    d = int(np.prod(x.shape))
    if int(np.prod(jnp.shape(saliency))) != d:
        raise ValueError(f"saliency has {int(np.prod(jnp.shape(saliency)))} values for {d} features")
    # checked outside tracing only (under vmap/jit the values are unknown)
    require_finite(x, "the input x", rows=None)
    require_finite(saliency, "saliency", rows=None, fix="NaN scores have no place in the ranking")
    require_finite(baseline, "baseline", rows=None)
    xf = x.reshape(-1)
    bf = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape).reshape(-1)
    order = jnp.argsort(-saliency.reshape(-1), stable=True)
    rank = jnp.zeros((d,), jnp.int32).at[order].set(jnp.arange(d, dtype=jnp.int32))
    counts = jnp.round(jnp.linspace(0.0, d, steps + 1)).astype(jnp.int32)
    top = rank[None, :] < counts[:, None]  # (steps + 1, d): the first t features by saliency
    deleted = jnp.where(top, bf[None], xf[None]).reshape(-1, *x.shape)
    inserted = jnp.where(top, xf[None], bf[None]).reshape(-1, *x.shape)
    p_del = jax.vmap(prob)(deleted)[:, target]
    p_ins = jax.vmap(prob)(inserted)[:, target]
    return Faithfulness(p_del, p_ins, _auc(p_del), _auc(p_ins))
