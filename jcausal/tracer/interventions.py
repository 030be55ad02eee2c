r"""Interventions on input features or image patches (TRACER section 3.2.1).

For an input ``x`` in ``R^d`` and an index set ``I``, the intervened input is

.. math::
    x'_i = b_i \text{ if } i \in I, \qquad x'_i = x_i \text{ otherwise},

with intervention values ``b`` (the paper's baseline): a constant, the data mean, a blurred copy of
``x``, or user values (:func:`intervention_values`; the ``baseline_kind`` argument picks one).
Index sets are flat indices into ``x.reshape(-1)``; all sets of one family have the same size
(single features: 1; square patches: ``size * size * channels``), so they form one ``(K, m)`` int
array and the ``K`` intervened inputs are built in one ``vmap``. The sets travel with the inputs
(:class:`Interventions`) so contributions can be mapped back to features.

The paper gives these values a neutral role (like the Shapley reference point) but no value; our
default is the constant 0 (black for MNIST, the absence of ink), and ``"mean"`` is offered for data
whose 0 is not neutral (standardised tabular data, where the mean *is* 0 after scaling).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.checks import require_finite, require_int
from jcausal._src.xla import jit

__all__ = [
    "INTERVENTION_KINDS",
    "Interventions",
    "blur",
    "feature_index_sets",
    "intervene",
    "intervention_values",
    "make_interventions",
    "membership",
    "patch_index_sets",
]

INTERVENTION_KINDS = ("constant", "mean", "blur", "values")


class Interventions(NamedTuple):
    """A batch of intervened copies of ONE input.

    Fields:
      inputs: ``(K, *x.shape)`` intervened inputs ``x'_k``.
      index_sets: ``(K, m)`` int32 flat indices ``I_k`` into ``x.reshape(-1)``.
      mask: ``(K, d)`` bool, ``mask[k, i] = i in I_k`` (``d = x.size``).
    """

    inputs: jax.Array
    index_sets: jax.Array
    mask: jax.Array


def feature_index_sets(d: int) -> np.ndarray:
    """Single-feature index sets ``[[0], [1], ..., [d-1]]``: ``(d, 1)`` int32."""
    if d < 1:
        raise ValueError(f"need at least one feature, got d={d}")
    return np.arange(d, dtype=np.int32)[:, None]


def patch_index_sets(shape, size: int, stride: int | None = None) -> np.ndarray:
    """Square patches of an image of ``shape`` ``(H, W)`` or ``(H, W, C)`` (all channels at once).

    Patches start at ``0, stride, 2*stride, ...`` while they fit; when ``H - size`` is not a multiple
    of ``stride`` a last patch flush with the border is added, so every pixel is covered.

    Returns:
      ``(P, size * size * C)`` int32 flat indices into the row-major flattened image.

    Raises:
      ValueError: non-image shape, ``size`` < 1 or larger than the image, ``stride`` < 1.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"patches need an image shape (H, W) or (H, W, C), got {shape}")
    H, W = shape[:2]
    C = shape[2] if len(shape) == 3 else 1
    stride = size if stride is None else int(stride)
    if size < 1 or size > min(H, W):
        raise ValueError(f"patch size {size} must be in [1, {min(H, W)}] for an image of shape {shape}")
    require_int(stride, "stride")

    def starts(n):
        s = list(range(0, n - size + 1, stride))
        return s if s[-1] == n - size else s + [n - size]

    idx = np.arange(H * W * C, dtype=np.int32).reshape(H, W, C)
    sets = [idx[r:r + size, c:c + size].reshape(-1) for r in starts(H) for c in starts(W)]
    return np.stack(sets)


def membership(index_sets: jax.Array, d: int) -> jax.Array:
    """``(K, m)`` index sets -> ``(K, d)`` bool mask."""
    index_sets = jnp.asarray(index_sets)
    return jax.vmap(lambda I: jnp.zeros((d,), bool).at[I].set(True))(index_sets)


