"""TRACER figures: CKA heatmap, causal graph, signed contributions per node, coverage table.

Pure matplotlib: results in, ``Figure`` out (nothing is computed here). Contributions use blue for
positive (supports the decision) and red for negative (opposes it), as in the paper's Figure 3b.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LinearSegmentedColormap

__all__ = ["SIGNED_CMAP", "plot_causal_graph", "plot_cka", "plot_contributions", "plot_coverage"]

SIGNED_CMAP = LinearSegmentedColormap.from_list("tracer_signed", ["#c62828", "#ffffff", "#1565c0"])


def plot_cka(graph, *, ax=None, title: str | None = None):
    """Heatmap of ``graph.cka`` (layers x layers, original + intervened inputs) with the layer groups
    outlined and merged entries marked."""
    cka = np.asarray(graph.cka)
    names = list(graph.layer_names)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(1.0 + 0.55 * len(names),) * 2)
    im = ax.imshow(cka, vmin=0.0, vmax=1.0, cmap="viridis")
    merged = graph.merged
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{cka[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if cka[i, j] < 0.6 else "black",
                    fontweight="bold" if merged[i, j] else None)
    for g in graph.groups:
        a, b = g[0] - 0.5, g[-1] + 0.5
        ax.add_patch(plt.Rectangle((a, a), b - a, b - a, fill=False, ec="red", lw=2))
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title(title or f"CKA (eps = {graph.eps}); boxes: causal nodes")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_causal_graph(graph, *, ax=None, title: str | None = None):
    """Causal nodes left to right (input -> nodes -> decision); straight arrows for adjacent links,
    arcs for links between non-adjacent nodes; nodes with exogenous (random) layers are dashed."""
    k = graph.num_nodes
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(2.2 * k + 2.0, 3.2))
    xs = np.arange(k) * 2.2 + 1.0
    ax.annotate("", xy=(xs[0] - 0.55, 0), xytext=(-0.4, 0), arrowprops=dict(arrowstyle="->", lw=1.5))
    ax.text(-0.5, 0, "input", ha="right", va="center")
    exo = set(graph.exogenous)
    for n, (x, g) in enumerate(zip(xs, graph.node_names())):
        ls = "--" if exo & set(g) else "-"
        ax.add_patch(plt.Circle((x, 0), 0.55, fc="#e3f2fd", ec="#1565c0", lw=2, ls=ls))
        ax.text(x, 0.08, f"G{n + 1}", ha="center", va="center", fontweight="bold")
        ax.text(x, -0.75, "\n".join(g), ha="center", va="top", fontsize=7)
    for a, b in graph.links:
        if b == a + 1:
            ax.annotate("", xy=(xs[b] - 0.55, 0), xytext=(xs[a] + 0.55, 0),
                        arrowprops=dict(arrowstyle="->", lw=1.5))
        else:
            ax.annotate("", xy=(xs[b], 0.55), xytext=(xs[a], 0.55),
                        arrowprops=dict(arrowstyle="->", lw=1.2, color="#6a1b9a",
                                        connectionstyle="arc3,rad=-0.35"))
    ax.annotate("", xy=(xs[-1] + 1.3, 0), xytext=(xs[-1] + 0.55, 0), arrowprops=dict(arrowstyle="->", lw=1.5))
    ax.text(xs[-1] + 1.4, 0, "decision", ha="left", va="center")
    ax.set_xlim(-1.6, xs[-1] + 2.6)
    ax.set_ylim(-2.2, 1.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or f"causal mechanism: {k} nodes, {len(graph.links)} links")
    fig.tight_layout()
    return fig


def plot_contributions(explanation, x=None, *, image_shape=None, feature_names=None, top_k: int = 20,
                       title: str | None = None):
    """Signed contributions of every node: for images, an overlay on the input (blue positive, red
    negative, symmetric scale per node); for vectors, the ``top_k`` features by magnitude as bars."""
    contribs = explanation.contributions
    k = len(contribs)
    d = contribs[0].features.shape[0]
    if image_shape is None and x is not None and np.ndim(x) >= 2:
        image_shape = np.shape(x)[:2]
    if image_shape is not None:
        fig, axes = plt.subplots(1, k + 1, figsize=(2.4 * (k + 1), 2.8))
        img = np.asarray(x).reshape(image_shape) if x is not None else np.zeros(image_shape)
        axes[0].imshow(img, cmap="gray")
        axes[0].set_title(f"input: {explanation.target} ({100 * explanation.probs[explanation.target]:.0f}%)",
                          fontsize=9)
        for ax, c in zip(axes[1:], contribs):
            f = np.asarray(c.features).reshape(*image_shape, -1).sum(-1)
            v = max(float(np.abs(f).max()), 1e-12)
            ax.imshow(img, cmap="gray", alpha=0.45)
            ax.imshow(f, cmap=SIGNED_CMAP, vmin=-v, vmax=v, alpha=0.75)
            unit = "filter" if len(c.units) == 1 else "units"
            ax.set_title(f"G{c.node + 1}: {c.layer}\n{unit} {', '.join(map(str, c.units))}", fontsize=8)
        for ax in axes:
            ax.axis("off")
    else:
        names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(d)]
        fig, axes = plt.subplots(1, k, figsize=(3.6 * k, 0.25 * min(top_k, d) + 1.5), squeeze=False)
        for ax, c in zip(axes[0], contribs):
            f = np.asarray(c.features)
            idx = np.argsort(-np.abs(f), kind="stable")[:top_k][::-1]
            ax.barh(range(len(idx)), f[idx], color=np.where(f[idx] >= 0, "#1565c0", "#c62828"))
            ax.set_yticks(range(len(idx)), [names[i] for i in idx], fontsize=7)
            ax.axvline(0, color="k", lw=0.6)
            ax.set_title(f"G{c.node + 1}: {c.layer}", fontsize=9)
    fig.suptitle(title or "feature contributions per causal node (blue +, red -)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_coverage(global_view, *, max_rows: int = 10, title: str | None = None):
    """Figure 9 as a table: one row per mechanism (its nodes as layer groups), nodes and coverage."""
    mechs = global_view.mechanisms[:max_rows]
    rows = [[" | ".join("+".join(g) for g in m.groups), str(m.num_nodes), f"{m.coverage:.1f}%"]
            for m in mechs]
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(rows) + 1.2))
    ax.axis("off")
    tab = ax.table(cellText=rows, colLabels=["mechanism (causal nodes)", "nodes", "coverage"],
                   loc="center", cellLoc="left", colWidths=[0.78, 0.08, 0.14])
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.scale(1, 1.3)
    cum = ", ".join(f"<= {k} nodes: {v:.1f}%" for k, v in global_view.coverage_by_nodes.items())
    ax.set_title(title or f"global view over {len(global_view.assignment)} inputs ({cum})", fontsize=9)
    fig.tight_layout()
    return fig
