"""Generative causal explanations (O'Shaughnessy et al., NeurIPS 2020).

Information flow from latent factors to a classifier's output (:mod:`.objectives`), generative
maps (:mod:`.models`), training of ``C + lambda D`` (:mod:`.train`), Algorithm 1 parameter
selection (:mod:`.select`) and evaluation (:mod:`.evaluate`). Helpers such as ``entropy`` and
``linear_gaussian_kl`` stay importable from their modules; the MNIST experiment lives in
``jcausal.experiments.gce_mnist``.
"""

from jcausal.gce.evaluate import AccuracyDrop, Sweep, latent_sweeps, resample_accuracy
from jcausal.gce.models import Generative, LinearGaussian, conv_vae, generative, mlp_vae
from jcausal.gce.objectives import VARIANTS, check_models, factor_flows, information_flow, mutual_information
from jcausal.gce.select import SelectionPath, make_measure, select_parameters
from jcausal.gce.train import StepInfo, TrainResult, build_step, train

__all__ = [
    "AccuracyDrop",
    "SelectionPath",
    "Sweep",
    "latent_sweeps",
    "make_measure",
    "resample_accuracy",
    "select_parameters",
    "VARIANTS",
    "StepInfo",
    "TrainResult",
    "build_step",
    "train",
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