def blur(x: jax.Array, sigma: float = 2.0) -> jax.Array:
    """Gaussian blur of ONE image ``(H, W)`` or ``(H, W, C)`` (separable, edge-padded, radius
    ``ceil(3 sigma)``); a vector input is returned unchanged (no neighbourhood to blur over)."""
    if x.ndim < 2:
        return x
    r = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k = jnp.asarray(k / k.sum(), x.dtype)
    img = x if x.ndim == 3 else x[..., None]
    pad = jnp.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")

    def conv1(v):
        return jnp.convolve(v, k, mode="valid")

    rows = jax.vmap(jax.vmap(conv1, in_axes=1, out_axes=1), in_axes=2, out_axes=2)(pad)   # along H
    out = jax.vmap(jax.vmap(conv1, in_axes=0, out_axes=0), in_axes=2, out_axes=2)(rows)  # along W
    return out.reshape(x.shape)


def intervention_values(x: jax.Array, kind: str = "constant", *, value=0.0,
                        sigma: float = 2.0) -> jax.Array:
    """The values ``b`` that interventions write into ONE input ``x``, same shape.

    Args:
      kind: ``"constant"`` (``b = value``, a scalar), ``"mean"`` (``value`` = the data mean, shape
        ``x.shape`` or scalar), ``"blur"`` (Gaussian blur of ``x`` with ``sigma`` pixels) or
        ``"values"`` (``value`` an array of ``x.shape``).

    Returns:
      ``b``, ``x.shape``.
    """
    x = jnp.asarray(x)
    if kind == "constant":
        if np.ndim(value) != 0:
            raise ValueError("a constant baseline needs a scalar value; use kind='values' for arrays")
        return jnp.full_like(x, value)
    if kind in ("mean", "values"):
        v = jnp.asarray(value, x.dtype)
        if v.shape not in ((), x.shape):
            raise ValueError(f"{kind} baseline of shape {v.shape} does not match the input {x.shape}")
        return jnp.broadcast_to(v, x.shape)
    if kind == "blur":
        return blur(x, sigma)
    raise ValueError(f"baseline kind must be one of {INTERVENTION_KINDS}, got {kind!r}")


def intervene(x: jax.Array, index_sets: jax.Array, b: jax.Array) -> jax.Array:
    """The ``K`` intervened copies of ONE input (pure, jittable).

    Args:
      x: the input, any shape (``d = x.size``).
      index_sets: ``(K, m)`` int flat indices.
      b: the intervention values (:func:`intervention_values`), ``x.shape``.

    Returns:
      ``(K, *x.shape)`` with ``x'_k = x`` except ``x'_k[I_k] = b[I_k]``.
    """
    xf, bf = x.reshape(-1), b.reshape(-1)
    return jax.vmap(lambda I: xf.at[I].set(bf[I]).reshape(x.shape))(index_sets)


def make_interventions(x, *, patch: int | None = None, stride: int | None = None,
                       baseline_kind: str = "constant", value=0.0, sigma: float = 2.0,
                       index_sets=None) -> Interventions:
    """Intervened copies of ONE input: single features (default), square patches (``patch``,
    ``stride``; image inputs ``(H, W)`` / ``(H, W, C)``) or explicit ``index_sets`` ``(K, m)``.

    Raises:
      ValueError: bad patch geometry, out-of-range indices, unknown baseline kind or shape, NaN/inf
        in ``x`` or in the baseline ``value``.
    """
    x = jnp.asarray(x)
    require_finite(x, "the input x", rows=None, fix="interventions on it would carry NaN through the model")
    if baseline_kind in ("constant", "mean", "values"):
        require_finite(value, f"the baseline value (baseline_kind={baseline_kind!r})", rows=None,
                       fix="pass finite baseline values")
    d = int(np.prod(x.shape))
    if index_sets is not None:
        sets = np.asarray(index_sets)
        if sets.ndim != 2 or sets.size == 0 or sets.min() < 0 or sets.max() >= d:
            raise ValueError(f"index_sets must be a non-empty (K, m) array of indices in [0, {d})")
        sets = sets.astype(np.int32)
    elif patch is not None:
        sets = patch_index_sets(x.shape, patch, stride)
    else:
        if stride is not None:
            raise ValueError("stride given without a patch size")
        sets = feature_index_sets(d)
    b = intervention_values(x, baseline_kind, value=value, sigma=sigma)
    sets = jnp.asarray(sets)
    return Interventions(_intervene_jit(x, sets, b), sets, membership(sets, d))


_intervene_jit = jit(intervene)
