"""TRACER's compression study (appendix C, Table 1).

A mechanism whose node holds several layers says these layers compute one representation; the
compressed model keeps the **last layer of every group** (the one whose output the next node reads)
and drops the others, then is retrained with the project's trainer. Spatial pooling of dropped
convolutions moves to the kept one, so the flattened width before the dense layers is unchanged. One
compressed model per distinct node count (the most common mechanism of that count), fewest nodes
first (the paper's C1, C2, C3); ``benchmarks/tracer_mnist.py`` runs the study.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jcausal._src.xla import jit
from jcausal.models.cnn import max_pool_2x2

__all__ = ["ConvSpec", "SpecNet", "alexnet_spec", "compress_spec", "model_stats"]


class ConvSpec(NamedTuple):
    """A plain CNN: ``convs`` of ``(channels, kernel, pools_after)``, ``dense`` hidden widths, then
    ``num_classes`` logits; ReLU after every hidden layer, dropout before hidden dense layers."""

    convs: tuple[tuple[int, int, int], ...]
    dense: tuple[int, ...]
    num_classes: int
    input_shape: tuple[int, int, int] = (28, 28, 1)
    dropout: float = 0.5


class SpecNet(nnx.Module):
    """The CNN described by a :class:`ConvSpec` (ONE image in, logits out; ``key`` drives dropout)."""

    def __init__(self, spec: ConvSpec, *, rngs: nnx.Rngs):
        h, w, c = spec.input_shape
        self.spec = spec
        convs, ch, pools = [], c, 0
        for out, k, p in spec.convs:
            convs.append(nnx.Conv(ch, out, (k, k), rngs=rngs))
            ch, pools = out, pools + p
        self.convs = nnx.List(convs)
        for _ in range(pools):
            h, w = h // 2, w // 2
        widths = (h * w * ch if spec.convs else h * w * c, *spec.dense, spec.num_classes)
        self.fcs = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
        self.dropout = nnx.Dropout(spec.dropout)

    def __call__(self, x, *, key=None):
        keys = [None] * len(self.fcs) if key is None else list(jax.random.split(key, len(self.fcs)))
        x = x.reshape(self.spec.input_shape)[None]
        for conv, (_, _, p) in zip(self.convs, self.spec.convs):
            x = jax.nn.relu(conv(x))
            for _ in range(p):
                x = max_pool_2x2(x)
        x = x.reshape(-1)
        for i, fc in enumerate(self.fcs[:-1]):
            x = self.dropout(x, deterministic=keys[i] is None, rngs=keys[i])
            x = jax.nn.relu(fc(x))
        return self.fcs[-1](x)


def alexnet_spec(num_classes: int = 10, input_shape=(28, 28, 1), dropout: float = 0.5) -> ConvSpec:
    """:class:`jcausal.models.AlexNetSmall` as a :class:`ConvSpec` (layers ``convs.0-4``, ``fcs.0-2``)."""
    return ConvSpec(((32, 5, 1), (64, 3, 1), (96, 3, 0), (96, 3, 0), (64, 3, 1)), (256, 128), num_classes,
                    tuple(input_shape), dropout)


def compress_spec(spec: ConvSpec, groups) -> ConvSpec:
    """Keep the last layer of every group (names ``convs.i`` / ``fcs.j`` as in
    :func:`alexnet_spec`); pools of dropped convs move to the next kept conv of the same group.

    Raises:
      ValueError: a name that is not ``convs.i`` / ``fcs.j`` of the spec.
    """
    n_conv, n_fc = len(spec.convs), len(spec.dense) + 1
    valid = {f"convs.{i}" for i in range(n_conv)} | {f"fcs.{j}" for j in range(n_fc)}
    keep = set()
    carry: dict[int, int] = {}
    for g in groups:
        g = list(g)
        bad = [n for n in g if n not in valid]
        if bad:
            raise ValueError(f"cannot compress: layers {bad} are not in the spec ({sorted(valid)})")
        keep.add(g[-1])
        pools = sum(spec.convs[int(n.split(".")[1])][2] for n in g if n.startswith("convs."))
        last_conv = max((int(n.split(".")[1]) for n in g if n.startswith("convs.")), default=None)
        if last_conv is not None:
            target = last_conv if f"convs.{last_conv}" in keep else None
            if target is None:  # the group ends in a dense layer: pools go to the last kept conv
                kept = [i for i in range(last_conv) if f"convs.{i}" in keep]
                target = kept[-1] if kept else -1
            carry[target] = carry.get(target, 0) + pools
    keep.add(f"fcs.{n_fc - 1}")
    convs = []
    for i, (c, k, _) in enumerate(spec.convs):
        if f"convs.{i}" in keep:
            convs.append((c, k, carry.get(i, 0)))
    if carry.get(-1) and convs:
        c, k, p = convs[0]
        convs[0] = (c, k, p + carry[-1])
    dense = tuple(w for j, w in enumerate(spec.dense) if f"fcs.{j}" in keep)
    return spec._replace(convs=tuple(convs), dense=dense)


def model_stats(model: nnx.Module, X, y, *, batch: int = 256, repeats: int = 5) -> dict[str, float]:
    """Table 1 columns for one model on ``(X, y)``: parameters (M), size (MB, float32 bytes), FLOPs
    per example (M, from XLA's cost analysis of the compiled forward pass), time per sample (ms, batch
    of ``batch``, median and std over ``repeats``) and accuracy (%)."""
    from jcausal.models import accuracy, functional

    apply, params = functional(model)
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    n_params = int(sum(np.prod(a.shape) for a in leaves))
    size = int(sum(np.prod(a.shape) * a.dtype.itemsize for a in leaves))
    X = jnp.asarray(X)
    one = jit(apply).lower(params, X[0]).compile().cost_analysis()
    one = one[0] if isinstance(one, (list, tuple)) else one
    flops = float(one.get("flops", float("nan")))
    fwd = jit(jax.vmap(apply, in_axes=(None, 0)))
    xb = X[:batch]
    jax.block_until_ready(fwd(params, xb))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fwd(params, xb))
        times.append((time.perf_counter() - t0) / xb.shape[0] * 1e3)
    acc = accuracy(apply, params, X, jnp.asarray(y))
    return {"params_M": n_params / 1e6, "params": n_params, "size_MB": size / 1e6, "flops_M": flops / 1e6,
            "ms_per_sample": float(np.median(times)), "ms_std": float(np.std(times)),
            "accuracy": 100.0 * acc}
