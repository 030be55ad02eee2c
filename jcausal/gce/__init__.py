"""Generative causal explanations (O'Shaughnessy et al., NeurIPS 2020).

Information flow from latent factors to a classifier's output (:mod:`.objectives`), generative
maps (:mod:`.models`), fitting ``C + lambda D`` (:func:`fit_explainer`, :mod:`.train`), Algorithm 1 parameter
selection (:mod:`.select`) and evaluation (:mod:`.evaluate`). Helpers such as ``entropy`` and
``linear_gaussian_kl`` stay importable from their modules; the MNIST experiment lives in
``jcausal.experiments.gce_mnist``.
"""

from jcausal.gce.evaluate import AccuracyDrop, FineSweep, Sweep, fine_sweeps, latent_sweeps, resample_accuracy
from jcausal.gce.models import Generative, LinearGaussian, conv_vae, generative, mlp_vae
from jcausal.gce.objectives import (
    SAMPLERS,
    VARIANTS,
    check_models,
    factor_flows,
    information_flow,
    mutual_information,
)
from jcausal.gce.select import SelectionPath, make_measure, select_parameters
from jcausal.gce.train import (
    ExplainerSettings,
    Plateau,
    PlateauWarning,
    StepInfo,
    build_step,
    find_plateau,
    fit_explainer,
)

__all__ = [
    "AccuracyDrop",
    "FineSweep",
    "fine_sweeps",
    "SAMPLERS",
    "SelectionPath",
    "Sweep",
    "latent_sweeps",
    "make_measure",
    "resample_accuracy",
    "select_parameters",
    "VARIANTS",
    "ExplainerSettings",
    "Plateau",
    "PlateauWarning",
    "find_plateau",
    "StepInfo",
    "build_step",
    "fit_explainer",
    "Generative",
    "LinearGaussian",
    "check_models",
    "conv_vae",
    "factor_flows",
    "generative",
    "information_flow",
    "mlp_vae",
    "mutual_information",
]
