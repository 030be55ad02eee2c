"""Reference Flax NNX models, a pure-function bridge, a small trainer and safe checkpoints."""

from jcausal._src.calling import Split
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
from jcausal.models.train import TrainResult, accuracy, predict, train
from jcausal.models.vae import VAE, VAEOutput, conv_vae, elbo, gaussian_kl, mlp_vae, reparameterize

__all__ = [
    "ACTIVATIONS",
    "GCECNN",
    "MLP",
    "AlexNetSmall",
    "CheckpointMismatchError",
    "Functional",
    "OneStepPredictor",
    "Split",
    "SplitFunctional",
    "SequenceClassifier",
    "TrainResult",
    "accuracy",
    "atomic_write_bytes",
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
