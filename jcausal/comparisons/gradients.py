"""Gradient-based comparison methods: gradient saliency and Integrated Gradients.

Integrated Gradients (Sundararajan et al., 2017), as compared in the ACE paper (section 5.2):

.. math::
    IG_i(x) = (x_i - x'_i) \\int_0^1 \\partial_i f(x' + t (x - x'))\\, dt

for every output at once (one Jacobian per quadrature node). Functions act on ONE input; ``vmap``
them over a batch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.calling import unwrap_model
from jcausal._src.checks import require_finite, require_int, require_real

__all__ = ["RULES", "gradient_saliency", "integrated_gradients", "completeness_gap", "quadrature"]

RULES = ("left", "right", "midpoint", "trapezoid")


def quadrature(steps: int, rule: str = "trapezoid", dtype=jnp.float32):
    """Nodes ``t`` and weights ``w`` on [0, 1] for the Riemann ``left``/``right``/``midpoint``
    sums with ``steps`` intervals, or the ``trapezoid`` rule (``steps + 1`` nodes).

    Examples:
      >>> from jcausal.comparisons import quadrature
      >>> t, w = quadrature(2)                                # trapezoid: 3 nodes on [0, 1]
      >>> t.tolist(), w.tolist()
      ([0.0, 0.5, 1.0], [0.25, 0.5, 0.25])
    """
    require_int(steps, "steps")
    if rule == "left":
        t, w = np.arange(steps) / steps, np.full(steps, 1.0 / steps)
    elif rule == "right":
        t, w = np.arange(1, steps + 1) / steps, np.full(steps, 1.0 / steps)
    elif rule == "midpoint":
        t, w = (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    elif rule == "trapezoid":
        t = np.arange(steps + 1) / steps
        w = np.full(steps + 1, 1.0 / steps)
        w[[0, -1]] = 0.5 / steps
    else:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    return jnp.asarray(t, dtype), jnp.asarray(w, dtype)


def _jacobian(f, params, x):
    def g(z):
        return jnp.atleast_1d(f(z) if params is None else f(params, z))

    return jax.jacrev(g)(x)  # (m, *x.shape)


def gradient_saliency(f: Callable, x: jax.Array, *, params=None) -> jax.Array:
    """``d f_m / d x`` for every output: ``(m, *x.shape)`` (Simonyan et al., 2013).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jcausal.comparisons import gradient_saliency
      >>> gradient_saliency(lambda x: jnp.sum(x ** 2), jnp.array([1.0, -2.0])).tolist()   # 2 x
      [[2.0, -4.0]]
    """
    f, params = unwrap_model(f, params, split=False)  # a jcausal.wrap model: its apply and params
    return _jacobian(f, params, x)


def integrated_gradients(
    f: Callable,
    x: jax.Array,
    reference_input: jax.Array | None = None,
    *,
    params=None,
    steps: int = 64,
    rule: str = "trapezoid",
    batch_size: int | None = None,
) -> jax.Array:
    """Integrated Gradients of every output with respect to ONE input ``x``.

    Args:
      f: ``f(x)`` (or ``f(params, x)`` with ``params``) -> ``(m,)`` or scalar.
      x: the input, any shape.
      reference_input: the reference input ``x'``, ``x.shape`` (default zeros).
      steps: quadrature intervals; ``rule``: ``left``, ``right``, ``midpoint`` or ``trapezoid``.
      batch_size: quadrature nodes evaluated at once (``None``: all; bounds memory).

    Returns:
      ``(m, *x.shape)`` attributions; ``sum`` over the input axes approximates
      ``f(x) - f(x')`` (completeness).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jcausal.comparisons import integrated_gradients
      >>> f = lambda x: jnp.sum(x ** 2)                       # IG from 0 is exactly x_i^2
      >>> integrated_gradients(f, jnp.array([1.0, -2.0]), steps=8).tolist()
      [[1.0, 4.0]]
    """
    f, params = unwrap_model(f, params, split=False)  # a jcausal.wrap model: its apply and params
    require_real(x, "the input x", floating=True)
    x = jnp.asarray(x)
    require_finite(x, "the input x", rows=None, fix="the attributions of such an input are NaN")
    if reference_input is not None:
        require_real(reference_input, "reference_input")
        require_finite(reference_input, "reference_input", rows=None)
    ref = jnp.zeros_like(x) if reference_input is None else jnp.asarray(reference_input, x.dtype)
    if ref.shape != x.shape:
        raise ValueError(f"reference_input shape {ref.shape} != input shape {x.shape}")
    t, w = quadrature(steps, rule, x.dtype)
    delta = x - ref

    def weighted_jac(tw):
        ti, wi = tw
        return wi * _jacobian(f, params, ref + ti * delta)

    jacs = jax.lax.map(weighted_jac, (t, w), batch_size=batch_size or t.shape[0])
    return jnp.sum(jacs, axis=0) * delta[None]


def completeness_gap(f: Callable, x, attributions, reference_input=None, *, params=None) -> jax.Array:
    """``sum_i IG_i - (f(x) - f(x'))`` per output, shape ``(m,)``; ~0 for a good quadrature.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jcausal.comparisons import completeness_gap, integrated_gradients
      >>> f = lambda x: jnp.tanh(x[:1] * x[1:])
      >>> x = jnp.array([1.0, 2.0])
      >>> abs(float(completeness_gap(f, x, integrated_gradients(f, x, steps=256))[0])) < 1e-3
      True
    """
    f, params = unwrap_model(f, params, split=False)  # a jcausal.wrap model: its apply and params
    x = jnp.asarray(x)
    ref = jnp.zeros_like(x) if reference_input is None else jnp.asarray(reference_input, x.dtype)

    def g(z):
        return jnp.atleast_1d(f(z) if params is None else f(params, z))

    total = jnp.sum(attributions.reshape(attributions.shape[0], -1), axis=1)
    return total - (g(x) - g(ref))
