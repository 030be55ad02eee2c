"""Evaluating a learned explanation: accuracy when a factor is resampled, and latent sweeps.

GCE paper section 5 (Figure 5b) and Figures 3, 12, 13. The per-factor information flow
(Figure 5a) is :func:`jcausal.gce.factor_flows`. Every function here takes the generator's
``encode(gp, x) -> (mean, log_var)`` and ``decode(gp, z)`` and the classifier
``classify(cp, x) -> (M,)`` probabilities, with ``params = (gp, cp)`` (either ``None`` to call
without parameters), and acts on a dataset in fixed-size ``lax.map`` chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.checks import require_finite
from jcausal._src.xla import jit
from jcausal.gce.objectives import bind_models, caller, split_params

__all__ = ["AccuracyDrop", "FineSweep", "Sweep", "resample_accuracy", "latent_sweeps", "fine_sweeps"]


class AccuracyDrop(NamedTuple):
    """Classifier accuracy (fractions in [0, 1]) on ``original`` inputs, on their ``reencoded``
    reconstructions ``decode(mean(encode(x)))``, and ``resampled[j]`` after latent ``j`` of every
    encoded input is replaced by a draw from the prior ``N(0, 1)``; ``(K + L,)``."""

    original: jax.Array
    reencoded: jax.Array
    resampled: jax.Array


class Sweep(NamedTuple):
    """Latent sweeps of ``n`` inputs: ``images[i, j, v]`` decodes input ``i``'s latent mean with
    factor ``j`` shifted by ``offsets[v]`` (``offsets`` contains 0: the reconstruction);
    ``probs[i, j, v]`` the classifier's ``(M,)`` probabilities of that image."""

    images: jax.Array  # (n, K + L, V, *x_shape)
    probs: jax.Array  # (n, K + L, V, M)
    offsets: jax.Array  # (V,)


class FineSweep(NamedTuple):
    """High-resolution sweeps of one factor across each input's transition region (GCE Figure 14):
    ``images[i, v]`` decodes input ``i``'s latent mean with the factor shifted by ``offsets[i, v]``;
    ``probs[i, v]`` the classifier's ``(M,)`` probabilities of that image."""

    images: jax.Array  # (n, V, *x_shape)
    probs: jax.Array  # (n, V, M)
    offsets: jax.Array  # (n, V)
    factor: int


def _callers(encode, decode, classify, params):
    gp, cp = split_params(params)
    return caller(encode, gp), caller(decode, gp), caller(classify, cp)


@partial(jit, static_argnames=("encode", "decode", "classify", "batch_size"))
def _resample(encode, decode, classify, params, key, X, y, batch_size):
    enc, dec, clf = _callers(encode, decode, classify, params)
    n = X.shape[0]
    keys = jax.random.split(key, n)

    def one(args):
        x, label, k = args
        z, _ = enc(x)
        dim = z.shape[0]
        noise = jax.random.normal(k, (dim,), z.dtype)
        zs = jnp.where(jnp.eye(dim, dtype=bool), noise[None, :], z[None, :])  # row j: z_j resampled
        hit = lambda p: (jnp.argmax(p) == label).astype(jnp.float32)  # noqa: E731
        return (hit(clf(x)), hit(clf(dec(z))),
                jax.vmap(lambda zz: hit(clf(dec(zz))))(zs))

    orig, re, res = jax.lax.map(one, (X, y, keys), batch_size=batch_size)
    return AccuracyDrop(jnp.mean(orig), jnp.mean(re), jnp.mean(res, axis=0))


def resample_accuracy(encode: Callable, decode: Callable, classify: Callable, key: jax.Array, X, y, *,
                      params=None, batch_size: int = 128) -> AccuracyDrop:
    """Accuracy drop when each latent factor is resampled from its prior (GCE Figure 5b).

    For every input ``x`` (label ``y``): ``z = mean(encode(x))``; the classifier is scored on
    ``x``, on ``decode(z)`` and, for each factor ``j``, on ``decode(z with z_j ~ N(0, 1))``.
    Causal factors should lower the accuracy, noncausal ones should not.

    Args:
      encode, decode, classify, params: see the module docstring.
      key: PRNG key of the resampled values.
      X: ``(n, *x_shape)`` inputs; y: ``(n,)`` integer labels (indices into the classifier's output).
      batch_size: inputs per ``lax.map`` chunk.

    Returns:
      :class:`AccuracyDrop`.
    """
    X = jnp.asarray(X)
    y = jnp.asarray(y, jnp.int32)
    if X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ValueError(f"X and y need the same non-zero length, got {X.shape[0]} and {y.shape[0]}")
    require_finite(X, "X", rows="inputs", fix="their latent means and accuracies would be NaN")
    encode, decode, classify, params = bind_models(decode, classify, params, encode=encode, example=X[0])
    return _resample(encode, decode, classify, params, key, X, y, int(batch_size))


