"""The global view (TRACER section 4.4, appendix C).

The global view is the local analysis (interventions -> CKA -> graph) over a sample of inputs, drawn per
class by default (appendix C: "random sampling within all classes suffices"); inputs are grouped by
their causal mechanism -- the graph's structure (groups of layer names and links) -- and each
mechanism's **coverage** is the percentage of analysed inputs it explains (Figure 9), so coverages sum
to 100%. ``coverage_by_nodes[k]`` is the cumulative coverage of mechanisms with at most ``k`` nodes
(the paper's "85% with 2 nodes, 99% with 3, 100% with 4"). The CKA matrices of a chunk of inputs are
computed in one compiled, vmapped call.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jcausal._src.batching import map_chunks
from jcausal._src.checks import require_finite, require_int
from jcausal._src.xla import jit
from jcausal.tracer.activations import LayerOutputs, layer_outputs
from jcausal.tracer.cka import cka_matrix_unchecked
from jcausal.tracer.graph import CausalGraph, causal_graph
from jcausal.tracer.interventions import intervene, intervention_values, patch_index_sets

__all__ = ["GlobalView", "Mechanism", "global_view", "sample_per_class", "summarize_mechanisms"]


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
    require_int(per_class, "per_class")
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


def _patches(*, patch: int = 4, stride: int | None = None, baseline_kind: str = "constant", value=0.0):
    """The intervention keywords of :func:`global_view` with their defaults (unknown ones refused)."""
    return patch, stride, baseline_kind, value


def global_view(model: nnx.Module | LayerOutputs, X, labels=None, *, per_class: int | None = 20,
                layers=None, eps: float = 0.05, kernel: str = "linear", chunk: int = 8, seed: int = 0,
                progress: bool = True, **interventions) -> GlobalView:
    """The TRACER global view over a sample of images ``X`` ``(N, H, W[, C])``.

    Args:
      model: an ``nnx.Module`` (logits) or a :class:`LayerOutputs`.
      X: inputs; labels: ``(N,)`` classes used for per-class sampling (else the predictions are).
      per_class: inputs per class (``None``: all rows of ``X``).
      layers, eps, kernel: as in :func:`jcausal.tracer.trace`.
      chunk: inputs analysed per compiled call.
      seed: sampling seed; progress: progress bar.
      interventions: ``patch`` (default 4), ``stride``, ``baseline_kind`` (``"constant"``) and
        ``value`` (0) as in :func:`jcausal.tracer.make_interventions` (patches only: the global view
        is for images).

    Returns:
      :class:`GlobalView`; coverages sum to 100%.
    """
    patch, stride, baseline_kind, value = _patches(**interventions)
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
    value = jnp.asarray(value, X.dtype)
    ckas, out = map_chunks(lambda rows: run(lo.params, X[rows], sets, value), (idx,), chunk,
                           progress=progress, desc="global view")
    graphs = [causal_graph(c, lo.names, eps) for c in ckas]
    preds = [int(p) for p in np.argmax(out, -1)]
    mechs, assignment, by_nodes = summarize_mechanisms(graphs, preds)
    return GlobalView(mechs, assignment, idx, np.array(preds),
                      None if labels is None else np.asarray(labels)[idx], by_nodes, tuple(graphs))


def _chunk_runner(apply, kernel, baseline_kind):
    @jit
    def run(params, xs, sets, value):
        def one(x):
            b = intervention_values(x, baseline_kind, value=value) if baseline_kind != "constant" else \
                jnp.full_like(x, value)
            batch = jnp.concatenate([x[None], intervene(x, sets, b)])
            out, acts = jax.vmap(lambda z: apply(params, z))(batch)
            sigma = jnp.asarray(0.8, jnp.float32)
            return cka_matrix_unchecked(list(acts), sigma, kernel=kernel, unbiased=False), out[0]

        return jax.lax.map(one, xs)

    return run
