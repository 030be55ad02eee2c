"""Multi-layer perceptron (the ACE paper's Iris and MNIST classifiers)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from jcausal.models.core import get_activation

__all__ = ["MLP"]


class MLP(nnx.Module):
    """Dense network ``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` on ONE example.

    Args:
      sizes: layer widths including input and output, e.g. ``(4, 8, 3)`` or
        ``(784, 256, 128, 64, 32, 10)``.
      activation: hidden activation name (``relu``, ``tanh``, ``softplus``, ...); the output is
        linear (logits).
      dropout: dropout rate after each hidden activation (active only when a ``key`` is passed).
      rngs: ``nnx.Rngs`` for initialisation.

    Call: ``model(x, key=None)`` with ``x`` of shape ``(sizes[0],)`` -> ``(sizes[-1],)`` logits.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jcausal.models import MLP
      >>> model = MLP((4, 8, 3), rngs=nnx.Rngs(0))
      >>> model(jnp.ones(4)).shape
      (3,)
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        param_dtype=jax.numpy.float32,
        rngs: nnx.Rngs,
    ):
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes needs >= 2 positive widths, got {sizes}")
        get_activation(activation)  # validate early
        self.sizes = sizes
        self.activation = activation
        self.layers = nnx.List(
            [nnx.Linear(a, b, param_dtype=param_dtype, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
        )
        self.dropout = nnx.Dropout(dropout)

    def first_affine(self, x: jax.Array) -> jax.Array:
        """The first dense layer's pre-activation ``W x + b``, ``(sizes[1],)`` (affine in ``x``)."""
        if x.shape != (self.sizes[0],):
            raise ValueError(f"MLP expects one example of shape ({self.sizes[0]},), got {x.shape}")
        return self.layers[0](x)

    def after_first(self, z: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Everything after :meth:`first_affine`: ``model(x) == after_first(first_affine(x))``."""
        act = get_activation(self.activation)
        keys = [None] * len(self.layers) if key is None else list(jax.random.split(key, len(self.layers)))
        x = z
        for layer, k in zip(self.layers[1:], keys):
            x = act(x)
            x = self.dropout(x, deterministic=k is None, rngs=k)
            x = layer(x)
        return x

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.after_first(self.first_affine(x), key=key)
