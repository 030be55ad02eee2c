"""The one ACE pipeline (ACE paper section 4.4): :func:`prepare` (the grid) -> :func:`phase_one`
(interventional expectations) -> :func:`phase_two` (causal regressors, reference levels), on top of
the pure functions of ``jcausal.ace.interventional`` and ``jcausal.ace.regressors``.
:func:`explain`, :func:`jcausal.ace.jobs.run_job` and the ``jcausal ace`` command all run it, with
the same :class:`Settings`."""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.calling import unwrap_model
from jcausal._src.io import atomic_write_bytes
from jcausal.ace import estimators as E
from jcausal.ace import regressors as R
from jcausal.ace.interventional import Execution, interventional_expectation
from jcausal.ace.stats import InputStats, input_stats, intervention_grid, with_domain

__all__ = ["ACEResult", "Grid", "Settings", "explain", "load_result", "make_settings", "phase_one",
           "phase_two", "prepare", "save_result"]


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
        mean, var = R.predict_regressor(self.regressor, a)
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


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every option of an ACE run (Phase I grid and estimator, Phase II fit), shared by
    :func:`explain`, :func:`jcausal.ace.jobs.run_job` and the ``jcausal ace`` command.

    Fields:
      features: feature indices (default all).
      num_alphas: grid size per feature on ``[low_i, high_i]`` (ignored when ``alphas`` is given).
      alphas: explicit ``(A,)`` or ``(F, A)`` grid.
      low, high: intervention domain (default the data's min and max).
      method: the Phase I estimator, an object or a name (see
        :func:`jcausal.ace.interventional_expectation`); default: eqn 2 over the rows when the
        inputs are an array (:func:`jcausal.ace.estimators.default_method`).
      data: ``(n, k)`` rows for Phase I (default: the inputs, when the method averages rows).
      run: a :class:`jcausal.ace.Execution` (batch size, memory, devices).
      strict, check_expansion, check_finite: as for :func:`jcausal.ace.interventional_expectation`.
      max_order: highest causal-regressor order tried.
      bayes_factor: Phase II order selection margin (see :func:`jcausal.ace.fit_regressors`).
      reference_at: ``None`` for the paper's reference level (the mean over a uniform intervention,
        section 4.1), or a domain-knowledge point per feature (scalar or ``(F,)``): the reference
        is then ``E[y | do(x_f = reference_at_f)]``.
      regressor_options: extra arguments of :func:`jcausal.ace.fit_regressors`, e.g.
        ``{"inference": "nuts", "key": key}``.
    """

    features: Any = None
    num_alphas: int = 20
    alphas: Any = None
    low: Any = None
    high: Any = None
    method: Any = None
    data: Any = None
    run: Execution | None = None
    strict: bool = False
    check_expansion: bool = True
    check_finite: bool = True
    max_order: int = 5
    bayes_factor: float = 3.0
    reference_at: Any = None
    regressor_options: dict | None = None


def make_settings(settings: Settings | None = None, **overrides) -> Settings:
    """``settings`` (default :class:`Settings`) with the named fields replaced; a name that is not a
    field is an error that says where it belongs."""
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        moved = [n for n in unknown if n in _estimator_settings()]
        hint = (f"; {', '.join(moved)} belong(s) to the estimator (method=Estimator(...)) or to "
                "run=Execution(...)") if moved else ""
        raise TypeError(f"unknown ACE setting(s) {unknown}; the settings are {sorted(known)}{hint}")
    base = Settings() if settings is None else settings
    return dataclasses.replace(base, **overrides)


def _estimator_settings() -> set[str]:
    """The settings that belong to an estimator (every registered class's fields) or to
    :class:`Execution`: derived from the classes, so a new estimator's settings are known at once."""
    names = {f.name for cls in E.REGISTRY.values() for f in dataclasses.fields(cls)}
    return names | {f.name for f in dataclasses.fields(Execution)}


class Grid(NamedTuple):
    """Phase I's request after the checks: ``stats``, ``features`` ``(F,)``, ``alphas`` ``(F, A)``
    and the ``rows`` Phase I averages over (or checks eqn 4 against), ``None`` for none."""

    stats: InputStats
    features: np.ndarray
    alphas: np.ndarray
    rows: Any


def prepare(X, s: Settings, stats: InputStats | None = None) -> Grid:
    """The checked Phase I grid of an ACE run on inputs ``X`` (or precomputed ``stats``)."""
    if s.reference_at is not None and not np.all(np.isfinite(np.asarray(s.reference_at, np.float64))):
        raise ValueError(f"reference_at must be finite, got {s.reference_at!r}")
    if stats is None:
        if X is None:
            raise ValueError("explain needs training inputs X or precomputed stats=")
        stats = input_stats(X, low=s.low, high=s.high)
    else:
        stats = with_domain(stats, s.low, s.high)
    k = stats.mean.shape[0]
    feats = np.arange(k) if s.features is None else np.atleast_1d(np.asarray(s.features))
    alphas = intervention_grid(stats, s.num_alphas, feats) if s.alphas is None else s.alphas
    alphas = np.asarray(alphas, np.asarray(stats.mean).dtype)
    if alphas.ndim == 1:
        alphas = np.broadcast_to(alphas, (feats.size, alphas.shape[0]))
    return Grid(stats, feats, alphas, _phase1_rows(s, X))


def _phase1_rows(s: Settings, X):
    """The rows handed to Phase I: ``data=``, else the inputs when the method averages rows."""
    if s.data is not None:
        return s.data
    if X is None or not hasattr(X, "shape"):
        return None  # an iterator of batches: eqn 4 from the streamed moments
    method = E.default_method(True) if s.method is None else s.method
    kind = method.kind if isinstance(method, E.Estimator) else E.lookup(method).kind
    return X if kind == "feature" else None


def phase_one(f, grid: Grid, s: Settings, *, params=None, chunk=slice(None)):
    """Phase I (:func:`jcausal.ace.interventional_expectation`) on the features ``chunk`` of the
    grid: ``(expectations (F, A, m), Info)``."""
    return interventional_expectation(
        f, grid.stats, grid.alphas[chunk], params=params, features=grid.features[chunk], method=s.method,
        data=grid.rows, run=s.run, strict=s.strict, check_expansion=s.check_expansion,
        check_finite=s.check_finite, return_info=True)


def phase_two(grid: Grid, expectations, stderr, s: Settings) -> ACEResult:
    """Phase II (Bayesian causal regressors, reference levels) on Phase I's expectations."""
    feats = grid.features
    alphas = jnp.asarray(grid.alphas)
    lo = np.asarray(grid.stats.low)[feats]
    hi = np.asarray(grid.stats.high)[feats]
    reg = R.fit_regressors(alphas, expectations, lo, hi, max_order=s.max_order, bayes_factor=s.bayes_factor,
                           **(s.regressor_options or {}))
    if s.reference_at is None:
        ref = R.reference_level(reg)
    else:
        at = jnp.asarray(s.reference_at, reg.coef.dtype)
        ref = R.reference_level(reg, at=at[:, None] if at.ndim == 1 else at)  # (F,) -> one per feature
    return ACEResult(jnp.asarray(feats, jnp.int32), alphas, jnp.asarray(expectations), reg, ref,
                     None if stderr is None else jnp.asarray(stderr),
                     jnp.asarray(grid.stats.mean.shape[0], jnp.int32))


def explain(f: Callable, X=None, *, params: Any = None, stats: InputStats | None = None,
            settings: Settings | None = None, **options) -> ACEResult:
    """Average causal effects of input features on every output of ``f``, in one call.

    Phase I defaults to the definition (eqn 2) over the rows ``X`` when ``X`` is an array: on
    trained networks the second-order expansion (eqn 4) can be far off; pass
    ``method="directional"`` etc. for the expansion (with ``data=X`` it is then checked against
    eqn 2 on a subsample, see :func:`jcausal.ace.interventional_expectation`).

    Args:
      f: the model on ONE input, ``f(params, x)`` (or ``f(x)`` without ``params``) -> ``(m,)``, or a
        :class:`jcausal.models.Split` (first affine layer + rest) for the fast eqn 2.
      X: ``(n, k)`` training inputs (or an iterator of batches, then eqn 4 from the streamed
        moments); not needed when ``stats`` is given.
      params: parameters passed to ``f``.
      stats: precomputed :func:`jcausal.ace.input_stats`.
      settings: a :class:`Settings` (default ``Settings()``).
      **options: :class:`Settings` fields replaced, e.g. ``num_alphas=8, max_order=3,
        method=Directional(rank=0.95), run=Execution(batch_size=8), reference_at=0.0``.

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
    s = make_settings(settings, **options)
    f, params = unwrap_model(f, params)  # a jcausal.wrap model: its Split (or apply) and params
    grid = prepare(X, s, stats)
    expectations, info = phase_one(f, grid, s, params=params)
    return phase_two(grid, expectations, info.stderr, s)


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
