"""Figures for generative causal explanations (GCE paper Figures 2, 3, 5, 11): data in, Figure out."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt  # picks a headless backend by itself when there is no display
import numpy as np
from matplotlib.patches import Rectangle

__all__ = ["factor_names", "plot_factor_flow", "plot_accuracy_drop", "plot_sweeps", "plot_fine_sweep",
           "plot_selection",
           "plot_training", "plot_linear_explanation"]

CAUSAL, NONCAUSAL = "tab:red", "tab:blue"


def factor_names(K: int, L: int) -> list[str]:
    """``alpha1..alphaK, beta1..betaL``."""
    return [f"α{i + 1}" for i in range(K)] + [f"β{i + 1}" for i in range(L)]


def plot_factor_flow(flows, K: int, *, ax=None, title: str = "Information flow to the classifier"):
    """Bar plot of ``I(z_j; Y)`` per latent factor (Figure 5a). ``flows`` ``(K + L,)`` nats."""
    flows = np.asarray(flows, float)
    L = flows.size - K
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(0.5 * flows.size + 2.5, 3))
    ax.bar(range(flows.size), flows, color=[CAUSAL] * K + [NONCAUSAL] * L)
    ax.set_xticks(range(flows.size), factor_names(K, L))
    ax.set_ylabel("information flow (nats)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_accuracy_drop(original: float, reencoded: float, resampled, K: int, *, ax=None):
    """Classifier accuracy on the original and re-encoded inputs and after each factor is resampled
    from its prior (Figure 5b). Accuracies are fractions in [0, 1]."""
    resampled = np.asarray(resampled, float)
    L = resampled.size - K
    vals = np.concatenate([[original, reencoded], resampled])
    labels = ["original", "re-encoded", *factor_names(K, L)]
    colors = ["0.4", "0.6"] + [CAUSAL] * K + [NONCAUSAL] * L
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(0.5 * vals.size + 2.5, 3))
    ax.bar(range(vals.size), vals, color=colors)
    ax.set_xticks(range(vals.size), labels, rotation=45, ha="right")
    ax.set_ylim(min(0.0, vals.min() - 0.05), 1.0)
    ax.set_ylabel("classifier accuracy")
    ax.set_title("Accuracy when one factor is resampled")
    fig.tight_layout()
    return fig


def _image_cell(ax, img, probs, cmap, lw: float) -> None:
    """One decoded image, outlined in the colour of its predicted class, without ticks."""
    ax.imshow(img.reshape(img.shape[0], img.shape[1]), cmap="gray", vmin=0, vmax=1)
    ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, lw=lw,
                           edgecolor=cmap(int(np.argmax(probs)) % 10)))
    ax.set_xticks([])
    ax.set_yticks([])


def plot_sweeps(images, probs, offsets, K: int, *, sample: int = 0, class_names: Sequence[str] | None = None):
    """Latent sweeps of one input (Figures 3, 12): row ``j`` decodes the input's latent with factor
    ``j`` shifted by ``offsets``; each image is outlined in the colour of its predicted class.

    Args:
      images: ``(n, K + L, V, H, W[, 1])``; probs: ``(n, K + L, V, M)``; offsets: ``(V,)``.
      K: causal factors (rows labelled alpha, the rest beta); sample: which input.
      class_names: legend names of the classes.
    """
    images, probs = np.asarray(images)[sample], np.asarray(probs)[sample]
    dim, V = images.shape[:2]
    M = probs.shape[-1]
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(dim, V, figsize=(0.9 * V + 1.0, 0.9 * dim + 0.6), squeeze=False)
    names = factor_names(K, dim - K)
    for j in range(dim):
        for v in range(V):
            ax = axes[j, v]
            _image_cell(ax, images[j, v], probs[j, v], cmap, 3)
            if v == 0:
                ax.set_ylabel(names[j], rotation=0, labelpad=14, color=CAUSAL if j < K else NONCAUSAL)
            if j == dim - 1:
                ax.set_xlabel(f"{float(np.asarray(offsets)[v]):+.1f}", fontsize=8)
    class_names = list(class_names) if class_names is not None else [str(m) for m in range(M)]
    handles = [Rectangle((0, 0), 1, 1, fill=False, lw=3, edgecolor=cmap(m % 10)) for m in range(M)]
    fig.legend(handles, class_names, loc="upper center", ncol=M, frameon=False, title="predicted class")
    fig.subplots_adjust(top=1 - 0.9 / (0.9 * dim + 0.6), wspace=0.05, hspace=0.05)
    return fig


def plot_fine_sweep(images, probs, offsets, *, factor: int = 0, K: int = 1,
                    class_names: Sequence[str] | None = None):
    """High-resolution transitions of one factor (GCE Figure 14): row ``i`` is input ``i`` swept
    over its own fine offsets (labelled under each image); outlines give the predicted class.

    Args:
      images: ``(n, V, H, W[, 1])``; probs: ``(n, V, M)``; offsets: ``(n, V)`` (see
        :func:`jcausal.gce.fine_sweeps`). factor, K: which factor was swept (for the title).
    """
    images, probs, offsets = np.asarray(images), np.asarray(probs), np.asarray(offsets)
    n, V = images.shape[:2]
    M = probs.shape[-1]
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(n, V, figsize=(0.8 * V + 0.6, 0.95 * n + 0.9), squeeze=False)
    for i in range(n):
        for v in range(V):
            ax = axes[i, v]
            _image_cell(ax, images[i, v], probs[i, v], cmap, 2.5)
            ax.set_xlabel(f"{offsets[i, v]:+.2f}", fontsize=6, labelpad=1)
    name = factor_names(K, max(factor + 1 - K, 0))[factor]
    class_names = list(class_names) if class_names is not None else [str(m) for m in range(M)]
    handles = [Rectangle((0, 0), 1, 1, fill=False, lw=2.5, edgecolor=cmap(m % 10)) for m in range(M)]
    fig.legend(handles, class_names, loc="upper center", ncol=M, frameon=False,
               title=f"{name} swept finely across each decision change; predicted class")
    fig.subplots_adjust(top=1 - 0.9 / (0.95 * n + 0.9), wspace=0.05, hspace=0.35)
    return fig


def plot_selection(path):
    """Algorithm 1's parameter search (Figures 11, 16): D against K + L in step 1, C against K
    in steps 2-3, and D against lambda for each K, with the chosen (K, L, lambda) marked.

    ``path``: a :class:`jcausal.gce.SelectionPath` (or any object with ``trials`` -- dicts with
    ``stage``, ``K``, ``L``, ``lam``, ``C``, ``D`` -- and ``K``, ``L``, ``lam``, ``D_target``).
    """
    trials = list(path.trials)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    s1 = [t for t in trials if t["stage"] == 1]
    axes[0].plot([t["K"] + t["L"] for t in s1], [t["D"] for t in s1], "o-", color="0.3")
    axes[0].set_xlabel("K + L (step 1, λ = 0)")
    axes[0].set_ylabel("D")
    axes[0].set_title("Step 1: latent factors for D")
    s2 = [t for t in trials if t["stage"] == 2]
    best: dict[int, dict] = {}
    for t in s2:
        if t.get("accepted"):
            best[t["K"]] = t
    ks = sorted(best)
    axes[1].plot(ks, [best[k]["C"] for k in ks], "o-", color=CAUSAL)
    axes[1].axvline(path.K, color="0.5", ls="--")
    axes[1].set_xlabel("K (causal factors)")
    axes[1].set_ylabel("C (nats)")
    axes[1].set_title("Steps 2-3: causal factors for C")
    cmap = plt.get_cmap("viridis")
    for n, k in enumerate(sorted({t["K"] for t in s2})):
        pts = sorted((t["lam"], t["D"]) for t in s2 if t["K"] == k)
        axes[2].plot(*zip(*pts), "o-", color=cmap(n / max(len(ks), 1)), label=f"K = {k}")
    axes[2].axhline(path.D_target, color="0.5", ls="--", label="D target")
    axes[2].set_xscale("symlog", linthresh=1e-3)
    axes[2].set_xlabel("λ")
    axes[2].set_ylabel("D")
    axes[2].set_title(f"λ for each K (chosen K={path.K}, L={path.L}, λ={path.lam:g})")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_training(history: dict, *, lam: float | None = None):
    """C and D against the training step (``history`` from :func:`jcausal.gce.fit_explainer`)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    axes[0].plot(history["step"], history["C"], color=CAUSAL)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("C (nats)")
    axes[1].plot(history["step"], history["D"], color="0.3")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("D" + (f" (λ = {lam:g})" if lam is not None else ""))
    fig.tight_layout()
    return fig


