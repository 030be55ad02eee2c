"""jcausal: causal explanations of neural networks in JAX.

The library, package by package:

- :func:`jcausal.wrap`: any model (Flax NNX or Linen, Equinox, Keras 3 on JAX, PyTorch, a function)
  as jcausal's one model contract; every method below accepts what it returns.
- :mod:`jcausal.ace`: causal attributions (Chattopadhyay et al., ICML 2019): interventional
  expectations by the definition (eqn 2) or its second-order expansion (eqn 4) through registered
  estimator objects, Bayesian polynomial causal regressors, ACE, recurrent networks, generative
  latents, resumable jobs.
- :mod:`jcausal.gce`: generative causal explanations (O'Shaughnessy et al., NeurIPS 2020):
  information flow, generative maps, ``fit_explainer``, K/L/lambda selection, evaluation.
- :mod:`jcausal.tracer`: TRACER: interventions, layer outputs, CKA, causal graphs and
  contributions, the global view, counterfactuals (GAN, actionable decoding, contrastive view).
- :mod:`jcausal.comparisons`: comparison attributions (gradient saliency, Integrated Gradients).
- :mod:`jcausal.data`: offline datasets (iris, digits, breast cancer, any MNIST-format IDX folder,
  synthetic sequences and latent factors).
- :mod:`jcausal.models`: reference Flax NNX models, the one fit loop (``fit``, ``Loop``,
  ``FitResult``) and the classifier trainer on it, safe checkpoints, VAE building blocks.
- :mod:`jcausal.plot`: a figure for every result type.
- :mod:`jcausal.experiments`: the papers' pipelines, as the ``jcausal`` command runs them.
- ``jcausal.cli``: the ``jcausal`` command (one CLI core: early checks, output locks, one-line
  errors).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jcausal")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["Wrapped", "__version__", "wrap"]


def __getattr__(name: str):
    """``wrap`` and ``Wrapped`` are imported on first use: ``import jcausal`` (and so the ``jcausal``
    command's ``--help`` and its refusals of bad options) does not import jax."""
    if name in ("wrap", "Wrapped"):
        from jcausal._src import wrap as _wrap

        globals().update(wrap=_wrap.wrap, Wrapped=_wrap.Wrapped)
        return globals()[name]
    raise AttributeError(f"module 'jcausal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
