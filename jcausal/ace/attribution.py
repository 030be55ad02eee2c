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

from jcausal._src.calling import unwrap_model
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
      stderr: ``(F, A, m)`` standard errors of the expectations (eqn 2, ``hutchinson``) or ``None``.
      input_dim: ``()`` int32 ``k``, the model's input width (``None`` in old files).
    """

    features: jax.Array
    alphas: jax.Array
    expectations: jax.Array
    regressor: R.Regressor
    baselines: jax.Array
    stderr: jax.Array | None = None
    input_dim: jax.Array | None = None

    @property
    def num_inputs(self) -> int | None:
        """``k``, the model's input width, when recorded (``None`` for results saved before it)."""
        return None if self.input_dim is None else int(np.asarray(self.input_dim))

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
        each feature intervened at the input's own value (section 5.2). Returns ``(B, F, m)``.

        ``X`` must hold all ``k`` input features (the width the result was computed on); with
        fewer columns the feature indices would not address the right values."""
        X = np.asarray(X)
        if X.ndim == 1:
            X = X[None]
        k = self.num_inputs
        if X.ndim != 2 or (k is not None and X.shape[1] != k) or X.shape[1] <= int(np.max(self.features)):
            width = k if k is not None else f"> {int(np.max(self.features))}"
            feats = np.asarray(self.features).tolist()[:10]
            raise ValueError(f"X must have shape (B, {width}): every input feature (the result covers "
                             f"features {feats}), got {X.shape}")
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
    bayes_factor: float = 3.0,
    regressor_options: dict | None = None,
    **phase1,
) -> ACEResult:
    """Average causal effects of input features on every output of ``f``, in one call.

    Phase I defaults to the definition (eqn 2) over the rows ``X`` when ``X`` is an array: on
    trained networks the second-order expansion (eqn 4) can be far off (measured 5x max|E| on an
    MNIST MLP); pass ``method="directional"`` etc. for the expansion (it is then checked against
    eqn 2 on a subsample, see :func:`jcausal.ace.interventional_expectation`).

    Args:
      f: the model on ONE input, ``f(params, x)`` (or ``f(x)`` without ``params``) -> ``(m,)``, or a
        :class:`jcausal.models.Split` (first affine layer + rest) for the fast eqn 2.
      X: ``(n, k)`` training inputs (or an iterator of batches, then eqn 4 from the streamed
        moments); not needed when ``stats`` is given.
      params: parameters passed to ``f``.
      stats: precomputed :func:`jcausal.ace.input_stats`.
      features: feature indices (default all).
      num_alphas: grid size per feature on ``[low_i, high_i]`` (ignored when ``alphas`` is given).
      alphas: explicit ``(A,)`` or ``(F, A)`` grid.
      max_order: highest causal-regressor order tried.
      low, high: intervention domain (default the data's min and max).
      baseline_at: ``None`` for the paper's uniform-intervention baseline, or a domain-knowledge
        point per feature (scalar or ``(F,)``): baseline = ``E[y | do(x_f = baseline_at_f)]``.
      bayes_factor: Phase II order selection margin (see :func:`jcausal.ace.fit_regressors`).
      regressor_options: extra arguments of :func:`jcausal.ace.fit_regressors`, e.g.
        ``{"inference": "nuts", "key": key}``.
      **phase1: passed to :func:`jcausal.ace.interventional_expectation` (``method``, ``rank``,
        ``batch_size``, ``key``, ``data``, ``num_rows``, ``head``, ``devices``, ...).

    Returns:
      :class:`ACEResult`.

    Examples:
      >>> import jax, numpy as np
      >>> from jcausal.ace import explain
      >>> X = np.random.default_rng(0).uniform(size=(100, 2)).astype(np.float32)
      >>> res = explain(lambda x: jax.nn.sigmoid(3 * x[:1] - x[1:]), X, num_alphas=8, max_order=3)
      >>> res.expectations.shape, res.orders.shape
      ((2, 8, 1), (2, 1))
    """
    f, params = unwrap_model(f, params)  # a jcausal.wrap model: its Split (or apply) and params
    if baseline_at is not None and not np.all(np.isfinite(np.asarray(baseline_at, np.float64))):
        raise ValueError(f"baseline_at must be finite, got {baseline_at!r}")
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
    if "data" not in phase1 and phase1.get("method") is None and hasattr(X, "shape") and X is not None:
        phase1["data"] = X  # eqn 2 over the rows given (also the eqn-4 check rows)
    phase1.pop("return_info", None)
    expectations, info = interventional_expectation(f, stats, alphas, params=params, features=feats,
                                                    return_info=True, **phase1)
    lo = np.asarray(stats.low)[feats]
    hi = np.asarray(stats.high)[feats]
    reg = R.fit_regressors(alphas, expectations, lo, hi, max_order=max_order, bayes_factor=bayes_factor,
                           **(regressor_options or {}))
    if baseline_at is None:
        base = R.baseline(reg)
    else:
        at = jnp.asarray(baseline_at, reg.coef.dtype)
        base = R.baseline(reg, at=at[:, None] if at.ndim == 1 else at)  # (F,) -> one per feature
    return ACEResult(jnp.asarray(feats, jnp.int32), alphas, expectations, reg, base, info.stderr,
                     jnp.asarray(k, jnp.int32))


def save_result(path: str | os.PathLike, result: ACEResult) -> None:
    """Write an :class:`ACEResult` to ``.npz`` atomically (arrays only; no pickle).

    Examples:
      >>> import os, tempfile, numpy as np
      >>> from jcausal.ace import explain, load_result, save_result
      >>> X = np.random.default_rng(0).uniform(size=(50, 2)).astype(np.float32)
      >>> res = explain(lambda x: x[:1] * 2.0, X, num_alphas=5, max_order=2)
      >>> path = os.path.join(tempfile.mkdtemp(), "ace.npz")
      >>> save_result(path, res)
      >>> bool(np.array_equal(load_result(path).expectations, res.expectations))
      True
    """
    arrays = {name: np.asarray(v) for name, v in result._asdict().items()
              if name != "regressor" and v is not None}
    arrays.update({f"regressor.{name}": np.asarray(v) for name, v in result.regressor._asdict().items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_result(path: str | os.PathLike) -> ACEResult:
    """Read an :class:`ACEResult` written by :func:`save_result`.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not an ``.npz`` written by :func:`save_result` (e.g. a ``.npy``,
        another archive, or corrupt bytes); nothing is ever unpickled."""
    from jcausal._src.io import read_npz_arrays

    try:
        z = read_npz_arrays(path)  # clear errors for .npy, non-zip, corrupt and pickled files
    except ValueError as err:
        raise ValueError(f"{path} is not an ACE result file (.npz written by jcausal.ace.save_result): "
                         f"{err}") from None
    missing = [n for n in (*ACEResult._fields[:3], "baselines") if n not in z]
    missing += [f"regressor.{n}" for n in R.Regressor._fields if f"regressor.{n}" not in z]
    if missing:
        raise ValueError(f"{path} is not an ACE result file: missing {missing}")
    reg = R.Regressor(*(jnp.asarray(z[f"regressor.{n}"]) for n in R.Regressor._fields))
    opt = {n: jnp.asarray(z[n]) for n in ("stderr", "input_dim") if n in z}
    return ACEResult(jnp.asarray(z["features"]), jnp.asarray(z["alphas"]),
                     jnp.asarray(z["expectations"]), reg, jnp.asarray(z["baselines"]), **opt)
