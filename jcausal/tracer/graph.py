r"""Causal nodes and links from merged CKA, and signed per-node feature contributions (TRACER 3.2.2, 4.1).

Merged CKA (section 3.2.2): ``M_ij = 1`` if ``CKA_ij >= 1 - eps``. A **layer group** is a run of
adjacent layers that are *mutually* merged (every pair in the run, not only neighbours: a chain of
slowly drifting layers is not one representation); groups are grown greedily in execution order.
Each group is a **causal node**. **Links**: every pair of adjacent groups (the forward pass), plus
non-adjacent groups containing a merged pair of layers (strong similarity across the chain: a skip
in the mechanism). The paper asks for "filtered or merged" values; we use the merged matrix so a
link means exactly what membership in a group means, with one threshold.

Signed feature contributions per node (section 4.1 gives the goal -- blue supports the decision,
red opposes it -- and the unit of display -- the top conv filter, or the top-3 units of a dense
node -- but no formula). We use only the interventions, so the method stays black-box at the
output and needs no gradients. For intervention ``k`` (index set ``I_k``), let

.. math::
    \Delta_k = p_c(x) - p_c(x'_k), \qquad \delta_{k,u} = a_u(x) - a_u(x'_k)

be the drop of the decided class's probability and of unit ``u`` of the node's representative
(last) layer; a conv unit is a filter, its change summed over positions. The slope
``beta_u = cov_k(delta_u, Delta) / var_k(delta_u)`` says how the unit's response carries the decision;
``score_u = cov_k(delta_u, Delta)^2 / var_k(delta_u)`` is the decision variance it explains, and the
top units are those with the largest score. The contribution of intervention ``k`` through the node
is ``c_k = sum_{u in top} beta_u delta_{k,u}`` (the part of ``Delta_k`` the node's top units
explain), and a feature's contribution is the mean of ``c_k`` over the interventions that contain
it. Positive: removing the feature lowers the decision through this node (it supports it).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.checks import require_finite
from jcausal._src.xla import jit

__all__ = [
    "CausalGraph",
    "NodeContribution",
    "causal_graph",
    "causal_links",
    "feature_contributions",
    "layer_groups",
    "merge_cka",
    "node_contribution",
    "unit_effects",
]


def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be in [0, 1), got {eps}")
    return eps


def merge_cka(cka: np.ndarray, eps: float) -> np.ndarray:
    """``(L, L)`` CKA -> ``(L, L)`` bool merged matrix ``CKA >= 1 - eps`` (diagonal True)."""
    eps = _check_eps(eps)
    cka = np.asarray(cka, np.float64)
    if cka.ndim != 2 or cka.shape[0] != cka.shape[1]:
        raise ValueError(f"cka must be a square (L, L) matrix, got shape {cka.shape}")
    require_finite(cka, "the CKA matrix", rows="rows",
                   fix="NaN never merges, so layers would split silently; compute CKA on finite activations")
    m = cka >= 1.0 - eps - 1e-7  # float32 CKA of identical layers can read 0.9999999
    np.fill_diagonal(m, True)
    return m


def layer_groups(merged: np.ndarray) -> tuple[tuple[int, ...], ...]:
    """Runs of adjacent, mutually merged layers (greedy in execution order): tuple of index tuples."""
    merged = np.asarray(merged, bool)
    groups: list[list[int]] = []
    for k in range(merged.shape[0]):
        if groups and all(merged[k, j] and merged[j, k] for j in groups[-1]):
            groups[-1].append(k)
        else:
            groups.append([k])
    return tuple(tuple(g) for g in groups)


def causal_links(groups, merged: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Links ``(a, b)``, ``a < b``: adjacent groups, and groups with a merged pair of layers."""
    merged = np.asarray(merged, bool)
    links = []
    for a in range(len(groups)):
        for b in range(a + 1, len(groups)):
            if b == a + 1 or merged[np.ix_(groups[a], groups[b])].any():
                links.append((a, b))
    return tuple(links)


@dataclasses.dataclass(frozen=True)
class CausalGraph:
    """The causal mechanism of one input: layer groups (nodes) and links.

    Fields:
      layer_names: ``L`` layer names in execution order.
      cka: ``(L, L)`` CKA between the layers over the original and intervened inputs.
      eps: the merge threshold.
      groups: node -> tuple of layer indices.
      links: tuple of ``(a, b)`` node pairs.
      exogenous: names of layers with internal randomness (section 3.1), if detected.

    A pytree (``cka`` is the only leaf); :meth:`to_dict` gives plain JSON-able data and
    :meth:`signature` a hashable description of the mechanism (used to group inputs globally).
    """

    layer_names: tuple[str, ...]
    cka: np.ndarray
    eps: float
    groups: tuple[tuple[int, ...], ...]
    links: tuple[tuple[int, int], ...]
    exogenous: tuple[str, ...] = ()

    @property
    def merged(self) -> np.ndarray:
        return merge_cka(self.cka, self.eps)

    @property
    def num_nodes(self) -> int:
        return len(self.groups)

    def node_names(self) -> list[list[str]]:
        return [[self.layer_names[i] for i in g] for g in self.groups]

    def signature(self) -> tuple:
        return (tuple(tuple(g) for g in self.node_names()), self.links)

    def to_dict(self) -> dict:
        return {"layers": list(self.layer_names), "eps": self.eps,
                "cka": np.asarray(self.cka, np.float64).round(6).tolist(),
                "groups": self.node_names(), "links": [list(lk) for lk in self.links],
                "exogenous": list(self.exogenous)}


