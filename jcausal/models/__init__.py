"""Reference Flax NNX models, a pure-function bridge, a small trainer and safe checkpoints."""

from jcausal.models.checkpoint import CheckpointMismatchError, atomic_write_bytes, load, save
from jcausal.models.cnn import GCECNN, AlexNetSmall
from jcausal.models.core import ACTIVATIONS, Functional, functional, get_activation
from jcausal.models.mlp import MLP
from jcausal.models.rnn import OneStepPredictor, SequenceClassifier
from jcausal.models.train import TrainResult, accuracy, predict, train

__all__ = [
    "ACTIVATIONS",
    "GCECNN",
    "MLP",
    "AlexNetSmall",
    "CheckpointMismatchError",
    "Functional",
    "OneStepPredictor",
    "SequenceClassifier",
    "TrainResult",
    "accuracy",
    "atomic_write_bytes",
    "functional",
    "get_activation",
    "load",
    "predict",
    "save",
    "train",
]