def plot_linear_explanation(W, a, K: int, *, ax=None):
    """Section 4 / Figure 2: the classifier's normal ``a`` and the learned columns of ``W`` in the
    plane (first two coordinates), causal columns red, noncausal blue."""
    W, a = np.asarray(W, float), np.asarray(a, float)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4, 4))
    g = np.linspace(-3, 3, 200)
    xx, yy = np.meshgrid(g, g)
    ax.contourf(xx, yy, a[0] * xx + a[1] * yy > 0, levels=1, alpha=0.15, cmap="coolwarm")
    an = a[:2] / np.linalg.norm(a[:2]) * 2.5
    ax.annotate("", xy=an, xytext=(0, 0), arrowprops=dict(color="k", width=1.5))
    ax.text(*(an * 1.05), "a", fontsize=11)
    for j in range(W.shape[1]):
        w = W[:2, j] * 2.0
        ax.annotate("", xy=w, xytext=(0, 0), arrowprops=dict(color=CAUSAL if j < K else NONCAUSAL, width=1))
        ax.text(*(w * 1.1), factor_names(K, W.shape[1] - K)[j].replace("α", "w_α").replace("β", "w_β"),
                color=CAUSAL if j < K else NONCAUSAL)
    ax.set_xlim(-3, 3)
    ax.set_ylim(-3, 3)
    ax.set_aspect("equal")
    ax.set_title("Learned directions vs classifier normal")
    fig.tight_layout()
    return fig
