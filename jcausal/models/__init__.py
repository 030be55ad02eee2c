"""Reference Flax NNX models, a pure-function bridge, the one fit loop every trainer uses (``fit``,
``Loop``, ``FitResult``), a small trainer and safe checkpoints."""

from jcausal._src.calling import Split
from jcausal._src.fit import FitResult, Loop, fit
from jcausal.models.checkpoint import CheckpointMismatchError, atomic_write_bytes, load, save
from jcausal.models.cnn import GCECNN, AlexNetSmall
from jcausal.models.core import (
    ACTIVATIONS,
    Functional,
    SplitFunctional,
    functional,
    get_activation,
    split_functional,
)
from jcausal.models.mlp import MLP
from jcausal.models.rnn import OneStepPredictor, SequenceClassifier
from jcausal.models.training import accuracy, predict, train
from jcausal.models.vae import VAE, VAEOutput, conv_vae, elbo, gaussian_kl, mlp_vae, reparameterize

__all__ = [
    "ACTIVATIONS",
    "GCECNN",
    "MLP",
    "AlexNetSmall",
    "CheckpointMismatchError",
    "FitResult",
    "Functional",
    "Loop",
    "OneStepPredictor",
    "Split",
    "SplitFunctional",
    "SequenceClassifier",
    "accuracy",
    "atomic_write_bytes",
    "fit",
    "functional",
    "get_activation",
    "load",
    "predict",
    "save",
    "split_functional",
    "train",
    # VAE building blocks (jcausal.models.vae)
    "VAE",
    "VAEOutput",
    "conv_vae",
    "elbo",
    "gaussian_kl",
    "mlp_vae",
    "reparameterize",
]
