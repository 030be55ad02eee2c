"""Deprecated: the comparison methods moved to :mod:`jcausal.comparisons`."""

import warnings

from jcausal.comparisons import (
    RULES,
    completeness_gap,
    gradient_saliency,
    integrated_gradients,
    quadrature,
)

warnings.warn("jcausal.baselines is deprecated: import from jcausal.comparisons", DeprecationWarning,
              stacklevel=2)

__all__ = ["RULES", "completeness_gap", "gradient_saliency", "integrated_gradients", "quadrature"]
