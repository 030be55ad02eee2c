"""Figures for recurrent attributions: sequence saliency (ACE vs IG) and the lag-tau histogram."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_sequence_saliency", "plot_lag_tau"]


def plot_sequence_saliency(X, ace, ig=None, *, positive_only: bool = True):
    """Side-by-side heatmaps (ACE paper Figure 3a/3b): the input sequences ``X`` ``(B, T)``, their
    causal-attribution saliency ``ace`` ``(B, T)`` (thresholded at 0 with ``positive_only``) and,
    optionally, Integrated Gradients ``ig`` ``(B, T)``. Returns the Figure."""
    import matplotlib.pyplot as plt

    X, ace = np.asarray(X), np.asarray(ace)
    panels = [(X, "input sequence", "RdBu_r"),
              (np.maximum(ace, 0) if positive_only else ace,
               "causal attribution" + (" (ACE > 0)" if positive_only else ""),
               "viridis" if positive_only else "RdBu_r")]
    if ig is not None:
        panels.append((np.asarray(ig), "Integrated Gradients", "RdBu_r"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 0.5 * len(X) + 1.5),
                             squeeze=False)
    for ax, (data, title, cmap) in zip(axes[0], panels):
        lim = float(np.abs(data).max()) or 1.0
        im = ax.imshow(data, cmap=cmap, vmin=0 if cmap == "viridis" else -lim, vmax=lim, aspect="auto")
        ax.set(title=title, xlabel="position t", ylabel="sequence")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def plot_lag_tau(lags, *, tol: float | None = None):
    """Histogram of the per-sequence lags of a :class:`jcausal.ace.recurrent.LagTau`."""
    import matplotlib.pyplot as plt

    per = np.asarray(lags.per_sequence)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(per, bins=np.arange(per.max() + 2) - 0.5)
    crit = "largest k with |det dy/dx^{t-k}|" + (f" > {tol:g}" if tol is not None else " > tol")
    ax.set(xlabel=f"lag k ({crit})", ylabel="sequences", title=f"lag tau = {float(lags.tau):.2f}")
    fig.tight_layout()
    return fig
