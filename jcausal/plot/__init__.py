"""Matplotlib figures for jcausal results: data in, ``Figure`` out (nothing is computed here).

- ACE (``jcausal.plot.ace``, ``jcausal.plot.recurrent``, ``jcausal.plot.latent``): causal
  regressors, saliency, sequence saliency and lag tau, latent ACE and traversals.
- GCE (``jcausal.plot.gce``): information flow per factor, accuracy drop, latent sweeps, K/L/lambda
  selection, training curves, the linear-Gaussian explanation.
- TRACER (``jcausal.plot.tracer``, ``jcausal.plot.counterfactual``): CKA, the causal graph,
  signed contributions, coverage, counterfactual grids, the contrastive view, feature changes.

Importing this package selects no backend: matplotlib picks a headless one when there is no display.
"""

from jcausal.plot.ace import plot_causal_regressors, plot_saliency
from jcausal.plot.counterfactual import plot_contrastive, plot_counterfactuals, plot_feature_changes
from jcausal.plot.gce import (
    factor_names,
    plot_accuracy_drop,
    plot_factor_flow,
    plot_fine_sweep,
    plot_linear_explanation,
    plot_selection,
    plot_sweeps,
    plot_training,
)
from jcausal.plot.latent import plot_class_ace, plot_latent_ace_rows, plot_latent_ranking, plot_traversals
from jcausal.plot.recurrent import plot_lag_tau, plot_sequence_saliency
from jcausal.plot.tracer import plot_causal_graph, plot_cka, plot_contributions, plot_coverage

__all__ = [
    # ACE
    "plot_causal_regressors", "plot_saliency", "plot_sequence_saliency", "plot_lag_tau",
    "plot_class_ace", "plot_latent_ace_rows", "plot_traversals", "plot_latent_ranking",
    # GCE
    "factor_names", "plot_factor_flow", "plot_accuracy_drop", "plot_sweeps", "plot_fine_sweep",
    "plot_selection",
    "plot_training", "plot_linear_explanation",
    # TRACER
    "plot_cka", "plot_causal_graph", "plot_contributions", "plot_coverage", "plot_counterfactuals",
    "plot_contrastive", "plot_feature_changes",
]
