"""jcausal: causal explanations of neural networks in JAX.

Subpackages: :mod:`jcausal.data` (offline datasets), :mod:`jcausal.models` (reference Flax NNX
models and trainer), :mod:`jcausal.ace` (causal attributions, Chattopadhyay et al. 2019).
:func:`jcausal.wrap` brings a model of another framework (Flax Linen, Equinox, Keras, PyTorch).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jcausal")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from jcausal._src.wrap import Wrapped, wrap

__all__ = ["Wrapped", "__version__", "wrap"]
