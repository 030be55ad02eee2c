"""Phase I of the ACE paper: interventional expectations ``E[y | do(x_i = a)]``.

Chattopadhyay et al. (ICML 2019). The quantity asked for is the definition, eqn 2: the mean of
``f`` over the data with ``x_i`` set to ``a``. Section 4.2 (eqn 4) approximates it from the input
moments by a second-order expansion::

    E[y | do(x_i = a)] ~= f(mu_ia) + 1/2 Tr(H(mu_ia) Sigma_i)

where ``mu_ia`` is the data mean with entry ``i`` set to ``a`` and ``Sigma_i = P_i Sigma P_i`` the
covariance with row and column ``i`` zeroed (Corollary 2.1). On trained networks the expansion can
be far from the definition (``benchmarks/definition.py`` measures it; Iris curves leave [0, 1]), so
eqn 2 is the default whenever data rows are given, and every eqn-4 run with rows is checked against
it.

Every estimator (:mod:`jcausal.ace.estimators`) returns all outputs of ``f`` at once, for every
(feature, alpha) point, as an array ``(F, A, m)``. Batching and sharding go through the shared
driver :mod:`jcausal._src.batching` (``lax.map`` over padded points, ``shard_map`` over a 1-D mesh).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jcausal._src.batching import make_mesh, map_sharded, pad_points, resolve_mesh
from jcausal._src.calling import Model, Split, bind_model, unwrap_model
from jcausal._src.checks import feature_indices, require_int, require_real
from jcausal._src.xla import jit
from jcausal.ace import estimators as E
from jcausal.ace.stats import InputStats

__all__ = ["METHODS", "Execution", "Info", "compiled", "interventional_expectation", "make_mesh",
           "taylor_expectation"]

METHODS = E.method_names()  # the registry's names at import (the CLI asks the registry itself)

CHECK_ROWS = 512  # rows of the seeded subsample an eqn-4 run is checked against (eqn 2)
CHECK_FEATURES = 3  # features checked (first, middle, last), every alpha of each
GAP_WARN = 0.10  # warn when the expansion is off the definition by more than this x max|E|


class Info(NamedTuple):
    """Details of one :func:`interventional_expectation` call.

    Fields:
      method: the estimator used (its registry name).
      eqn: the ACE paper's equation it computes (2: the definition, 4: the expansion).
      rank: covariance directions used per point (``k`` for ``exact`` and eqn 2).
      discarded_variance: ``Tr(Sigma)`` left out by rank truncation (0.0 at full rank).
      stderr: ``(F, A, m)`` standard error of stochastic estimators (``hutchinson``, eqn 2), else
        ``None``. For eqn 2 it is the spread of ``f`` over the rows / sqrt(n).
      stderr_ace: ``(F, A, m)`` (eqn 2 only) standard error of the ACE differences
        ``E(a) - mean_a' E(a')``: the same rows serve every alpha (common random numbers), so this
        is usually far smaller than ``stderr``.
      num_rows: data rows averaged over (eqn 2), else ``None``.
      expansion_gap: for an eqn-4 run given rows: ``max |E4 - E2| / max |E2|`` measured on a
        seeded subsample of ``CHECK_ROWS`` rows at ``CHECK_FEATURES`` features (every alpha);
        ``None`` when not checked.
      batch_size: points (eqn 4) or (row, alpha) evaluations per feature (eqn 2) in flight, after
        ``max_memory``.
    """

    method: str
    eqn: int
    rank: int
    discarded_variance: float
    stderr: jax.Array | None
    stderr_ace: jax.Array | None = None
    num_rows: int | None = None
    expansion_gap: float | None = None
    batch_size: int | None = None


def taylor_expectation(f: Callable, mean: jax.Array, factor: jax.Array, *, params=None,
                       direction_batch_size: int | None = None) -> jax.Array:
    """Second-order expectation ``E[f(x)] ~= f(mu) + 1/2 sum_r v_r^T H(mu) v_r`` for
    ``x ~ (mu, V V^T)`` (ACE eqn 4 without an intervened coordinate), every output at once.

    ``mean``: ``(k,)``; ``factor``: ``(k, r)``. Pure and jittable: ``vmap`` it over several
    ``(mean, factor)`` pairs, e.g. the interventional moments of recurrent rollouts (Algorithm 2).
    """
    model = Model(f, params is not None, None)
    return model(params, mean) + 0.5 * E.sum_over_directions(
        partial(E.second_directional, model, params, mean), factor, direction_batch_size)


# ----------------------------------------------------------------------------- jitted runners


@partial(jit, static_argnames=("model", "bs", "mesh"))
def _run_points(model, est, bs, mesh, params, mom, idx, alphas, pids):
    def fn(rep, pt):
        e, p, mo = rep
        return e.point(model, p, mo, *pt)

    return map_sharded(fn, (est, params, mom), (idx, alphas, pids), batch_size=bs, mesh=mesh)


@partial(jit, static_argnames=("model", "mesh", "cache"))
def _run_features(model, est, mesh, cache, params, mom, idx, alphas, fids):
    aux = est.setup(model, params, cache)

    def fn(rep, pt):
        e, p, mo, ax = rep
        return e.feature(model, p, mo, ax, *pt)

    return map_sharded(fn, (est, params, mom, aux), (idx, alphas, fids), batch_size=1, mesh=mesh)


@partial(jit, static_argnames=("model",))
def _apply_rows(model, params, X):
    return jax.vmap(lambda x: model(params, x))(X)


def _output_shape(model, params, x):
    """The shape of ``f(x)`` for one input (traced once per model and input type, cached)."""
    return _apply_rows.eval_shape(model, params, x[None]).shape[1:]


def _alphas(alphas, stats: InputStats, idx: np.ndarray, strict: bool, dtype) -> np.ndarray:
    a = np.asarray(alphas, dtype=np.float64)
    if a.ndim == 1:
        a = np.broadcast_to(a, (idx.size, a.size))
    if a.ndim != 2 or a.shape[0] != idx.size or a.shape[1] == 0:
        raise ValueError(
            f"alphas must have shape (A,) or (F, A) with F = {idx.size} features, got {np.shape(alphas)}")
    if not np.all(np.isfinite(a)):
        where = np.argwhere(~np.isfinite(a))[:5].tolist()
        raise ValueError(f"alphas contains NaN/inf at (feature row, alpha column) {where}")
    lo = np.asarray(stats.low, np.float64)[idx][:, None]
    hi = np.asarray(stats.high, np.float64)[idx][:, None]
    tol = 1e-6 * np.maximum(1.0, np.abs(hi - lo))
    out = (a < lo - tol) | (a > hi + tol)
    if np.any(out):
        where = [(int(idx[r]), float(a[r, c])) for r, c in np.argwhere(out)[:5]]
        msg = f"alphas outside the intervention domain [low, high] at (feature, alpha) {where}"
        if strict:
            raise ValueError(msg)
        warnings.warn(msg + " (extrapolating; pass strict=True to refuse)", stacklevel=4)
    return a.astype(dtype)


@partial(jit, static_argnames=("model",))
def _split_gaps(model, params, x, feats, ts):
    """Relative gaps ``|first(x + t e_i) - (first(x) + t first_linear(e_i))|`` for every feature
    in ``feats`` and step in ``ts``: one compiled call, ``(len(feats), len(ts))``."""
    k = x.shape[0]

    def gap(i, t):
        e = (jnp.arange(k, dtype=i.dtype) == i).astype(x.dtype)
        z0, col = jax.jvp(lambda y: model.first(params, y), (x,), (e,))
        z1 = model.first(params, x + t * e)
        scale = jnp.max(jnp.abs(z1 - z0)) + jnp.max(jnp.abs(z0)) + 1e-30
        return jnp.max(jnp.abs(z1 - (z0 + t * col))) / scale

    return jax.vmap(lambda i: jax.vmap(lambda t: gap(i, t))(ts))(feats)


def _check_split(model: Model, params, X0, idx, dtype):
    """A split model's first part must be affine: ``first(x + t e_i) == first(x) + t
    first_linear(e_i)`` at one row for a few features (checked before any work)."""
    feats = np.unique(np.asarray([idx[0], idx[len(idx) // 2], idx[-1]]))
    ts = np.asarray([1.0, -2.5])
    tol = 1e-3 if dtype == jnp.float32 else 1e-8
    gaps = np.asarray(_split_gaps(model, params, X0, jnp.asarray(feats, jnp.int32), jnp.asarray(ts, dtype)))
    for (r, c) in np.argwhere(~(gaps <= tol))[:1]:
        i, t, g = int(feats[r]), float(ts[c]), float(gaps[r, c])
        raise ValueError(
            f"the first part of the Split model is not affine in x: at feature {i}, "
            f"first(x + {t} e_i) differs from first(x) + {t} first_linear(e_i) by {g:.2e} "
            "(relative). Put only the first linear/conv layer (with bias) in `first`; the "
            "activation belongs to `rest`.")


def _memory_bytes(compiled_program) -> int | None:
    ma = compiled_program.memory_analysis()
    if ma is None:
        return None
    return int(ma.temp_size_in_bytes + ma.argument_size_in_bytes + ma.output_size_in_bytes
               + ma.generated_code_size_in_bytes - ma.alias_size_in_bytes)


@dataclasses.dataclass(frozen=True)
class Execution:
    """Where and how much at once: the execution settings of :func:`interventional_expectation`
    (the estimator's own settings live on the estimator).

    Fields:
      batch_size: eqn-4 (feature, alpha) points evaluated at once per device (bounds memory).
      max_memory: bytes: halve ``batch_size`` (eqn 4) or the estimator's ``row_batch_size`` (eqn 2)
        until XLA's memory analysis of the compiled program fits.
      devices: a list of devices to shard the points over (default: every visible device; one
        device runs unsharded).
      mesh: a 1-D ``Mesh`` to shard over instead of ``devices``.

    Examples:
      >>> from jcausal.ace import Execution
      >>> Execution(batch_size=8).batch_size
      8
    """

    batch_size: int = 32
    max_memory: int | None = None
    devices: Any = None
    mesh: Mesh | None = None

    def __post_init__(self):
        require_int(self.batch_size, "batch_size")
        if self.max_memory is not None and not self.max_memory > 0:
            raise ValueError(f"max_memory must be a positive number of bytes, got {self.max_memory!r}")


class _Plan(NamedTuple):
    """A checked request, traced and ready to compile: what the driver and :func:`compiled` share."""

    model: Any
    params: Any
    est: Any
    mom: Any
    rank: int
    discarded: float
    idx: np.ndarray
    alph: np.ndarray
    runner: Callable
    bs_name: str
    bs: int


def interventional_expectation(
    f: Callable | Split,
    stats: InputStats,
    alphas,
    *,
    params: Any = None,
    features=None,
    method: str | E.Estimator | None = None,
    data=None,
    run: Execution | None = None,
    strict: bool = False,
    check_expansion: bool = True,
    check_finite: bool = True,
    return_info: bool = False,
):
    r"""Interventional expectations ``E[y | do(x_i = a)]`` for features x alphas x outputs.

    The definition (ACE paper eqn 2) and its second-order expansion (eqn 4, Corollary 2.1):

    .. math::
        \mathbb{E}[y \mid do(x_i = a)] = \frac1n \sum_r f(x^{(r)}_{x_i = a})
        \approx f(\mu_{ia}) + \tfrac12 \operatorname{Tr}\big(\nabla^2 f(\mu_{ia})\, \Sigma_i\big),
        \quad \Sigma_i = P_i \Sigma P_i

    Args:
      f: the model on ONE input ``(k,) -> (m,)`` (a scalar output counts as ``m = 1``); called
        ``f(params, x)`` when ``params`` is given, else ``f(x)``. Or a
        :class:`jcausal.models.Split` ``(first, rest)`` with ``first`` the model's affine first
        layer: eqn 2 then runs the first layer once per row (a rank-one update per intervention),
        several times faster. ``f`` is traced once per call: whatever it reads (``params``,
        closed-over arrays, globals, the variables of a module it calls) is read at this call and
        enters the compiled program as an argument, so a changed model gives a new result and a
        repeated call of the same computation does not recompile.
      stats: :func:`jcausal.ace.input_stats` of the training inputs.
      alphas: ``(A,)`` intervention values shared by all features, or ``(F, A)`` per feature.
      params: pytree passed to ``f``.
      features: the ``F`` feature indices to intervene on (default all ``k``).
      method: an estimator object from :mod:`jcausal.ace.estimators`, which carries its own
        settings (``Hutchinson(num_samples=32, key=key)``, ``Directional(rank=0.95)``,
        ``Definition(num_rows=1000)``, ``GaussNewton(head=jax.nn.softmax)``, ...), or the name of
        one with its default settings (any name in ``jcausal.ace.estimators.REGISTRY``):

        - ``"definition"`` (alias ``"monte_carlo"``; the default when ``data`` is given): eqn 2,
          the mean of ``f`` over the rows of ``data`` with column ``i`` set to ``a``; the same
          rows for every alpha; standard errors of ``E`` and of the ACE differences in :class:`Info`.
        - ``"directional"`` (the default without ``data``): eqn 4 with ``sum_r (P_i v_r)^T H
          (P_i v_r)``, each term one forward-over-forward ``jax.jvp`` (exact; all outputs in one
          pass).
        - ``"exact"``: eqn 4 with ``jax.hessian`` contracted with ``Sigma_i``; the reference.
        - ``"hutchinson"``: eqn 4 with an unbiased stochastic trace (needs a ``key``).
        - ``"gauss_newton"``: eqn 4 for a piecewise-linear body ``f`` and a smooth ``head``.
        - ``"finite_difference"``: the paper's central difference (eqn 9), float64 only.

      data: ``(n, k)`` training rows. Averaged over by eqn 2 (unless the estimator holds its own);
        for an eqn-4 method they are used to check the expansion against the definition on a
        seeded subsample of ``CHECK_ROWS`` rows (``Info.expansion_gap``; a warning above
        ``GAP_WARN`` x max |E|, or when an expectation of probabilities leaves ``[0, 1]``).
      run: an :class:`Execution` (batch size, memory bound, devices or mesh); default
        ``Execution()``.
      strict: raise (instead of warn) when an alpha lies outside ``[stats.low, stats.high]``.
      check_expansion: ``False`` skips the eqn-4 check against eqn 2 on ``data``.
      check_finite: raise ``FloatingPointError`` naming the (feature, alpha) points where the
        result is NaN/inf, instead of returning them.
      return_info: also return an :class:`Info`.

    Returns:
      ``(F, A, m)`` array in the dtype of ``stats`` (and an :class:`Info` with ``return_info``).

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from jcausal.ace import input_stats, interventional_expectation
      >>> X = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
      >>> E = interventional_expectation(lambda x: jnp.sum(x ** 2), input_stats(X), [0.0, 1.0], data=X)
      >>> E.shape
      (3, 2, 1)
    """
    run = Execution() if run is None else run
    plan = _plan(f, stats, alphas, params=params, features=features, method=method, data=data, run=run,
                 strict=strict)
    vals, se, se_ace = plan.runner(plan.bs)
    if check_finite:
        _check_finite(vals, plan.idx, plan.alph)
    gap = None
    if plan.est.eqn == 4 and data is not None and check_expansion:
        gap = _check_expansion(plan.model, plan.params, stats, np.asarray(data), plan.idx, plan.alph,
                               np.asarray(vals))
    if not return_info:
        return vals
    est = plan.est
    num = int(est.data.shape[0]) if est.kind == "feature" else None
    return vals, Info(est.name, est.eqn, plan.rank, plan.discarded, se if est.stochastic else None, se_ace,
                      num, gap, plan.bs)


def _plan(f, stats, alphas, *, params, features, method, data, run, strict) -> _Plan:
    """Check the request, trace the model, choose the estimator's runner and its batch size."""
    if not isinstance(run, Execution):
        raise TypeError(f"run must be a jcausal.ace.Execution, got {type(run).__name__}")
    f, params = unwrap_model(f, params)  # a jcausal.wrap model: its Split (or apply) and params
    dtype = stats.mean.dtype
    k = stats.mean.shape[0]
    idx = feature_indices(features, k)
    if data is not None:
        require_real(data, "data")  # complex rows would be cast silently
    alph = _alphas(alphas, stats, idx, strict, dtype)
    est = E.resolve(method, data)
    # Traced now: the arrays f reads enter the compiled programs as arguments (never stale).
    model, params = bind_model(f, params, jax.ShapeDtypeStruct(stats.mean.shape, dtype),
                               head=getattr(est, "head", None),
                               input_desc=f"one row of the data (k = {k} features; the model must take "
                                          f"inputs of that width)")
    est, mom, r, discarded = est.prepare(stats, dtype=dtype, model=model)
    out_shape = _output_shape(model, params, stats.mean)
    if len(out_shape) != 1:
        raise ValueError(f"f must return a scalar or a vector (m,) for one input; it returned shape "
                         f"{tuple(out_shape)} (flatten it, or select the outputs you want)")
    if model.is_split:
        _check_split(model, params, est.data[0] if est.kind == "feature" else stats.mean, idx, dtype)
    mesh = resolve_mesh(run.devices, run.mesh)
    if isinstance(est, E.GaussNewton) and est.check:
        _check_gauss_newton(model, params, mom, est, int(idx[0]), alph[0, 0])
    if est.kind == "feature":
        if est.target_stderr is not None:
            est = _choose_rows(model, est, mesh, params, mom, idx, alph, dtype)
        runner = _feature_runner(model, est, mesh, params, mom, idx, alph, dtype)
        bs_name, bs = "row_batch_size", est.row_batch_size
    else:
        ndev = 1 if mesh is None else mesh.devices.size
        runner = _point_runner(model, est, mesh, ndev, params, mom, idx, alph, dtype)
        bs_name, bs = "batch_size", run.batch_size
    bs = _fit_memory(runner, bs, bs_name, run.max_memory)
    return _Plan(model, params, est, mom, r, discarded, idx, alph, runner, bs_name, bs)


def _fit_memory(runner, bs: int, bs_name: str, max_memory) -> int:
    """Halve the batch size until XLA's memory analysis of the compiled program fits ``max_memory``."""
    if max_memory is None:
        return bs
    while True:
        need = _memory_bytes(runner(bs, compile_only=True))
        if need is None or need <= max_memory or bs == 1:
            break
        bs = max(1, bs // 2)
    if need is not None and need > max_memory:
        raise MemoryError(f"even {bs_name}=1 needs {need / 2**20:.0f} MiB > max_memory="
                          f"{max_memory / 2**20:.0f} MiB")
    return bs


def _check_finite(vals, idx, alph) -> None:
    bad = ~np.all(np.isfinite(np.asarray(vals)), axis=-1)
    if np.any(bad):
        F, A = alph.shape
        where = [(int(idx[r_]), float(alph[r_, c])) for r_, c in np.argwhere(bad)[:10]]
        raise FloatingPointError(
            f"f gave non-finite interventional expectations at {int(bad.sum())} of {F * A} "
            f"(feature, alpha) points, e.g. {where}; pass check_finite=False to get them anyway")


def _point_runner(model, est, mesh, ndev, params, mom, idx, alph, dtype):
    F, A = alph.shape

    def run(bs, compile_only=False):
        n = F * A
        pts = (np.repeat(idx, A).astype(np.int32), alph.reshape(-1), np.arange(n, dtype=np.int32))
        (fi, fa, fp), b = pad_points(pts, n, bs, ndev)
        args = (params, mom, jnp.asarray(fi), jnp.asarray(fa, dtype), jnp.asarray(fp))
        if compile_only:
            return _run_points.lower(model, est, b, mesh, *args).compile()
        vals, se = _run_points(model, est, b, mesh, *args)
        m = vals.shape[-1]
        return vals[:n].reshape(F, A, m), se[:n].reshape(F, A, m), None

    return run


def _feature_runner(model, est, mesh, params, mom, idx, alph, dtype):
    F, A = alph.shape
    ndev = 1 if mesh is None else mesh.devices.size
    cache = est.first_cache_ok(model, params)

    def run(rbs, compile_only=False):
        e = dataclasses.replace(est, row_batch_size=int(rbs))
        pts = (idx.astype(np.int32), alph, np.arange(F, dtype=np.int32))
        (fi, fa, fid), _ = pad_points(pts, F, 1, ndev)
        args = (params, mom, jnp.asarray(fi), jnp.asarray(fa, dtype), jnp.asarray(fid))
        if compile_only:
            return _run_features.lower(model, e, mesh, cache, *args).compile()
        vals, se, se_ace = _run_features(model, e, mesh, cache, *args)
        return vals[:F], se[:F], se_ace[:F]

    return run


def _choose_rows(model, est, mesh, params, mom, idx, alph, dtype, pilot=256):
    """Eqn 2 subsample size for ``target_stderr``: a ``pilot``-row run estimates the largest
    per-row spread, then ``n = ceil(pilot * (se_pilot / target)^2)`` rows (at most all)."""
    n = int(est.data.shape[0])
    if n <= pilot:
        return dataclasses.replace(est, target_stderr=None)
    probe = est.subsample(pilot)
    _, se, _ = _feature_runner(model, probe, mesh, params, mom, idx, alph, dtype)(probe.row_batch_size)
    worst = float(np.max(np.asarray(se)))
    need = int(np.ceil(pilot * (worst / est.target_stderr) ** 2))
    return est.subsample(max(2, min(n, need)))


def _check_expansion(model, params, stats, data, idx, alph, vals):
    """Measure the eqn-4 result against eqn 2 on a seeded subsample at a few features; warn when
    the gap exceeds ``GAP_WARN`` x max|E| or an expectation of probabilities leaves [0, 1]."""
    F = len(idx)
    rows = np.arange(F)
    pick = np.unique(rows[[0, F // 2, F - 1]])[:CHECK_FEATURES]
    dtype = stats.mean.dtype
    ref_est = E.Definition(data=jnp.asarray(data, dtype), key=jax.random.key(0))
    ref_est, mom, _, _ = ref_est.prepare(stats, dtype=dtype, model=model)
    if ref_est.data.shape[0] > CHECK_ROWS:
        ref_est = ref_est.subsample(CHECK_ROWS)
    ref, _, _ = _feature_runner(model, ref_est, None, params, mom, idx[pick], alph[pick], dtype)(
        ref_est.row_batch_size)
    ref = np.asarray(ref, np.float64)
    mine = vals[pick].astype(np.float64)
    gap = float(np.max(np.abs(mine - ref)) / max(np.max(np.abs(ref)), 1e-30))
    if gap > GAP_WARN:
        warnings.warn(
            f"the second-order expansion (eqn 4) is off the definition (eqn 2) by {gap:.2f} x max|E| "
            f"on a {ref_est.data.shape[0]}-row subsample at features {idx[pick].tolist()}: the "
            "network is not quadratic over the data's spread. Use method='definition' (eqn 2).",
            UserWarning, stacklevel=3)
    probe = np.asarray(_apply_rows(model, params, jnp.asarray(data[:64], dtype)))
    is_prob = np.all(probe >= -1e-6) and np.all(probe <= 1 + 1e-6) and probe.shape[-1] > 1 and \
        np.allclose(probe.sum(-1), 1.0, atol=1e-3)
    if is_prob and (np.min(vals) < -1e-4 or np.max(vals) > 1 + 1e-4):
        warnings.warn(
            f"expectations of probabilities leave [0, 1] (range [{np.min(vals):.3f}, {np.max(vals):.3f}]): "
            "the second-order expansion (eqn 4) is not valid here. Use method='definition' (eqn 2).",
            UserWarning, stacklevel=3)
    return gap


def compiled(f: Callable, stats: InputStats, alphas, *, params: Any = None, features=None,
             method: str | E.Estimator | None = None, data=None, run: Execution | None = None,
             strict: bool = False):
    """The compiled XLA program :func:`interventional_expectation` would run for these arguments
    (nothing is executed): use ``.memory_analysis()`` for its buffer sizes and ``.cost_analysis()``
    for XLA's flop estimate. Takes the same arguments."""
    plan = _plan(f, stats, alphas, params=params, features=features, method=method, data=data,
                 run=Execution() if run is None else run, strict=strict)
    return plan.runner(plan.bs, compile_only=True)


def _check_gauss_newton(model, params, mom, est, i, a, tol=1e-3):
    """Compare gauss_newton with exact at one point; raise when the body is not piecewise linear."""
    args = (params, mom, jnp.asarray(i), jnp.asarray(a, mom.mean.dtype), jnp.asarray(0))
    gn, _ = jit(partial(est.point, model))(*args)
    ex, _ = jit(partial(E.Exact().point, model))(*args)
    err = float(jnp.max(jnp.abs(gn - ex)) / jnp.maximum(jnp.max(jnp.abs(ex)), 1e-30))
    if not err <= tol:
        raise ValueError(
            f"gauss_newton differs from exact by {err:.2e} (relative) at feature {i}, alpha {float(a)}: "
            "the body f is not piecewise linear (smooth activations?). Use method='directional'.")
