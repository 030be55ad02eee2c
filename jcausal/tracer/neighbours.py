"""Exact nearest training instance of a target class (the ``x_nn`` of TRACER's counterfactual GAN,
section 3.3): a per-class padded index, a float32 shortlist re-ranked exactly, and the float64
brute-force reference."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.checks import class_indices
from jcausal._src.xla import jit

__all__ = ["NNIndex", "nn_index", "nearest", "brute_force_nearest"]


class NNIndex(NamedTuple):
    """Training instances grouped by class, padded to one shape (one compiled search for all classes).

    Fields:
      points: ``(k, m, d)`` float32, class ``c``'s flattened instances first, zeros after.
      sq_norms: ``(k, m)`` float32 squared norms, ``+inf`` on padding.
      rows: ``(k, m)`` int32 row in the training set, ``-1`` on padding.
      counts: ``(k,)`` numpy int, instances per class (0 for a class with none).
    """

    points: jax.Array
    sq_norms: jax.Array
    rows: jax.Array
    counts: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.counts.shape[0])


def nn_index(x, y, num_classes: int) -> NNIndex:
    """Build the per-class index once. ``x``: ``(n, ...)`` training inputs, ``y``: ``(n,)`` labels in
    ``[0, num_classes)``. A class without instances is allowed here; searching it raises."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty with equal lengths, got {len(x)} and {len(y)}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    counts = np.bincount(y, minlength=num_classes)
    m = max(int(counts.max()), 1)
    pts = np.zeros((num_classes, m, x.shape[1]), np.float32)
    sq = np.full((num_classes, m), np.inf, np.float32)
    rows = np.full((num_classes, m), -1, np.int32)
    for c in range(num_classes):
        r = np.flatnonzero(y == c)
        pts[c, :len(r)] = x[r]
        sq[c, :len(r)] = np.sum(np.square(x[r].astype(np.float64)), 1)
        rows[c, :len(r)] = r
    return NNIndex(jnp.asarray(pts), jnp.asarray(sq), jnp.asarray(rows), counts)


@jit(static_argnames=("candidates",))
def _search(points, sq_norms, rows, q, *, candidates: int):
    """Nearest of ``points`` (m, d) to each query ``q`` (b, d): the matrix-product form
    ``|p|^2 - 2 q.p`` shortlists ``candidates`` points, ranked again by direct differences."""
    approx = sq_norms[None, :] - 2.0 * (q @ points.T)
    _, cand = jax.lax.top_k(-approx, candidates)  # (b, c)
    diff = q[:, None, :] - points[cand]
    exact = jnp.where(rows[cand] >= 0, jnp.sum(diff * diff, -1), jnp.inf)
    best = jnp.argmin(exact, -1)
    pick = jnp.take_along_axis(cand, best[:, None], 1)[:, 0]
    return rows[pick], jnp.sqrt(jnp.take_along_axis(exact, best[:, None], 1)[:, 0])


def nearest(index: NNIndex, queries, targets, *, batch_size: int = 256, candidates: int = 16):
    """Exact nearest training instance of class ``targets[i]`` to ``queries[i]`` (Euclidean).

    A float32 matrix product shortlists ``candidates`` instances per query (batched on the
    accelerator, fixed padded shapes: one compilation), which are re-ranked by direct differences.

    Args:
      index: :func:`nn_index`; queries: ``(b, ...)`` (flattened to ``(b, d)``); targets: ``(b,)``.

    Returns:
      ``(rows, distances)``: ``(b,)`` int training-set rows and ``(b,)`` float Euclidean distances.

    Raises:
      ValueError: a target outside ``[0, k)``, a target class without training instances, or a
        query of the wrong size.
    """
    q = np.asarray(queries, np.float32).reshape(len(queries), -1)
    k, m, d = index.points.shape
    t = class_indices(targets, k)
    if q.shape[1] != d:
        raise ValueError(f"queries have {q.shape[1]} features, the index {d}")
    if len(t) != len(q):
        raise ValueError(f"{len(q)} queries but {len(t)} targets")
    if len(t) and (t.min() < 0 or t.max() >= k):
        raise ValueError(f"target classes must lie in [0, {k}), got [{t.min()}, {t.max()}]")
    empty = sorted({int(c) for c in t if index.counts[c] == 0})
    if empty:
        raise ValueError(f"class(es) {empty} have no training instances: no nearest neighbour exists")
    rows = np.zeros(len(t), np.int64)
    dist = np.zeros(len(t), np.float32)
    cand = int(min(candidates, m))
    bs = int(batch_size)
    for c in np.unique(t):
        sel = np.flatnonzero(t == c)
        for s in range(0, len(sel), bs):
            part = sel[s:s + bs]
            chunk = np.zeros((bs, d), np.float32)
            chunk[:len(part)] = q[part]
            r, dd = _search(index.points[c], index.sq_norms[c], index.rows[c], jnp.asarray(chunk),
                            candidates=cand)
            rows[part] = np.asarray(r)[:len(part)]
            dist[part] = np.asarray(dd)[:len(part)]
    return rows, dist


def brute_force_nearest(x_train, y_train, queries, targets):
    """The float64 reference: for each query, the row of ``x_train`` of class ``targets[i]`` at the
    smallest Euclidean distance, and that distance. ``(b,)``, ``(b,)``."""
    xt = np.asarray(x_train, np.float64).reshape(len(x_train), -1)
    yt = np.asarray(y_train).reshape(-1)
    q = np.asarray(queries, np.float64).reshape(len(queries), -1)
    rows, dist = [], []
    for qi, ti in zip(q, np.asarray(targets).reshape(-1)):
        r = np.flatnonzero(yt == ti)
        dd = np.sqrt(np.sum(np.square(xt[r] - qi), 1))
        rows.append(r[np.argmin(dd)])
        dist.append(dd.min())
    return np.asarray(rows), np.asarray(dist)
