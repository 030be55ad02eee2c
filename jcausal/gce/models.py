"""Generative maps ``g: (alpha, beta) -> x`` for GCE, and their pure-function form.

- :class:`LinearGaussian`: section 4's ``g(alpha, beta) = W [alpha; beta] + eps``,
  ``eps ~ N(0, gamma I)``, with data fidelity ``D = -KL(N(0, I) || N(0, W W^T + gamma I))``.
- The VAEs of :mod:`jcausal.models.vae` (Table 2 conv VAE, MLP VAE), with ``D`` = the ELBO.
- :func:`generative` splits either into pure ``decode(params, z, key=None)`` and
  ``fidelity(params, batch, key)`` plus its parameters (:class:`Generative`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jcausal.models.vae import VAE, conv_vae, mlp_vae

__all__ = ["LinearGaussian", "Generative", "generative", "linear_gaussian_kl", "conv_vae", "mlp_vae"]


def linear_gaussian_kl(W: jax.Array, gamma: float | jax.Array) -> jax.Array:
    """``KL(N(0, I_N) || N(0, S))`` with ``S = W W^T + gamma I``, ``W`` ``(N, d)`` -> scalar.

    .. math:: \\tfrac12 (\\operatorname{tr} S^{-1} - N + \\log\\det S)

    (GCE appendix C.2, Lemma 9). Via a Cholesky factor, so it is exact and differentiable.
    """
    n = W.shape[0]
    S = W @ W.T + gamma * jnp.eye(n, dtype=W.dtype)
    chol = jnp.linalg.cholesky(S)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    inv_chol = jax.scipy.linalg.solve_triangular(chol, jnp.eye(n, dtype=W.dtype), lower=True)
    return 0.5 * (jnp.sum(jnp.square(inv_chol)) - n + logdet)


class LinearGaussian(nnx.Module):
    """The linear-Gaussian generative map of GCE section 4.

    ``x = W z + eps``, ``z = [alpha; beta]`` ``(K + L,)``, ``W = [W_alpha W_beta]`` ``(N, K + L)``,
    ``eps ~ N(0, gamma I)``. With ``unit_columns=True`` every column is rescaled to norm
    ``sqrt(1 - gamma)`` (Proposition 3's constraint), so only directions are learned.

    ``decode(z, key=None)`` -> ``(N,)`` (the noise is added when ``key`` is given);
    ``fidelity(batch, key)`` -> ``-KL(p(X) || p(X_hat))`` for ``X ~ N(0, I)`` (data unused).
    """

    def __init__(self, features: int, K: int, L: int, *, gamma: float = 0.05, unit_columns: bool = False,
                 rngs: nnx.Rngs):
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma = {gamma}: the noise variance must be in [0, 1)")
        self.features, self.K, self.L = int(features), int(K), int(L)
        self.gamma = float(gamma)
        self.unit_columns = bool(unit_columns)
        init = jax.random.normal(rngs.params(), (features, K + L)) / jnp.sqrt(float(features))
        self.W = nnx.Param(init)

    @property
    def weights(self) -> jax.Array:
        """The effective ``W`` ``(N, K + L)`` (column-normalised when ``unit_columns``)."""
        W = self.W[...]
        if self.unit_columns:
            W = W * (jnp.sqrt(1.0 - self.gamma) / jnp.linalg.norm(W, axis=0, keepdims=True))
        return W

    def decode(self, z: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        x = self.weights @ z
        if key is not None and self.gamma > 0:
            x = x + jnp.sqrt(self.gamma) * jax.random.normal(key, x.shape, x.dtype)
        return x

    def fidelity(self, batch: jax.Array | None = None, key: jax.Array | None = None) -> jax.Array:
        return -linear_gaussian_kl(self.weights, self.gamma)

    def __call__(self, z: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.decode(z, key=key)


class Generative(NamedTuple):
    """A generative map as pure functions of its parameters.

    ``decode(params, z, key=None)``: ONE latent ``(K + L,)`` -> ONE input (noise only with a key).
    ``fidelity(params, batch, key)``: the data term ``D`` of the objective, a scalar
    (batch mean ELBO for a VAE; ``-KL`` for the linear-Gaussian map, which ignores ``batch``).
    ``encode(params, x)``: ``(mean, log_var)`` of ONE input, or ``None`` for maps without an encoder.
    ``noisy``: whether ``decode`` samples when given a key (pass ``noisy=True`` to the estimators).
    """

    decode: Callable
    fidelity: Callable
    encode: Callable | None
    params: nnx.State
    noisy: bool


def generative(model: nnx.Module) -> Generative:
    """Split a :class:`LinearGaussian` or a :class:`~jcausal.models.vae.VAE` into pure functions.

    Example::

        gen = generative(conv_vae(8, rngs=nnx.Rngs(0)))
        x = gen.decode(gen.params, jnp.zeros(8))                       # (28, 28, 1)
        D = gen.fidelity(gen.params, images, key)                       # mean ELBO of the batch
    """
    graphdef, params = nnx.split(model)

    def decode(params, z, key=None):
        m = nnx.merge(graphdef, params)
        return m.decode(z, key=key) if isinstance(m, LinearGaussian) else m.decode(z)

    if isinstance(model, VAE):
        def fidelity(params, batch, key):
            m = nnx.merge(graphdef, params)
            keys = jax.random.split(key, batch.shape[0])
            return jnp.mean(jax.vmap(m.elbo)(batch, keys))

        def encode(params, x):
            return nnx.merge(graphdef, params).encode(x)

        return Generative(decode, fidelity, encode, params, False)
    if isinstance(model, LinearGaussian):
        def fidelity(params, batch=None, key=None):
            return nnx.merge(graphdef, params).fidelity()

        return Generative(decode, fidelity, None, params, model.gamma > 0)
    raise TypeError(f"{type(model).__name__} is not a LinearGaussian or VAE; build a Generative "
                    "(decode, fidelity, encode, params, noisy) yourself")
