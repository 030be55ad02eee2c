"""Pad, batch and shard a set of independent points: the one driver loop every module shares.

A *point* is one unit of work (an ACE (feature, alpha) pair, a GCE latent sample, a TRACER
intervention). Points are stacked along a leading axis, padded to a multiple of
``devices x batch_size`` by repeating the first point (so padded work is valid work, never NaN),
mapped with ``jax.lax.map(..., batch_size=...)`` on each device (bounded memory, fixed shapes), and
split over a 1-D device mesh with ``jax.shard_map`` (replicated arguments go to every device).
The same code runs on 1 CPU, 8 GPUs or several hosts after ``jax.distributed.initialize``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jcausal._src.checks import require_int

__all__ = ["make_mesh", "resolve_mesh", "pad_points", "map_sharded"]


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh (axis ``"points"``) over ``devices`` (default: every device JAX sees, across
    hosts after ``jax.distributed.initialize``)."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 0:
        raise ValueError("devices is empty")
    return Mesh(np.asarray(devices), ("points",))


def resolve_mesh(devices=None, mesh: Mesh | None = None) -> Mesh | None:
    """The mesh to shard over: ``mesh`` if given, else one over ``devices`` (default all visible
    devices); ``None`` when that is a single device (run unsharded)."""
    if mesh is None and (devices is not None or len(jax.devices()) > 1):
        mesh = make_mesh(devices)
    if mesh is not None and mesh.devices.size == 1:
        return None
    return mesh


def pad_points(points: Any, n: int, batch_size: int, ndev: int = 1) -> tuple[Any, int]:
    """Pad every leaf of ``points`` (leading axis ``n``) to a multiple of ``ndev x bs`` by
    repeating point 0; returns ``(padded, bs)`` with ``bs = min(batch_size, ceil(n / ndev))``."""
    if n < 1:
        raise ValueError("no points to compute")
    require_int(batch_size, "batch_size")
    bs = max(1, min(int(batch_size), -(-n // ndev)))
    n_pad = -(-n // (ndev * bs)) * ndev * bs

    def pad(x):
        x = np.asarray(x)
        if n_pad == n:
            return x
        fill = np.repeat(x[:1], n_pad - n, axis=0)
        return np.concatenate([x, fill], axis=0)

    return jax.tree.map(pad, points), bs


MAX_UNROLL = 8  # batches of points compiled as straight-line code rather than a loop


def map_sharded(fn: Callable, replicated: Any, points: Any, *, batch_size: int,
                mesh: Mesh | None) -> Any:
    """``fn(replicated, point)`` for every point, batched with ``lax.map`` and sharded over
    ``mesh``. Call inside ``jit``; ``points`` must already be padded (:func:`pad_points`)."""

    def local(rep, pts):
        n = jax.tree.leaves(pts)[0].shape[0]
        nb = n // batch_size
        if n % batch_size or nb <= 1 or nb > MAX_UNROLL:
            return jax.lax.map(lambda pt: fn(rep, pt), pts, batch_size=batch_size)
        # a few batches: straight-line code (XLA:CPU runs convolutions inside a while loop's body
        # slower than unrolled)
        bp = jax.tree.map(lambda x: x.reshape((nb, batch_size) + x.shape[1:]), pts)
        _, out = jax.lax.scan(lambda c, b: (c, jax.vmap(lambda pt: fn(rep, pt))(b)), None, bp, unroll=nb)
        return jax.tree.map(lambda y: y.reshape((n,) + y.shape[2:]), out)

    if mesh is None:
        return local(replicated, points)
    ax = mesh.axis_names[0]
    rep_spec = jax.tree.map(lambda _: P(), replicated)
    pts_spec = jax.tree.map(lambda _: P(ax), points)
    out_shape = jax.eval_shape(local, replicated, jax.tree.map(lambda x: x[:1], points))
    out_spec = jax.tree.map(lambda _: P(ax), out_shape)
    return jax.shard_map(local, mesh=mesh, in_specs=(rep_spec, pts_spec), out_specs=out_spec,
                         check_vma=False)(replicated, points)

