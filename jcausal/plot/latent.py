"""Figures for the latent ACE of a conditional generative model (ACE paper Figures 5, 7-10)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["plot_class_ace", "plot_latent_ace_rows", "plot_traversals", "plot_latent_ranking"]


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _sym(ax, img, vmax, title):
    im = ax.imshow(img, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def plot_class_ace(result, *, shape=(28, 28), class_names: Sequence[str] | None = None):
    """ACE of each class code ``c_k`` on every pixel, ``E[x | do(c_k = 1)] - E[x | do(c_k = 0)]``
    (Figure 5a): red where switching the class on brightens a pixel, blue where it darkens it."""
    plt = _plt()
    ace = np.asarray(result.class_ace())
    C = ace.shape[0]
    cols = min(C, 5)
    rows = -(-C // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.2 * rows), squeeze=False)
    vmax = float(np.abs(ace).max()) or 1.0
    for k, ax in enumerate(axes.flat):
        if k >= C:
            ax.axis("off")
            continue
        im = _sym(ax, ace[k].reshape(shape), vmax, f"do(c = {class_names[k] if class_names else k})")
    fig.colorbar(im, ax=axes, shrink=0.7, label="ACE on pixel intensity")
    return fig


def plot_latent_ace_rows(result, label: int, *, latents: Sequence[int] | None = None, shape=(28, 28),
                         max_alphas: int = 7):
    """ACE of ``z_k`` on every pixel with the class fixed to ``label``: one row per latent, one
    column per intervention value ``a`` (Figures 5b-d, 8-10)."""
    plt = _plt()
    ace = np.asarray(result.ace())[:, label]  # (K, A, P)
    alphas = np.asarray(result.alphas)
    cols = np.unique(np.linspace(0, len(alphas) - 1, min(max_alphas, len(alphas))).round().astype(int))
    ks = list(range(ace.shape[0])) if latents is None else list(latents)
    fig, axes = plt.subplots(len(ks), len(cols), figsize=(1.6 * len(cols), 1.6 * len(ks)), squeeze=False)
    vmax = float(np.abs(ace[ks][:, cols]).max()) or 1.0
    for r, k in enumerate(ks):
        for c, j in enumerate(cols):
            title = f"a = {alphas[j]:+.1f}" if r == 0 else ""
            _sym(axes[r, c], ace[k, j].reshape(shape), vmax, title)
        axes[r, 0].set_ylabel(f"z{k}", fontsize=8)
    fig.suptitle(f"ACE of each latent with the class code fixed to {label}", fontsize=9)
    return fig


def plot_traversals(images, alphas, *, shape=(28, 28), title: str = ""):
    """Decoded traversals (Figure 7): ``images (K, A, P)``, row ``k`` decodes ``z = 0`` with
    ``z_k = a`` for each ``a`` in ``alphas``."""
    plt = _plt()
    images = np.asarray(images)
    K, A = images.shape[:2]
    fig, axes = plt.subplots(K, A, figsize=(1.2 * A, 1.2 * K), squeeze=False)
    for k in range(K):
        for j in range(A):
            ax = axes[k, j]
            ax.imshow(images[k, j].reshape(shape), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_title(f"{alphas[j]:+.1f}", fontsize=7)
        axes[k, 0].set_ylabel(f"z{k}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_latent_ranking(ranking: Sequence[dict]):
    """Bar chart of each latent's total causal effect on the image (largest first); latents that
    do nothing discernible are grey."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(0.5 * len(ranking) + 2, 3))
    names = [f"z{r['latent']}" for r in ranking]
    vals = [r["total_effect"] for r in ranking]
    colors = ["lightgrey" if r["negligible"] else "tab:blue" for r in ranking]
    ax.bar(names, vals, color=colors)
    ax.set_ylabel("total effect (sum over pixels of |ACE|)")
    ax.set_yscale("symlog", linthresh=max(min([v for v in vals if v > 0] or [1e-6]), 1e-6))
    ax.set_title("latents by total causal effect (grey: negligible)", fontsize=9)
    fig.tight_layout()
    return fig
