"""TRACER (causal explanations of neural networks): interventions, layer activations, CKA, causal
graphs with signed feature contributions, and the global view."""

from jcausal.tracer.cka import (
    KERNELS,
    CKAAccumulator,
    CKAState,
    cka,
    cka_accumulator,
    cka_from_grams,
    cka_matrix,
    feature_space_linear_cka,
    gram,
    hsic,
    linear_gram,
    rbf_gram,
)

__all__ = [
    "KERNELS",
    "CKAAccumulator",
    "CKAState",
    "cka",
    "cka_accumulator",
    "cka_from_grams",
    "cka_matrix",
    "feature_space_linear_cka",
    "gram",
    "hsic",
    "linear_gram",
    "rbf_gram",
]
