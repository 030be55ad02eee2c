"""Counterfactual figures (TRACER appendix A, Figures 5-6): a grid of inputs and counterfactuals, the
contrastive view of a misclassification, and the feature changes of a tabular counterfactual.

Pure matplotlib: results in, ``Figure`` out. Contributions: blue positive, red negative.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from jcausal.plot.tracer import SIGNED_CMAP

__all__ = ["plot_counterfactuals", "plot_contrastive", "plot_feature_changes"]


def _img(a):
    a = np.asarray(a)
    return a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a


def plot_counterfactuals(result, *, n: int = 8, title: str | None = None):
    """Inputs (top row) and their counterfactuals (bottom row) of a
    :class:`~jcausal.tracer.CounterfactualResult` of images; titles give prediction -> target and
    whether the counterfactual is valid."""
    n = min(n, len(result.targets))
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 4.2), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(_img(result.inputs[i]), cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(f"pred {int(result.predictions[i])}", fontsize=8)
        axes[1, i].imshow(_img(result.counterfactuals[i]), cmap="gray", vmin=0, vmax=1)
        ok = "ok" if result.valid[i] else f"got {int(result.cf_predictions[i])}"
        axes[1, i].set_title(f"-> {int(result.targets[i])} ({ok})", fontsize=8,
                             color="black" if result.valid[i] else "#c62828")
    for ax in axes.ravel():
        ax.axis("off")
    s = result.summary()
    fig.suptitle(title or f"counterfactuals: validity {s['validity_percent']:.1f}%, mean ||x* - x|| "
                 f"{s['mean_dist_input']:.2f}", fontsize=10)
    fig.tight_layout()
    return fig


def _contribution_row(axes, ex, img, label: str):
    for ax, c in zip(axes, ex.contributions):
        f = np.asarray(c.features).reshape(*img.shape, -1).sum(-1)
        v = max(float(np.abs(f).max()), 1e-12)
        ax.imshow(img, cmap="gray", alpha=0.45)
        ax.imshow(f, cmap=SIGNED_CMAP, vmin=-v, vmax=v, alpha=0.75)
        ax.set_title(f"{label} G{c.node + 1}: {c.layer}", fontsize=7)


def plot_contrastive(c, *, feature_names=None, top_k: int = 12, title: str | None = None):
    """The seed's Figures 5-6 for a :class:`~jcausal.tracer.Contrastive`: input, counterfactual and
    difference map, then the per-node signed contributions of the input (for its wrong class) and of
    the counterfactual, side by side. Tabular inputs show bars of the top ``top_k`` features."""
    ex_x, ex_cf = c.original, c.counterfactual_explanation
    x = np.asarray(c.x)
    image = x.ndim >= 2
    k = max(len(ex_x.contributions), len(ex_cf.contributions), 3)
    fig, axes = plt.subplots(3, k, figsize=(2.4 * k, 7.6 if image else 9.0), squeeze=False)
    if image:
        img, cf, diff = _img(x), _img(c.counterfactual), _img(c.difference)
        axes[0, 0].imshow(img, cmap="gray", vmin=0, vmax=1)
        axes[0, 0].set_title(f"input: label {c.label}, predicted {c.prediction}", fontsize=8)
        axes[0, 1].imshow(cf, cmap="gray", vmin=0, vmax=1)
        axes[0, 1].set_title(f"counterfactual: predicted {c.cf_prediction}", fontsize=8)
        v = max(float(np.abs(diff).max()), 1e-12)
        axes[0, 2].imshow(diff, cmap=SIGNED_CMAP, vmin=-v, vmax=v)
        axes[0, 2].set_title(f"x* - x (||.|| = {c.dist_input:.2f})", fontsize=8)
        _contribution_row(axes[1], ex_x, img, f"x ({ex_x.target})")
        _contribution_row(axes[2], ex_cf, cf, f"x* ({ex_cf.target})")
        for ax in axes.ravel():
            ax.axis("off")
    else:
        d = x.size
        names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(d)]
        diff = np.asarray(c.difference).reshape(-1)
        idx = np.argsort(-np.abs(diff), kind="stable")[:top_k][::-1]
        ax = axes[0, 0]
        ax.barh(range(len(idx)), diff[idx], color=np.where(diff[idx] >= 0, "#1565c0", "#c62828"))
        ax.set_yticks(range(len(idx)), [names[i] for i in idx], fontsize=6)
        ax.set_title(f"x* - x (label {c.label}, pred {c.prediction} -> {c.cf_prediction})", fontsize=8)
        for a in axes[0, 1:]:
            a.axis("off")
        for row, ex, lab in ((1, ex_x, "x"), (2, ex_cf, "x*")):
            for a, nc in zip(axes[row], ex.contributions):
                f = np.asarray(nc.features)
                j = np.argsort(-np.abs(f), kind="stable")[:top_k][::-1]
                a.barh(range(len(j)), f[j], color=np.where(f[j] >= 0, "#1565c0", "#c62828"))
                a.set_yticks(range(len(j)), [names[i] for i in j], fontsize=6)
                a.set_title(f"{lab} ({ex.target}) G{nc.node + 1}: {nc.layer}", fontsize=7)
            for a in axes[row, len(ex.contributions):]:
                a.axis("off")
    fig.suptitle(title or "contrastive analysis: misclassified input vs counterfactual "
                 "(blue +, red -)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_feature_changes(changes, *, title: str | None = None):
    """Horizontal bars of a tabular counterfactual's changes (list of
    :class:`~jcausal.tracer.FeatureChange`), labelled with before -> after in original units."""
    changes = list(changes)[::-1]
    fig, ax = plt.subplots(figsize=(7.0, 0.35 * max(len(changes), 1) + 1.2))
    vals = np.asarray([c.scaled_delta for c in changes], float)
    ax.barh(range(len(changes)), vals, color=np.where(vals >= 0, "#1565c0", "#c62828"))
    ax.set_yticks(range(len(changes)), [f"{c.feature}: {c.before:.4g} -> {c.after:.4g}" for c in changes],
                  fontsize=7)
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel("change (fraction of the feature's range)")
    ax.set_title(title or f"counterfactual: {len(changes)} features changed", fontsize=10)
    fig.tight_layout()
    return fig