@partial(jit, static_argnames=("encode", "decode", "classify"))
def _sweeps(encode, decode, classify, params, X, offsets):
    enc, dec, clf = _callers(encode, decode, classify, params)

    def one(x):
        z, _ = enc(x)
        dim = z.shape[0]
        eye = jnp.eye(dim, dtype=z.dtype)
        zs = z[None, None, :] + offsets[None, :, None] * eye[:, None, :]  # (dim, V, dim)
        imgs = jax.vmap(jax.vmap(dec))(zs)
        return imgs, jax.vmap(jax.vmap(clf))(imgs)

    return jax.lax.map(one, X)


def latent_sweeps(encode: Callable, decode: Callable, classify: Callable, X, *, params=None,
                  offsets=None) -> Sweep:
    """Decoded images as each latent factor of each input is swept (GCE Figures 3, 12, 13).

    Args:
      encode, decode, classify, params: see the module docstring.
      X: ``(n, *x_shape)`` inputs to explain.
      offsets: ``(V,)`` shifts added to one factor of the latent mean (default
        ``linspace(-3, 3, 7)``, which contains 0).

    Returns:
      :class:`Sweep` with images ``(n, K + L, V, *x_shape)`` and probabilities ``(n, K + L, V, M)``.
    """
    offsets = jnp.linspace(-3.0, 3.0, 7) if offsets is None else jnp.asarray(offsets, jnp.float32)
    if offsets.ndim != 1 or not np.all(np.isfinite(np.asarray(offsets))):
        raise ValueError(f"offsets must be a finite 1-d array, got {np.asarray(offsets)!r}")
    X = jnp.asarray(X)
    require_finite(X, "X", rows="inputs", fix="their latent means and sweeps would be NaN")
    encode, decode, classify, params = bind_models(decode, classify, params, encode=encode, example=X[0])
    imgs, probs = _sweeps(encode, decode, classify, params, X, offsets)
    return Sweep(imgs, probs, offsets)


@partial(jit, static_argnames=("encode", "decode", "classify", "factor", "n_fine", "half_width"))
def _fine(encode, decode, classify, params, X, coarse, factor, n_fine, half_width):
    enc, dec, clf = _callers(encode, decode, classify, params)

    def along(z, offs):
        zs = z[None, :] + offs[:, None] * jax.nn.one_hot(factor, z.shape[0], dtype=z.dtype)[None, :]
        imgs = jax.vmap(dec)(zs)
        return imgs, jax.vmap(clf)(imgs)

    def one(x):
        z, _ = enc(x)
        _, p = along(z, coarse)
        change = jnp.sum(jnp.abs(jnp.diff(p, axis=0)), axis=-1)  # total-variation step per interval
        v = jnp.argmax(change)
        centre = 0.5 * (coarse[v] + coarse[v + 1])
        offs = centre + jnp.linspace(-half_width, half_width, n_fine)
        imgs, probs = along(z, offs)
        return imgs, probs, offs

    return jax.lax.map(one, X)


def fine_sweeps(encode: Callable, decode: Callable, classify: Callable, X, *, params=None, factor: int = 0,
                n_fine: int = 12, span: float = 3.0, coarse: int = 61, half_width: float = 0.5) -> FineSweep:
    """Sweep one factor finely where the classifier's decision changes (GCE Figure 14).

    For each input: sweep ``factor`` of its latent mean over ``coarse`` offsets in
    ``[-span, span]``, find the interval where the classifier's probabilities change most (the
    transition), and decode ``n_fine`` offsets evenly over ``centre +- half_width`` there. An input
    whose decision never changes gets the window of its largest (possibly tiny) change.

    Args:
      encode, decode, classify, params: see the module docstring.
      X: ``(n, *x_shape)`` inputs.
      factor: the latent factor swept (``0``: the first causal factor).
      n_fine, half_width: offsets in the fine window and its half width (latent units).
      span, coarse: the coarse search range and its number of offsets.

    Returns:
      :class:`FineSweep` with images ``(n, n_fine, *x_shape)``, probabilities ``(n, n_fine, M)`` and
      each input's offsets ``(n, n_fine)``.

    Raises:
      ValueError: non-finite inputs, a factor outside the latent, or sizes that are not positive.
    """
    X = jnp.asarray(X)
    require_finite(X, "X", rows="inputs", fix="their latent means and sweeps would be NaN")
    if n_fine < 2 or coarse < 2 or not (span > 0 and half_width > 0):
        raise ValueError(f"need n_fine >= 2, coarse >= 2, span > 0 and half_width > 0, got {n_fine}, "
                         f"{coarse}, {span}, {half_width}")
    encode, decode, classify, params = bind_models(decode, classify, params, encode=encode, example=X[0])
    dim = int(np.prod(jax.eval_shape(lambda P, x: encode(P, x)[0], params[0], X[0]).shape))
    if not 0 <= int(factor) < dim:
        raise ValueError(f"factor = {factor}: the latent has {dim} factors (0..{dim - 1})")
    grid = jnp.linspace(-float(span), float(span), int(coarse))
    imgs, probs, offs = _fine(encode, decode, classify, params, X, grid, int(factor), int(n_fine),
                              float(half_width))
    return FineSweep(imgs, probs, offs, int(factor))
