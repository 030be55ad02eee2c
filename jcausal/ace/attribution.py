"""The one-call ACE layer (ACE paper section 4.4): Phase I expectations on a grid, Phase II causal
regressors, baselines, global curves and local saliency -- on top of the pure functions of
:mod:`jcausal.ace.interventional` and :mod:`jcausal.ace.regressors`."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.io import atomic_write_bytes
from jcausal.ace import regressors as R
from jcausal.ace.interventional import interventional_expectation
from jcausal.ace.stats import InputStats, input_stats, intervention_grid, with_domain

__all__ = ["ACEResult", "explain", "save_result", "load_result"]


class ACEResult(NamedTuple):
    """Everything one ACE run produced (a pytree of arrays).

    Fields:
      features: ``(F,)`` int32 feature indices.
      alphas: ``(F, A)`` the intervention grid.
      expectations: ``(F, A, m)`` Phase I ``E[y_m | do(x_f = alphas[f, a])]``.
      regressor: :class:`jcausal.ace.regressors.Regressor` with batch shape ``(F, m)`` (orders,
        evidence per order, coefficients, ...).
      baselines: ``(F, m)`` the baseline of each (feature, output) (section 4.1).
    """

    features: jax.Array
    alphas: jax.Array
    expectations: jax.Array
    regressor: R.Regressor
    baselines: jax.Array

    @property
    def orders(self) -> jax.Array:
        """``(F, m)`` selected polynomial orders."""
        return self.regressor.order

    def predict(self, a):
        """Causal-regressor mean and variance of ``E[y | do(x_f = a)]``: ``a`` ``(n,)`` or
        ``(F, n)``; returns two ``(F, n, m)`` arrays."""
        a = jnp.asarray(a, self.alphas.dtype)
        a = a[:, None, :] if a.ndim == 2 else a
        mean, var = R.predict(self.regressor, a)
        return jnp.swapaxes(mean, 1, 2), jnp.swapaxes(var, 1, 2)

    def ace(self, a=None):
        """Global ACE curves ``ACE_{do(x_f = a)}^{y_m} = mean(a) - baseline`` (eqn 1), ``(F, n, m)``;
        ``a`` defaults to the grid ``alphas``."""
        mean, _ = self.predict(self.alphas if a is None else a)
        return mean - self.baselines[:, None, :]

    def local_saliency(self, X):
        """Local causal saliency ``ACE_{do(x_f = x_f^input)}`` for a batch ``X`` ``(B, k)``:
        each feature intervened at the input's own value (section 5.2). Returns ``(B, F, m)``."""
        X = jnp.asarray(X, self.alphas.dtype)
        vals = X[:, self.features].T  # (F, B)
        return jnp.transpose(self.ace(vals), (1, 0, 2))


def explain(
    f: Callable,
    X=None,
    *,
    params: Any = None,
    stats: InputStats | None = None,
    features=None,
    num_alphas: int = 20,
    alphas=None,
    max_order: int = 5,
    low=None,
    high=None,
    baseline_at=None,
    regressor_options: dict | None = None,
    **phase1,
) -> ACEResult:
    """Average causal effects of input features on every output of ``f``, in one call.

    Args:
      f: the model on ONE input, ``f(params, x)`` (or ``f(x)`` without ``params``) -> ``(m,)``.
      X: ``(n, k)`` training inputs (or an iterator of batches); not needed when ``stats`` is given.
      params: parameters passed to ``f``.
      stats: precomputed :func:`jcausal.ace.input_stats`.
      features: feature indices (default all).
      num_alphas: grid size per feature on ``[low_i, high_i]`` (ignored when ``alphas`` is given).
      alphas: explicit ``(A,)`` or ``(F, A)`` grid.
      max_order: highest causal-regressor order tried.
      low, high: intervention domain (default the data's min and max).
      baseline_at: ``None`` for the paper's uniform-intervention baseline, or a domain-knowledge
        point per feature (scalar or ``(F,)``): baseline = ``E[y | do(x_f = baseline_at_f)]``.
      regressor_options: extra arguments of :func:`jcausal.ace.fit_regressors`, e.g.
        ``{"inference": "nuts", "key": key}``.
      **phase1: passed to :func:`jcausal.ace.interventional_expectation` (``method``, ``rank``,
        ``batch_size``, ``key``, ``data``, ``head``, ``devices``, ...).

    Returns:
      :class:`ACEResult`.
    """
    if stats is None:
        if X is None:
            raise ValueError("explain needs training inputs X or precomputed stats=")
        stats = input_stats(X, low=low, high=high)
    else:
        stats = with_domain(stats, low, high)
    k = stats.mean.shape[0]
    feats = np.arange(k) if features is None else np.atleast_1d(np.asarray(features))
    if alphas is None:
        alphas = intervention_grid(stats, num_alphas, feats)
    alphas = jnp.asarray(alphas, stats.mean.dtype)
    if alphas.ndim == 1:
        alphas = jnp.broadcast_to(alphas, (feats.size, alphas.shape[0]))
    expectations = interventional_expectation(f, stats, alphas, params=params, features=feats,
                                              **phase1)
    lo = np.asarray(stats.low)[feats]
    hi = np.asarray(stats.high)[feats]
    reg = R.fit_regressors(alphas, expectations, lo, hi, max_order=max_order, **(regressor_options or {}))
    if baseline_at is None:
        base = R.baseline(reg)
    else:
        at = jnp.asarray(baseline_at, reg.coef.dtype)
        base = R.baseline(reg, at=at[:, None] if at.ndim == 1 else at)  # (F,) -> one per feature
    return ACEResult(jnp.asarray(feats, jnp.int32), alphas, expectations, reg, base)


def save_result(path: str | os.PathLike, result: ACEResult) -> None:
    """Write an :class:`ACEResult` to ``.npz`` atomically (arrays only; no pickle)."""
    arrays = {name: np.asarray(v) for name, v in result._asdict().items() if name != "regressor"}
    arrays.update({f"regressor.{name}": np.asarray(v) for name, v in result.regressor._asdict().items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_result(path: str | os.PathLike) -> ACEResult:
    """Read an :class:`ACEResult` written by :func:`save_result`."""
    with np.load(path, allow_pickle=False) as z:
        missing = [n for n in (*ACEResult._fields[:3], "baselines") if n not in z.files]
        missing += [f"regressor.{n}" for n in R.Regressor._fields if f"regressor.{n}" not in z.files]
        if missing:
            raise ValueError(f"{path} is not an ACE result file: missing {missing}")
        reg = R.Regressor(*(jnp.asarray(z[f"regressor.{n}"]) for n in R.Regressor._fields))
        return ACEResult(jnp.asarray(z["features"]), jnp.asarray(z["alphas"]),
                         jnp.asarray(z["expectations"]), reg, jnp.asarray(z["baselines"]))
