"""Causal attributions (Chattopadhyay et al., ICML 2019): input moments and interventional
expectations (Phase I)."""

from jcausal.ace.interventional import METHODS, Info, interventional_expectation, make_mesh
from jcausal.ace.stats import InputStats, input_stats, intervention_grid, truncate

__all__ = [
    "METHODS",
    "Info",
    "InputStats",
    "input_stats",
    "interventional_expectation",
    "intervention_grid",
    "make_mesh",
    "truncate",
]
