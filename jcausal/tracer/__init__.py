"""TRACER (causal explanations of neural networks): interventions, layer activations, CKA, causal
graphs with signed feature contributions, the global view, and counterfactuals (GAN, contrastive
analysis of misclassifications).

:func:`trace` analyses ONE input (interventions -> CKA -> graph -> contributions), :func:`global_view`
a sample of inputs. The steps they are built from (``hsic``, ``gram``, ``membership``, ``blur``,
``layer_groups``, ...) stay importable from their modules (``jcausal.tracer.cka``,
``.interventions``, ``.graph``, ``.activations``). The compression study lives in
``jcausal.experiments.tracer_compression``.
"""

from jcausal.tracer.activations import (
    Activations,
    LayerOutputs,
    RandomnessReport,
    activations,
    detect_randomness,
    layer_outputs,
    select_layers,
)
from jcausal.tracer.cka import KERNELS, CKAAccumulator, CKAState, cka, cka_accumulator, cka_matrix
from jcausal.tracer.constraints import (
    Actionable,
    Constraints,
    Decoded,
    Decoding,
    actionable,
    dense_decode,
    make_constraints,
    pairwise_diversity,
    project,
    sparse_decode,
)
from jcausal.tracer.contrastive import Contrastive, FeatureChange, contrastive, feature_changes
from jcausal.tracer.counterfactual import (
    CounterfactualResult,
    counterfactuals,
    distinct_valid,
    generate,
    model_labels,
)
from jcausal.tracer.explain import (
    TracerResult,
    trace,
)
from jcausal.tracer.faithfulness import Faithfulness, deletion_insertion
from jcausal.tracer.gan import CounterfactualGAN, GANObjective, train_gan
from jcausal.tracer.global_ import GlobalView, Mechanism, global_view, summarize_mechanisms
from jcausal.tracer.graph import CausalGraph, NodeContribution, causal_graph
from jcausal.tracer.interventions import (
    INTERVENTION_KINDS,
    Interventions,
    feature_index_sets,
    intervene,
    intervention_values,
    make_interventions,
    patch_index_sets,
)
from jcausal.tracer.neighbours import NNIndex, nearest, nn_index

__all__ = [
    "Actionable",
    "Constraints",
    "Decoded",
    "Decoding",
    "actionable",
    "dense_decode",
    "make_constraints",
    "pairwise_diversity",
    "project",
    "sparse_decode",
    "distinct_valid",
    "Contrastive",
    "FeatureChange",
    "contrastive",
    "feature_changes",
    "CounterfactualGAN",
    "GANObjective",
    "CounterfactualResult",
    "NNIndex",
    "counterfactuals",
    "generate",
    "model_labels",
    "nearest",
    "nn_index",
    "train_gan",
    "Faithfulness",
    "GlobalView",
    "Mechanism",
    "deletion_insertion",
    "global_view",
    "summarize_mechanisms",
    "CausalGraph",
    "NodeContribution",
    "TracerResult",
    "causal_graph",
    "trace",
    "Activations",
    "LayerOutputs",
    "RandomnessReport",
    "activations",
    "detect_randomness",
    "layer_outputs",
    "select_layers",
    "INTERVENTION_KINDS",
    "Interventions",
    "feature_index_sets",
    "intervene",
    "intervention_values",
    "make_interventions",
    "patch_index_sets",
    "KERNELS",
    "CKAAccumulator",
    "CKAState",
    "cka",
    "cka_accumulator",
    "cka_matrix",
]
