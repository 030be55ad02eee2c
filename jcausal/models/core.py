"""The bridge between Flax NNX modules and pure functions of (params, one example)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from flax import nnx

__all__ = ["Functional", "functional", "ACTIVATIONS", "get_activation"]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jax.numpy.tanh,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "silu": jax.nn.silu,
    "identity": lambda x: x,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name`` (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class Functional(NamedTuple):
    """A module as a pure function and its parameters.

    ``apply(params, *inputs, key=None)`` runs the module on ONE example (batch with ``jax.vmap``);
    ``key`` drives dropout and is ``None`` for deterministic evaluation. ``params`` is the module's
    whole state (an ``nnx.State`` pytree): pass it as an argument to jitted code, never close over it.
    """

    apply: Callable[..., Any]
    params: nnx.State


def functional(model: nnx.Module) -> Functional:
    """Split an NNX module into ``apply(params, *inputs, key=None)`` and its parameters.

    Example::

        apply, params = functional(MLP((4, 8, 3), rngs=nnx.Rngs(0)))
        logits = jax.vmap(apply, in_axes=(None, 0))(params, X)     # (n, 3)
        H = jax.hessian(lambda x: apply(params, x))(X[0])          # (3, 4, 4)
    """
    graphdef, params = nnx.split(model)

    def apply(params, *inputs, key=None):
        return nnx.merge(graphdef, params)(*inputs, key=key)

    return Functional(apply, params)
