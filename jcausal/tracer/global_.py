"""The global view (TRACER section 4.4, appendix C) and the compression study (Table 1).

Global view: the local analysis (interventions -> CKA -> graph) over a sample of inputs, drawn per
class by default (appendix C: "random sampling within all classes suffices"); inputs are grouped by
their causal mechanism -- the graph's structure (groups of layer names and links) -- and each
mechanism's **coverage** is the percentage of analysed inputs it explains (Figure 9), so coverages sum
to 100%. ``coverage_by_nodes[k]`` is the cumulative coverage of mechanisms with at most ``k`` nodes
(the paper's "85% with 2 nodes, 99% with 3, 100% with 4"). The CKA matrices of a chunk of inputs are
computed in one compiled, vmapped call.

Compression (appendix C): a mechanism whose node holds several layers says these layers compute one
representation; the compressed model keeps the **last layer of every group** (the one whose output
the next node reads) and drops the others, then is retrained with the project's trainer. Spatial
pooling of dropped convolutions moves to the kept one, so the flattened width before the dense layers
is unchanged. One compressed model per distinct node count (the most common mechanism of that count),
fewest nodes first (the paper's C1, C2, C3).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from jcausal._src.checks import require_finite
from jcausal._src.xla import jit
from jcausal.models.cnn import max_pool_2x2
from jcausal.tracer.activations import LayerOutputs, layer_outputs
from jcausal.tracer.cka import cka_matrix_unchecked
from jcausal.tracer.graph import CausalGraph, causal_graph
from jcausal.tracer.interventions import baseline as make_baseline
from jcausal.tracer.interventions import intervene, patch_index_sets

__all__ = [
    "ConvSpec",
    "GlobalView",
    "Mechanism",
    "SpecNet",
    "alexnet_spec",
    "compress_spec",
    "global_view",
    "model_stats",
    "sample_per_class",
    "summarize_mechanisms",
]


class Mechanism(NamedTuple):
    """One causal mechanism shared by several inputs.

    Fields:
      groups: node -> layer names; links: node pairs; num_nodes; count: inputs explained;
      coverage: ``100 * count / n`` (%); classes: ``{class: count}`` of the predicted classes.
    """

    groups: tuple[tuple[str, ...], ...]
    links: tuple[tuple[int, int], ...]
    num_nodes: int
    count: int
    coverage: float
    classes: dict[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [list(g) for g in self.groups], "links": [list(lk) for lk in self.links],
                "num_nodes": self.num_nodes, "count": self.count, "coverage": self.coverage,
                "classes": {str(k): v for k, v in sorted(self.classes.items())}}


class GlobalView(NamedTuple):
    """Mechanisms over a sample of inputs.

    Fields:
      mechanisms: sorted by coverage (descending).
      assignment: ``(n,)`` mechanism index of every analysed input.
      indices: ``(n,)`` row of each analysed input in the data given.
      predictions: ``(n,)`` predicted classes; labels: ``(n,)`` or ``None``.
      coverage_by_nodes: ``{k: % of inputs explained by mechanisms with <= k nodes}``.
      graphs: the per-input :class:`CausalGraph` objects.
    """

    mechanisms: tuple[Mechanism, ...]
    assignment: np.ndarray
    indices: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray | None
    coverage_by_nodes: dict[int, float]
    graphs: tuple[CausalGraph, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"n": int(len(self.assignment)), "mechanisms": [m.to_dict() for m in self.mechanisms],
                "coverage_by_nodes": {str(k): v for k, v in self.coverage_by_nodes.items()},
                "total_coverage": float(sum(m.coverage for m in self.mechanisms))}


def sample_per_class(labels, per_class: int, seed: int = 0) -> np.ndarray:
    """``per_class`` random rows of every class (fewer if a class has fewer), sorted."""
    labels = np.asarray(labels)
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    out = [rng.choice(np.flatnonzero(labels == c), min(per_class, int(np.sum(labels == c))), replace=False)
           for c in np.unique(labels)]
    return np.sort(np.concatenate(out))


def summarize_mechanisms(graphs, predictions) -> tuple[tuple[Mechanism, ...], np.ndarray, dict]:
    """Group graphs by :meth:`CausalGraph.signature`; returns mechanisms (by coverage), the
    assignment and the cumulative coverage by node count."""
    if not graphs:
        raise ValueError("no graphs to summarise")
    sigs = [g.signature() for g in graphs]
    counts = Counter(sigs)
    order = sorted(counts, key=lambda s: (-counts[s], len(s[0]), s))
    n = len(graphs)
    mechs = []
    for s in order:
        cls = Counter(int(p) for p, t in zip(predictions, sigs) if t == s)
        mechs.append(Mechanism(s[0], s[1], len(s[0]), counts[s], 100.0 * counts[s] / n, dict(cls)))
    assignment = np.array([order.index(s) for s in sigs])
    nodes = np.array([len(s[0]) for s in sigs])
    by_nodes = {int(k): float(100.0 * np.mean(nodes <= k)) for k in np.unique(nodes)}
    return tuple(mechs), assignment, by_nodes


def global_view(model: nnx.Module | LayerOutputs, X, labels=None, *, per_class: int | None = 20,
                layers=None, patch: int = 4, stride: int | None = None, baseline_kind: str = "constant",
                value=0.0, eps: float = 0.05, kernel: str = "linear", chunk: int = 8, seed: int = 0,
                progress: bool = True) -> GlobalView:
    """The TRACER global view over a sample of images ``X`` ``(N, H, W[, C])``.

    Args:
      model: an ``nnx.Module`` (logits) or a :class:`LayerOutputs`.
      X: inputs; labels: ``(N,)`` classes used for per-class sampling (else the predictions are).
      per_class: inputs per class (``None``: all rows of ``X``).
      layers, patch, stride, baseline_kind, value, eps, kernel: as in
        :func:`jcausal.tracer.explain` (patches only: the global view is for images).
      chunk: inputs analysed per compiled call.
      seed: sampling seed; progress: progress bar.

    Returns:
      :class:`GlobalView`; coverages sum to 100%.
    """
    X = jnp.asarray(X)
    require_finite(X, "X", rows="images", fix="drop them or fix their pixels")
    require_finite(value, "the baseline value", rows=None, fix="pass finite baseline values")
    lo = model if isinstance(model, LayerOutputs) else layer_outputs(model, X[0], layers=layers)
    sets = jnp.asarray(patch_index_sets(X.shape[1:], patch, stride))
    if labels is None and per_class is not None:
        labels = np.asarray(jnp.argmax(jax.vmap(lambda x: lo.apply(lo.params, x)[0])(X[:2048]), -1))
        X = X[:2048]
    idx = np.arange(X.shape[0]) if per_class is None else sample_per_class(labels, per_class, seed)
    if len(idx) < 1:
        raise ValueError("no inputs to analyse")
    run = _chunk_runner(lo.apply, kernel, baseline_kind)
    graphs, preds = [], []
    pad = (-len(idx)) % chunk
    padded = np.concatenate([idx, np.repeat(idx[-1:], pad)])
    value = jnp.asarray(value, X.dtype)
    for s in tqdm(range(0, len(padded), chunk), disable=not progress, desc="global view", leave=False):
        rows = padded[s:s + chunk]
        ckas, out = run(lo.params, X[rows], sets, value)
        ckas, out = np.asarray(ckas), np.asarray(out)
        for j in range(len(rows)):
            if s + j < len(idx):
                graphs.append(causal_graph(ckas[j], lo.names, eps))
                preds.append(int(np.argmax(out[j])))
    mechs, assignment, by_nodes = summarize_mechanisms(graphs, preds)
    return GlobalView(mechs, assignment, idx, np.array(preds),
                      None if labels is None else np.asarray(labels)[idx], by_nodes, tuple(graphs))


def _chunk_runner(apply, kernel, baseline_kind):
    @jit
    def run(params, xs, sets, value):
        def one(x):
            b = make_baseline(x, baseline_kind, value=value) if baseline_kind != "constant" else \
                jnp.full_like(x, value)
            batch = jnp.concatenate([x[None], intervene(x, sets, b)])
            out, acts = jax.vmap(lambda z: apply(params, z))(batch)
            sigma = jnp.asarray(0.8, jnp.float32)
            return cka_matrix_unchecked(list(acts), sigma, kernel=kernel, unbiased=False), out[0]

        return jax.lax.map(one, xs)

    return run


# --------------------------------------------------------------------------- compression study


class ConvSpec(NamedTuple):
    """A plain CNN: ``convs`` of ``(channels, kernel, pools_after)``, ``dense`` hidden widths, then
    ``num_classes`` logits; ReLU after every hidden layer, dropout before hidden dense layers."""

    convs: tuple[tuple[int, int, int], ...]
    dense: tuple[int, ...]
    num_classes: int
    input_shape: tuple[int, int, int] = (28, 28, 1)
    dropout: float = 0.5


class SpecNet(nnx.Module):
    """The CNN described by a :class:`ConvSpec` (ONE image in, logits out; ``key`` drives dropout).

    It lives here, not in ``jcausal.models``, because that package is not ours to edit; it is the
    generic building block a compressed AlexNet needs and could move there."""

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
