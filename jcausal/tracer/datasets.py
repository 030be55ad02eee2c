"""TRACER's tabular task data: scikit-learn's breast cancer table, the offline stand-in for CIC-IDS
2017 (:func:`jcausal.data.load_breast_cancer`, re-exported here for the TRACER experiments)."""

from jcausal.data.tabular import load_breast_cancer

__all__ = ["load_breast_cancer"]
