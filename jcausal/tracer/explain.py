"""The local TRACER analysis of ONE input: interventions -> layer outputs -> CKA -> graph -> contributions.

A convenience layer over the pure pieces (:mod:`interventions`, :mod:`activations`, :mod:`cka`,
:mod:`graph`). CKA is computed between the layers over the ``K + 1`` inputs {x, x'_1 .. x'_K}
(section 4.1: "comparing activations produced by the original input and its interventions"), so it
measures whether two layers respond to the interventions in the same way.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jcausal._src.checks import nonfinite_counts, require_finite
from jcausal.tracer.activations import LayerOutputs, activations, detect_randomness, layer_outputs
from jcausal.tracer.cka import cka_matrix
from jcausal.tracer.graph import CausalGraph, NodeContribution, causal_graph, node_contribution
from jcausal.tracer.interventions import Interventions, make_interventions

__all__ = ["TracerResult", "trace"]


class TracerResult(NamedTuple):
    """The local analysis of one input.

    Fields:
      graph: the :class:`CausalGraph`.
      contributions: one :class:`NodeContribution` per node.
      probs: ``(m,)`` class probabilities of the original input; target: the explained class.
      delta_out: ``(K,)`` drop of ``probs[target]`` under each intervention.
      interventions: the :class:`Interventions` used.
    """

    graph: CausalGraph
    contributions: tuple[NodeContribution, ...]
    probs: np.ndarray
    target: int
    delta_out: np.ndarray
    interventions: Interventions

    def to_dict(self) -> dict[str, Any]:
        return {"graph": self.graph.to_dict(), "target": self.target,
                "probability": float(self.probs[self.target]),
                "nodes": [{"node": c.node, "layer": c.layer, "top_units": list(c.units),
                           "positive": float(np.sum(np.clip(c.features, 0, None))),
                           "negative": float(np.sum(np.clip(c.features, None, 0)))}
                          for c in self.contributions]}


def _check_finite_activations(acts) -> None:
    """The first layer (in execution order), or else the output, that is NaN/inf on the batch
    ``[x, x'_1 .. x'_K]``: a ValueError saying where (at ``x`` itself, under how many interventions)."""
    for name, v in (*zip(acts.names, acts.values), ("<output>", acts.output)):
        rows, _ = nonfinite_counts(v)
        if rows:
            at_x = nonfinite_counts(v[:1])[0] > 0
            where = ("at the input x" if at_x else "") + (" and " if at_x and rows > 1 else "") + (
                f"under {rows - at_x} of the {v.shape[0] - 1} interventions" if rows > at_x else "")
            what = "the model's output" if name == "<output>" else f"layer {name!r}"
            raise ValueError(f"{what} is NaN/inf {where}: the model overflows or produces NaN there "
                             "(check its weights and the input scale); TRACER needs finite activations")


def trace(model: nnx.Module | LayerOutputs, x, *, layers=None, eps: float = 0.05, kernel: str = "linear",
          target: int | None = None, top: int | None = None, batch_size: int = 64, randomness_keys=None,
          **interventions) -> TracerResult:
    """TRACER's local causal analysis of ONE input ``x``.

    Args:
      model: an ``nnx.Module`` returning logits for ONE input, a :func:`jcausal.wrap` model (any
        framework; its output is taken as logits or probabilities, as it says), or a
        :class:`LayerOutputs` (reuse one across inputs: it is traced once).
      x: the input.
      layers: layer filter (names / patterns / predicate).
      eps: merge threshold in [0, 1).
      kernel: CKA kernel.
      target: class to explain (default: the predicted one).
      top: units per node (default 1 filter / 3 dense units).
      batch_size: inputs per compiled step.
      randomness_keys: optional pair of keys; the layers with internal randomness are then detected
        and stored in ``graph.exogenous`` (needs the model, not a ``LayerOutputs``; only an NNX
        model's call takes a key).
      interventions: the keywords of :func:`jcausal.tracer.make_interventions` (``patch``,
        ``stride``, ``baseline_kind``, ``value``, ``sigma``, ``index_sets``; default: each feature
        alone, set to 0).

    Returns:
      :class:`TracerResult`.

    Raises:
      ValueError: ``eps`` outside [0, 1), a target out of range, NaN/inf in ``x`` or the baseline
        ``value``, or a model whose layers or output are NaN/inf on ``x`` or its interventions (the
        message names the first such layer in execution order).
    """
    eps = float(eps)
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be in [0, 1), got {eps}")
    x = jnp.asarray(x)
    require_finite(x, "the input x", rows=None, fix="interventions on it would carry NaN through the model")
    lo = model if isinstance(model, LayerOutputs) else layer_outputs(model, x, layers=layers)
    iv = make_interventions(x, **interventions)
    batch = jnp.concatenate([x[None], iv.inputs])
    acts = activations(lo, batch, batch_size=batch_size)
    _check_finite_activations(acts)
    out = acts.output.astype(jnp.float32)
    probs = np.asarray(out if lo.probabilities else jax.nn.softmax(out, axis=-1))  # never softmaxed twice
    target = int(np.argmax(probs[0])) if target is None else int(target)
    if not 0 <= target < probs.shape[1]:
        raise ValueError(f"target {target} outside [0, {probs.shape[1]})")
    delta_out = probs[0, target] - probs[1:, target]
    cka = np.asarray(cka_matrix(acts.values, kernel=kernel, names=acts.names))
    exo = ()
    if randomness_keys is not None:
        if isinstance(model, LayerOutputs):
            raise ValueError("randomness_keys= needs the model itself, not a LayerOutputs")
        exo = detect_randomness(model, x, *randomness_keys).sources
    graph = causal_graph(cka, acts.names, eps, exo)
    contribs = tuple(
        node_contribution(g, acts.names[grp[-1]], acts.values[grp[-1]], delta_out, iv.mask, top=top)
        for g, grp in enumerate(graph.groups))
    return TracerResult(graph, contribs, probs[0], target, delta_out, iv)
