"""Causal attributions (Chattopadhyay et al., ICML 2019): input moments, interventional
expectations (Phase I), Bayesian causal regressors (Phase II) and the one-call ACE layer."""

from jcausal.ace import estimators
from jcausal.ace.attribution import ACEResult, explain, load_result, save_result
from jcausal.ace.estimators import Estimator, make_estimator
from jcausal.ace.interventional import METHODS, Info, interventional_expectation, make_mesh
from jcausal.ace.regressors import Regressor, baseline, fit_regressors, predict, raw_coefficients
from jcausal.ace.stats import InputStats, input_stats, intervention_grid, truncate

__all__ = [
    "ACEResult",
    "Estimator",
    "METHODS",
    "Info",
    "InputStats",
    "Regressor",
    "baseline",
    "explain",
    "fit_regressors",
    "input_stats",
    "interventional_expectation",
    "intervention_grid",
    "load_result",
    "estimators",
    "make_estimator",
    "make_mesh",
    "predict",
    "raw_coefficients",
    "save_result",
    "truncate",
]