jax.tree_util.register_dataclass(
    CausalGraph, data_fields=["cka"], meta_fields=["layer_names", "eps", "groups", "links", "exogenous"])


def causal_graph(cka, layer_names, eps: float = 0.05, exogenous=()) -> CausalGraph:
    """Nodes and links from a ``(L, L)`` CKA matrix (see the module docstring).

    Raises:
      ValueError: ``eps`` outside [0, 1), a non-square matrix, or ``len(layer_names) != L``.
    """
    merged = merge_cka(cka, eps)
    if len(layer_names) != merged.shape[0]:
        raise ValueError(f"{len(layer_names)} layer names for a {merged.shape} CKA matrix")
    groups = layer_groups(merged)
    return CausalGraph(tuple(layer_names), np.asarray(cka), float(eps), groups,
                       causal_links(groups, merged), tuple(exogenous))


class NodeContribution(NamedTuple):
    """Signed feature contributions of one causal node.

    Fields:
      node: the node index; layer: its representative (last) layer.
      units: the top units (filter index for conv layers, flat unit indices for dense ones).
      scores: ``(U,)`` decision variance explained by each unit (``cov^2 / var``).
      slopes: ``(U,)`` ``beta_u``.
      per_intervention: ``(K,)`` ``c_k``.
      features: ``(d,)`` signed per-feature contribution (mean of ``c_k`` over sets containing it).
    """

    node: int
    layer: str
    units: tuple[int, ...]
    scores: np.ndarray
    slopes: np.ndarray
    per_intervention: np.ndarray
    features: np.ndarray


def unit_effects(acts: jax.Array) -> jax.Array:
    """``(K+1, *shape)`` activations (row 0 = original) -> ``(K, U)`` unit changes ``a(x) - a(x'_k)``;
    rank >= 3 per-example shapes ``(..., H, W, C)`` are conv maps: ``U = C``, summed over positions."""
    acts = jnp.asarray(acts, jnp.float32)
    d = acts[:1] - acts[1:]
    if acts.ndim >= 4:
        return jnp.sum(d.reshape(d.shape[0], -1, d.shape[-1]), axis=1)
    return d.reshape(d.shape[0], -1)


@jit
def _slopes(delta_units, delta_out):
    du = delta_units - jnp.mean(delta_units, axis=0, keepdims=True)
    do = delta_out - jnp.mean(delta_out)
    cov = du.T @ do / du.shape[0]
    var = jnp.mean(du * du, axis=0)
    ok = var > 1e-12 * jnp.maximum(jnp.max(var), 1e-30)
    beta = jnp.where(ok, cov / jnp.where(ok, var, 1.0), 0.0)
    return beta, jnp.where(ok, cov * beta, 0.0)


def feature_contributions(per_intervention, mask) -> np.ndarray:
    """``(K,)`` per-intervention values and ``(K, d)`` membership -> ``(d,)`` mean over the sets
    containing each feature (0 for features in no set)."""
    m = np.asarray(mask, np.float64)
    cnt = m.sum(0)
    tot = np.asarray(per_intervention, np.float64) @ m
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0)


def node_contribution(node: int, layer: str, acts, delta_out, mask, *, top: int | None = None
                      ) -> NodeContribution:
    """Signed contributions of one node (module docstring). ``acts``: ``(K+1, *shape)`` of the
    node's representative layer; ``delta_out``: ``(K,)``; ``mask``: ``(K, d)``; ``top``: number of
    top units (default 1 filter for conv layers, 3 units for dense ones, as in section 4.1)."""
    acts = jnp.asarray(acts)
    require_finite(acts, f"the activations of layer {layer!r}", rows="inputs (row 0 = the original)")
    require_finite(delta_out, "delta_out", rows="interventions")
    du = unit_effects(acts)
    beta, score = (np.asarray(a, np.float64) for a in _slopes(du, jnp.asarray(delta_out, jnp.float32)))
    if top is None:
        top = 1 if acts.ndim >= 4 else 3
    top = max(1, min(int(top), score.shape[0]))
    units = tuple(int(u) for u in np.argsort(-score, kind="stable")[:top])
    c = np.asarray(du, np.float64)[:, list(units)] @ beta[list(units)]
    return NodeContribution(node, layer, units, score, beta, c, feature_contributions(c, mask))
