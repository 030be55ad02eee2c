"""jcausal: causal explanations of neural networks in JAX.

Subpackages: :mod:`jcausal.data` (offline datasets), :mod:`jcausal.models` (reference Flax NNX
models and trainer), :mod:`jcausal.ace` (causal attributions, Chattopadhyay et al. 2019).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jcausal")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
