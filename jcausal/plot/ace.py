"""Figures for ACE results (the layout of the ACE paper's Figure 2a-c)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["plot_causal_regressors", "plot_saliency"]


def _plt():
    import matplotlib.pyplot as plt  # picks a headless backend by itself when there is no display

    return plt


def plot_causal_regressors(
    result,
    *,
    feature_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    outputs: Sequence[int] | None = None,
    grid: int = 200,
    to_raw=None,
):
    """ACE curves: one panel per output, one line per feature (ACE paper Figure 2a-c).

    Each line is the causal regressor's ACE ``mean(a) - baseline`` with a +-2 predictive standard
    deviation band; dots are the Phase I expectations minus the same baseline.

    Args:
      result: an :class:`jcausal.ace.ACEResult`.
      feature_names, output_names: labels (default ``x_i`` / ``y_m``).
      outputs: which outputs get a panel (default all).
      grid: points per curve.
      to_raw: optional ``(F, n) -> (F, n)`` map of intervention values to display units.

    Returns:
      the matplotlib ``Figure``.
    """
    plt = _plt()
    feats = np.asarray(result.features)
    alphas = np.asarray(result.alphas)
    F, _, m = np.asarray(result.expectations).shape
    outputs = list(range(m)) if outputs is None else list(outputs)
    names = feature_names or [f"x{i}" for i in feats]
    onames = output_names or [f"y{j}" for j in range(m)]
    lo, hi = np.asarray(result.regressor.low)[:, 0], np.asarray(result.regressor.high)[:, 0]
    a = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, grid)[None, :]
    mean, var = (np.asarray(v) for v in result.predict(a))
    base = np.asarray(result.baselines)
    xs = to_raw(a) if to_raw else a
    xp = to_raw(alphas) if to_raw else alphas
    fig, axes = plt.subplots(1, len(outputs), figsize=(4.2 * len(outputs), 3.6), squeeze=False,
                             sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, j in zip(axes[0], outputs):
        for f in range(F):
            c = colors[f % len(colors)]
            ace = mean[f, :, j] - base[f, j]
            sd = np.sqrt(np.maximum(var[f, :, j], 0.0))
            order = int(np.asarray(result.regressor.order)[f, j])
            ax.plot(xs[f], ace, color=c, label=f"{names[f]} (order {order})")
            ax.fill_between(xs[f], ace - 2 * sd, ace + 2 * sd, color=c, alpha=0.15, linewidth=0)
            ax.scatter(xp[f], np.asarray(result.expectations)[f, :, j] - base[f, j], s=8, color=c)
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        ax.set_title(f"ACE on {onames[j]}")
        ax.set_xlabel("intervention value a")
    axes[0][0].set_ylabel("ACE  (E[y | do(x = a)] - baseline)")
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_saliency(
    saliency,
    *,
    output: int = 0,
    feature_names: Sequence[str] | None = None,
    sample_names: Sequence[str] | None = None,
    image_shape: tuple[int, int] | None = None,
    positive_only: bool = False,
    title: str | None = None,
):
    """Local causal saliency of a batch: ``saliency`` ``(B, F, m)`` (or ``(B, F)``).

    Tabular features give a samples x features heatmap; with ``image_shape`` each sample is
    drawn as an image. ``positive_only`` thresholds at 0 (ACE paper section 5.2). Returns the Figure.
    """
    plt = _plt()
    s = np.asarray(saliency)
    s = s[..., output] if s.ndim == 3 else s
    if positive_only:
        s = np.maximum(s, 0.0)
    lim = float(np.max(np.abs(s))) or 1.0
    cmap = "viridis" if positive_only else "RdBu_r"
    vmin = 0.0 if positive_only else -lim
    if image_shape is not None:
        B = s.shape[0]
        fig, axes = plt.subplots(1, B, figsize=(2.2 * B, 2.4), squeeze=False)
        for b, ax in enumerate(axes[0]):
            im = ax.imshow(s[b].reshape(image_shape), cmap=cmap, vmin=vmin, vmax=lim)
            ax.set_axis_off()
            if sample_names:
                ax.set_title(sample_names[b], fontsize=8)
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    else:
        fig, ax = plt.subplots(figsize=(1.0 + 0.6 * s.shape[1], 1.0 + 0.3 * s.shape[0]))
        im = ax.imshow(s, cmap=cmap, vmin=vmin, vmax=lim, aspect="auto")
        ax.set_xticks(range(s.shape[1]), feature_names or [f"x{i}" for i in range(s.shape[1])],
                      rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(s.shape[0]), sample_names or [str(b) for b in range(s.shape[0])], fontsize=7)
        ax.set_xlabel("feature")
        ax.set_ylabel("input")
        fig.colorbar(im, ax=ax, label="ACE")
        fig.tight_layout()
    if title:
        fig.suptitle(title)
    return fig
