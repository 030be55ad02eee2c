"""Comparison attribution methods: gradient saliency and Integrated Gradients."""

from jcausal.comparisons.gradients import (
    RULES,
    completeness_gap,
    gradient_saliency,
    integrated_gradients,
    quadrature,
)

__all__ = ["RULES", "completeness_gap", "gradient_saliency", "integrated_gradients", "quadrature"]
