"""Causal attributions (Chattopadhyay et al., ICML 2019): input moments, interventional
expectations (Phase I), Bayesian causal regressors (Phase II) and the one ACE pipeline
(:func:`explain`, :func:`jcausal.ace.jobs.run_job` and the CLI share it)."""

from jcausal.ace import estimators
from jcausal.ace.attribution import ACEResult, Settings, explain, load_result, save_result
from jcausal.ace.estimators import Estimator, make_estimator, register_estimator
from jcausal.ace.interventional import METHODS, Execution, Info, interventional_expectation, make_mesh
from jcausal.ace.regressors import (
    Regressor,
    fit_regressors,
    predict_regressor,
    raw_coefficients,
    reference_level,
)
from jcausal.ace.stats import InputStats, input_stats, intervention_grid, truncate

__all__ = [
    "ACEResult",
    "Estimator",
    "Execution",
    "METHODS",
    "Info",
    "InputStats",
    "Regressor",
    "Settings",
    "estimators",
    "explain",
    "fit_regressors",
    "input_stats",
    "interventional_expectation",
    "intervention_grid",
    "load_result",
    "make_estimator",
    "make_mesh",
    "predict_regressor",
    "raw_coefficients",
    "reference_level",
    "register_estimator",
    "save_result",
    "truncate",
]

