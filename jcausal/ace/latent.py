r"""Causal effect of a generative model's latents on its output (ACE paper section 5.4, appendices
A.6.2-A.6.3): eqn 2 through the decoder, by Monte Carlo over the latent prior.

For a conditional decoder ``x = D([z; c])`` with ``z ~ N(0, I_K)`` and a one-hot class code ``c``:

- continuous latents: ``E[x | do(z_k = a), do(c = e_l)] = E_{z_{-k}} D([z with z_k = a; e_l])``,
  computed with :func:`jcausal.ace.interventional_expectation` (the definition estimator, the
  decoder handed as a :class:`jcausal.models.Split` so its first linear layer runs once per sample
  and each intervention is a rank-one update); the same prior samples for every ``a``, ``k`` and
  ``l`` (common random numbers). Baseline (section 4.1): the average of the curve over a uniform
  intervention on ``[low, high]`` (trapezoid rule on the grid);
- class latents (A.6.2, case 2): ``E[x | do(c_k = 1)]`` against the baseline ``E[x | do(c_k = 0)]``
  with ``c`` uniform over the other classes, over the same ``z`` samples.

Standard errors per pixel come with every expectation.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.calling import Split, bind_model, unwrap_model
from jcausal._src.checks import require_int
from jcausal._src.xla import jit
from jcausal.ace.estimators import make_estimator
from jcausal.ace.interventional import interventional_expectation
from jcausal.ace.stats import input_stats

__all__ = ["LatentACE", "latent_ace", "rank_latents", "traversals"]


class LatentACE(NamedTuple):
    """Latent ACE of a conditional decoder (a pytree of arrays). ``K`` latents, ``C`` classes,
    ``A`` intervention values, ``P`` outputs (pixels).

    Fields:
      alphas: ``(A,)`` values ``a`` of ``do(z_k = a)``.
      expectations: ``(K, C, A, P)`` ``E[x | do(z_k = a), do(c = e_l)]``.
      stderr: ``(K, C, A, P)`` Monte Carlo standard errors of ``expectations``.
      baselines: ``(K, C, P)`` uniform-intervention baselines (trapezoid average over ``alphas``).
      class_expectations: ``(C, P)`` ``E[x | do(c_k = 1)]``.
      class_baselines: ``(C, P)`` ``E[x | do(c_k = 0)]`` (``c`` uniform over the other classes).
      class_stderr: ``(C, P)`` standard error of ``class_expectations - class_baselines``.
      num_samples: ``()`` prior samples averaged over.
    """

    alphas: jax.Array
    expectations: jax.Array
    stderr: jax.Array
    baselines: jax.Array
    class_expectations: jax.Array
    class_baselines: jax.Array
    class_stderr: jax.Array
    num_samples: jax.Array

    def ace(self) -> jax.Array:
        """``(K, C, A, P)`` ``ACE_{do(z_k = a)}`` given class ``l``: expectation - baseline."""
        return self.expectations - self.baselines[:, :, None, :]

    def class_ace(self) -> jax.Array:
        """``(C, P)`` ``E[x | do(c_k = 1)] - E[x | do(c_k = 0)]``."""
        return self.class_expectations - self.class_baselines

    def total_effect(self) -> jax.Array:
        """``(K,)`` total causal effect of each continuous latent on the image: the mean over
        classes and intervention values of the summed absolute ACE over pixels."""
        return jnp.mean(jnp.sum(jnp.abs(self.ace()), axis=-1), axis=(1, 2))


def _trapezoid_mean(E, alphas):
    """Average of curves ``E (..., A, P)`` over ``[a_0, a_{A-1}]`` by the trapezoid rule, written
    as ``E_0 + mean(E - E_0)`` so that a flat curve gives its value exactly (ACE exactly 0)."""
    a = np.asarray(alphas, np.float64)
    if a.size == 1:
        return E[..., 0, :]
    w = np.zeros_like(a)
    d = np.diff(a)
    w[:-1] += d / 2
    w[1:] += d / 2
    w = jnp.asarray(w / w.sum(), E.dtype)
    E0 = E[..., :1, :]
    return E0[..., 0, :] + jnp.einsum("a,...ap->...p", w, E - E0)


@partial(jit, static_argnames=("model", "num_classes", "batch_size"))
def _class_effects(model, params, Z, num_classes, batch_size):
    """Decode every sample ``z`` with every class code; return per-class means and the stderr of
    ``D(z, e_k) - mean_{j != k} D(z, e_j)``."""
    C = num_classes
    eye = jnp.eye(C, dtype=Z.dtype)

    def per_sample(z):
        U = jnp.concatenate([jnp.broadcast_to(z, (C, z.shape[0])), eye], axis=1)  # (C, K + C)
        Y = jax.vmap(lambda u: model(params, u))(U)  # (C, P)
        others = (jnp.sum(Y, axis=0, keepdims=True) - Y) / max(C - 1, 1)
        return Y, others

    Y, O = jax.lax.map(per_sample, Z, batch_size=batch_size)  # (N, C, P) each
    n = Z.shape[0]
    D = Y - O
    return (jnp.mean(Y, axis=0), jnp.mean(O, axis=0), jnp.std(D, axis=0) / np.sqrt(n))


def latent_ace(decoder: Callable | Split, key: jax.Array, *, num_latents: int, num_classes: int,
               params: Any = None, alphas=None, num_samples: int = 2000, low: float = -3.0,
               high: float = 3.0, latents=None, row_batch_size: int = 4096,
               batch_size: int = 64) -> LatentACE:
    r"""ACE of every latent of a conditional decoder on every output (ACE paper section 5.4).

    .. math::
        \mathbb{E}[x \mid do(z_k = a), do(c = e_l)]
        = \mathbb{E}_{z \sim \mathcal N(0, I)}\, D([z_{z_k = a}; e_l])

    Args:
      decoder: ``D`` on ONE latent vector ``u = [z; c]`` of length ``num_latents + num_classes``
        -> outputs ``(P,)`` (flatten images); ``D(params, u)`` when ``params`` is given. A
        :class:`jcausal.models.Split` (first linear layer + rest; e.g. from
        ``split_functional(cvae.decoder)``) runs the fast rank-one eqn 2.
      key: PRNG key for the prior samples (explicit: results are reproducible).
      num_latents, num_classes: ``K`` and ``C``.
      params: decoder parameters (pass them here, do not close over them).
      alphas: ``(A,)`` values of ``do(z_k = a)`` (default 13 points on ``[low, high]``).
      num_samples: ``N`` prior samples (the standard errors shrink as ``1/sqrt(N)``).
      low, high: the intervention domain of every ``z_k`` (the paper: ``[-3, 3]``).
      latents: which continuous latents to intervene on (default all ``K``).
      row_batch_size, batch_size: memory bounds (samples x alphas in flight; samples per map step).

    Returns:
      :class:`LatentACE`.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jcausal.ace.latent import latent_ace
      >>> W = jnp.arange(12.0).reshape(3, 4) / 10            # a linear decoder on u = [z (2); c (2)]
      >>> res = latent_ace(lambda W, u: W @ u, jax.random.key(0), num_latents=2, num_classes=2,
      ...                  params=W, alphas=[-1.0, 0.0, 1.0], num_samples=64)
      >>> res.ace().shape                                    # (K, C, A, P)
      (2, 2, 3, 3)
      >>> np.asarray(res.ace()[0, 0, :, 1], float).round(3).tolist()        # W[1, 0] * (a - mean a)
      [-0.4, 0.0, 0.4]
    """
    K, C = int(num_latents), int(num_classes)
    if K < 1 or C < 1:
        raise ValueError(f"num_latents and num_classes must be >= 1, got {K}, {C}")
    require_int(num_samples, "num_samples", minimum=2)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"need finite low < high, got [{low}, {high}]")
    if alphas is None:
        alphas = np.linspace(low, high, 13)
    alphas = np.asarray(alphas, np.float32)
    if alphas.ndim != 1 or alphas.size == 0 or not np.all(np.isfinite(alphas)):
        raise ValueError(f"alphas must be a non-empty 1-d array of finite values, got shape {alphas.shape}")
    feats = np.arange(K) if latents is None else np.atleast_1d(np.asarray(latents))
    if feats.size == 0 or np.any((feats < 0) | (feats >= K)):
        raise ValueError(f"latents must be indices in [0, {K}), got {latents!r}")
    Z = jax.random.normal(key, (num_samples, K), jnp.float32)
    decoder, params = unwrap_model(decoder, params)  # a jcausal.wrap model
    u0 = jnp.zeros((K + C,), jnp.float32).at[K].set(1.0)
    model, bound = bind_model(decoder, params, u0)  # read now: never a stale decoder
    out = jax.eval_shape(lambda p, u: model(p, u), bound, u0)
    if len(out.shape) != 1:
        raise ValueError(f"the decoder must return a flat vector (P,) for one latent vector of length "
                         f"{K + C}; it returned shape {out.shape} (reshape its output to (-1,))")

    Es, Ss = [], []
    for lab in range(C):
        U = np.concatenate([np.asarray(Z), np.tile(np.eye(C, dtype=np.float32)[lab], (num_samples, 1))], 1)
        stats = input_stats(U, low=np.r_[np.full(K, low), np.zeros(C)].astype(np.float32),
                            high=np.r_[np.full(K, high), np.ones(C)].astype(np.float32))
        est = make_estimator("definition", row_batch_size=row_batch_size)
        E, info = interventional_expectation(decoder, stats, alphas, params=params, features=feats, data=U,
                                             method=est, return_info=True)
        Es.append(E)
        Ss.append(info.stderr)
    E = jnp.stack(Es, axis=1)  # (F, C, A, P)
    S = jnp.stack(Ss, axis=1)
    base = _trapezoid_mean(E, alphas)
    ce, cb, cs = _class_effects(model, bound, Z, C, batch_size)
    return LatentACE(jnp.asarray(alphas), E, S, base, ce, cb, cs, jnp.asarray(num_samples))


def rank_latents(result: LatentACE, *, negligible: float = 0.01) -> list[dict]:
    """Latents ranked by total causal effect on the output (largest first), each with its share
    of the largest, whether it does nothing discernible (total below ``negligible`` x the
    largest) and, for scale, the summed Monte Carlo standard error of its expectations.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jcausal.ace.latent import latent_ace, rank_latents
      >>> W = jnp.array([[0.0, 1.0, 0.0], [0.1, 2.0, 0.0]])   # z_1 matters most, P = 2 pixels
      >>> res = latent_ace(lambda W, u: W @ u, jax.random.key(0), num_latents=2, num_classes=1,
      ...                  params=W, alphas=[-1.0, 1.0], num_samples=16)
      >>> [r["latent"] for r in rank_latents(res)]
      [1, 0]
    """
    tot = np.asarray(result.total_effect(), np.float64)
    noise = np.asarray(jnp.mean(jnp.sum(result.stderr, axis=-1), axis=(1, 2)), np.float64)
    top = max(float(tot.max()), 1e-30)
    order = np.argsort(-tot)
    return [{"latent": int(k), "total_effect": float(tot[k]), "relative": float(tot[k] / top),
             "noise": float(noise[k]),
             "negligible": bool(tot[k] < negligible * top)} for k in order]


def traversals(decoder: Callable | Split, *, num_latents: int, num_classes: int, label: int, alphas,
               params: Any = None, base=None) -> jax.Array:
    """Decoded latent traversals (ACE paper Figure 7): ``(K, A, P)``, row ``k`` decodes
    ``[z; e_label]`` with ``z = base`` (default 0) and ``z_k = a`` for each ``a`` in ``alphas``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jcausal.ace.latent import traversals
      >>> W = jnp.eye(3, 4)                                   # pixel p = u_p
      >>> T = traversals(lambda W, u: W @ u, num_latents=2, num_classes=2, label=0,
      ...                alphas=[-1.0, 1.0], params=W)
      >>> T.shape, T[1, :, 1].tolist()                        # (K, A, P); row k varies z_k only
      ((2, 2, 3), [-1.0, 1.0])
    """
    K, C = int(num_latents), int(num_classes)
    if not 0 <= label < C:
        raise ValueError(f"label must be in [0, {C}), got {label}")
    decoder, params = unwrap_model(decoder, params)  # a jcausal.wrap model
    alphas = jnp.asarray(alphas, jnp.float32)
    z0 = jnp.zeros((K,), jnp.float32) if base is None else jnp.asarray(base, jnp.float32)
    c = jnp.zeros((C,), jnp.float32).at[label].set(1.0)
    U = jax.vmap(lambda k: jax.vmap(lambda a: jnp.concatenate([z0.at[k].set(a), c]))(alphas))(jnp.arange(K))
    model, bound = bind_model(decoder, params, U[0, 0])
    return _decode_grid(model, bound, U)


@partial(jit, static_argnames=("model",))
def _decode_grid(model, params, U):
    return jax.vmap(jax.vmap(lambda u: model(params, u)))(U)
