"""The bridge between Flax NNX modules and pure functions of (params, one example)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from flax import nnx

__all__ = ["Functional", "functional", "SplitFunctional", "split_functional", "ACTIVATIONS", "get_activation"]

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

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jcausal.models import MLP, functional
      >>> model = MLP((4, 8, 3), rngs=nnx.Rngs(0))
      >>> apply, params = functional(model)
      >>> X = jnp.ones((5, 4))
      >>> jax.vmap(apply, in_axes=(None, 0))(params, X).shape
      (5, 3)
      >>> bool(jnp.allclose(apply(params, X[0]), model(X[0])))
      True
    """
    graphdef, params = nnx.split(model)

    def apply(params, *inputs, key=None):
        return nnx.merge(graphdef, params)(*inputs, key=key)

    return Functional(apply, params)


class SplitFunctional(NamedTuple):
    """A module as its first affine map, the rest, and its parameters (see
    :class:`jcausal._src.calling.Split`): ``split = Split(first, rest)`` is what the fast eqn 2 of
    :mod:`jcausal.ace` takes; ``split.then(jax.nn.softmax)`` gives probabilities.

    ``first(params, x)`` is the first layer's pre-activation on ONE example, ``rest(params, z)``
    the remaining network (deterministic); ``rest(params, first(params, x)) == apply(params, x)``.
    """

    split: Any
    params: nnx.State

    @property
    def first(self):
        return self.split.first

    @property
    def rest(self):
        return self.split.rest


def split_functional(model: nnx.Module) -> SplitFunctional:
    """Split an NNX module with ``first_affine(x)`` and ``after_first(z)`` methods (the project's
    MLP, GCECNN) into pure ``first(params, x)``, ``rest(params, z)`` and its parameters.

    Example::

        (first, rest), params = split_functional(MLP((4, 8, 3), rngs=nnx.Rngs(0)))
        z = first(params, X[0])                    # (8,) = W x + b
        logits = rest(params, z)                   # (3,) == apply(params, X[0])

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jcausal.models import MLP, functional, split_functional
      >>> model = MLP((4, 8, 3), rngs=nnx.Rngs(0))
      >>> (first, rest), params = split_functional(model)
      >>> x = jnp.arange(4.0)
      >>> first(params, x).shape                             # W x + b
      (8,)
      >>> bool(jnp.allclose(rest(params, first(params, x)), model(x)))
      True
    """
    from jcausal._src.calling import Split

    if not (hasattr(model, "first_affine") and hasattr(model, "after_first")):
        raise TypeError(
            f"{type(model).__name__} has no first_affine/after_first methods: hand your model as "
            "jcausal.models.Split(first, rest) yourself, with first the affine first layer")
    graphdef, params = nnx.split(model)

    def first(params, x):
        return nnx.merge(graphdef, params).first_affine(x)

    def rest(params, z):
        return nnx.merge(graphdef, params).after_first(z)

    return SplitFunctional(Split(first, rest), params)
