"""Pad, batch and shard a set of independent points: the one driver loop every module shares.

Inside one compiled program: :func:`pad_points` and :func:`map_sharded`. Around compiled programs
(a host loop over a large batch, e.g. TRACER's layer outputs or counterfactual decoding):
:func:`map_chunks`, the one pad-and-chunk loop.

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

__all__ = ["make_mesh", "map_chunks", "map_sharded", "pad_points", "resolve_mesh"]


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


def map_chunks(fn: Callable, arrays: tuple, size: int, *, shrink: bool = False, progress: bool = False,
               desc: str | None = None, host: bool = True) -> Any:
    """``fn(*chunk)`` over consecutive chunks of ``size`` rows of ``arrays`` (a tuple of arrays, or
    ``None`` entries passed through, with the same leading length ``n >= 1``), concatenated.

    Every chunk has ``size`` rows: the last is padded by repeating its last row (valid work, never
    NaN), so a compiled ``fn`` compiles once; the padded rows' outputs are dropped. ``fn`` returns an
    array or a pytree of arrays whose leaves have the chunk as leading axis.

    Args:
      shrink: fewer than ``size`` rows in all: pad them to the next power of two instead (a few
        cached compilations; small batches do not pay for a full chunk).
      progress, desc: a tqdm bar over chunks.
      host: concatenate on the host (numpy); ``False``: on the device (``jax.numpy``).

    Returns:
      ``fn``'s output structure, each leaf with leading axis ``n``.
    """
    from tqdm.auto import tqdm

    n = next(a for a in arrays if a is not None).shape[0]
    require_int(size, "size")
    size = min(int(size), 1 << max(n - 1, 0).bit_length()) if shrink else int(size)
    xp = np if host else jax.numpy
    outs = []
    for s in tqdm(range(0, n, size), disable=not progress, desc=desc, leave=False):
        part = [None if a is None else a[s:s + size] for a in arrays]
        m = next(p for p in part if p is not None).shape[0]
        if m < size:
            part = [None if p is None else xp.concatenate([p, xp.repeat(p[-1:], size - m, 0)]) for p in part]
        got = fn(*part)
        outs.append(jax.tree.map(lambda o, m=m: (np.asarray(o) if host else o)[:m], got))
    return jax.tree.map(lambda *o: xp.concatenate(o), *outs)


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

