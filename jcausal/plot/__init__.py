"""Matplotlib figures for jcausal results: data in, Figure out (nothing is computed here)."""

from jcausal.plot.ace import plot_causal_regressors, plot_saliency
from jcausal.plot.recurrent import plot_lag_tau, plot_sequence_saliency

__all__ = ["plot_causal_regressors", "plot_lag_tau", "plot_saliency", "plot_sequence_saliency"]
