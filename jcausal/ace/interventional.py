"""Phase I of the ACE paper: interventional expectations ``E[y | do(x_i = a)]``.

Chattopadhyay et al. (ICML 2019), section 4.2 (eqn 4), section 4.6 and appendix A.5::

    E[y | do(x_i = a)] ~= f(mu_ia) + 1/2 Tr(H(mu_ia) Sigma_i)

where ``mu_ia`` is the data mean with entry ``i`` set to ``a`` and ``Sigma_i = P_i Sigma P_i`` the
covariance with row and column ``i`` zeroed (Corollary 2.1). Every estimator returns all outputs of
``f`` at once, for every (feature, alpha) point, as an array ``(F, A, m)``.

Batching: ``vmap`` over covariance directions inside a point, ``lax.map(batch_size=...)`` over the
(feature, alpha) points outside, on fixed padded shapes (a second call with the same shapes does not
recompile). Sharding: the points are split over a 1-D device mesh with ``jax.shard_map``; params,
moments and data are replicated.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jcausal.ace.stats import InputStats, truncate

__all__ = ["METHODS", "Info", "compiled", "interventional_expectation", "make_mesh", "taylor_expectation"]

METHODS = ("directional", "exact", "hutchinson", "gauss_newton", "finite_difference", "monte_carlo")
_FACTOR_METHODS = ("directional", "hutchinson", "gauss_newton", "finite_difference")


class Info(NamedTuple):
    """Details of one :func:`interventional_expectation` call.

    Fields:
      method: the estimator used.
      rank: covariance directions used per point (``k`` for ``exact``/``monte_carlo``).
      discarded_variance: ``Tr(Sigma)`` left out by rank truncation (0.0 at full rank).
      stderr: ``(F, A, m)`` standard error of the stochastic estimators (``hutchinson``,
        ``monte_carlo``), else ``None``.
    """

    method: str
    rank: int
    discarded_variance: float
    stderr: jax.Array | None


class _Model(NamedTuple):
    """Hashable wrapper so the jitted core is cached on the user's callables (by identity)."""

    f: Callable
    has_params: bool
    head: Callable | None

    def body(self, params, x):
        return jnp.atleast_1d(self.f(params, x) if self.has_params else self.f(x))

    def __call__(self, params, x):
        z = self.body(params, x)
        return z if self.head is None else jnp.atleast_1d(self.head(z))


class _Config(NamedTuple):
    method: str
    batch_size: int
    direction_batch_size: int | None
    data_batch_size: int
    num_samples: int
    step: float
    mesh: Mesh | None


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh (axis ``"points"``) over ``devices`` (default: every device JAX sees, across
    hosts after ``jax.distributed.initialize``)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("points",))


# ----------------------------------------------------------------------------- per-point estimators


def _sum_over_directions(fn, D, dbs):
    """``sum_r fn(D[:, r])`` with at most ``dbs`` directions in flight (``None``: all)."""
    vals = jax.lax.map(fn, D.T, batch_size=dbs or D.shape[1])
    return jnp.sum(vals, axis=0)


def _second_directional(model, params, x, v, w=None):
    """``v^T H(x) w`` (``w = v`` by default) for every output: forward-over-forward ``jax.jvp``
    (exact, no differencing)."""
    def first(y):
        return jax.jvp(lambda z: model(params, z), (y,), (v,))[1]

    return jax.jvp(first, (x,), (v if w is None else w,))[1]


def taylor_expectation(f: Callable, mean: jax.Array, factor: jax.Array, *, params=None,
                       direction_batch_size: int | None = None) -> jax.Array:
    """Second-order expectation ``E[f(x)] ~= f(mu) + 1/2 sum_r v_r^T H(mu) v_r`` for
    ``x ~ (mu, V V^T)`` (ACE eqn 4 without an intervened coordinate), every output at once.

    ``mean``: ``(k,)``; ``factor``: ``(k, r)``. Pure and jittable: ``vmap`` it over several
    ``(mean, factor)`` pairs, e.g. the interventional moments of recurrent rollouts (Algorithm 2).
    """
    model = _Model(f, params is not None, None)
    return model(params, mean) + 0.5 * _sum_over_directions(
        partial(_second_directional, model, params, mean), factor, direction_batch_size)


def _point(model: _Model, cfg: _Config, params, mean, cov, V, data, key, i, a, pid):
    """One (feature i, alpha a) point -> (value (m,), stderr (m,))."""
    k = mean.shape[0]
    x = mean.at[i].set(a)
    e_i = (jnp.arange(k, dtype=i.dtype) == i).astype(mean.dtype)
    keep = 1.0 - e_i  # the diagonal of P_i
    method = cfg.method
    if method == "directional":
        # sum_r (P_i v_r)^T H (P_i v_r) with P_i v_r = v_r - c_r e_i, c = V[i]:
        #   = sum_r v_r^T H v_r - 2 e_i^T H (V c) + |c|^2 H_ii      (V c = Sigma e_i)
        # The directions v_r are the same for every point, so tangents that do not depend on the
        # point (e.g. a first linear layer's W v_r) are computed once per batch of points by vmap.
        f0 = model(params, x)
        d2 = partial(_second_directional, model, params, x)
        total = _sum_over_directions(d2, V, cfg.direction_batch_size)
        c = V[i]
        second = total - 2.0 * d2(e_i, V @ c) + jnp.dot(c, c) * d2(e_i)
        return f0 + 0.5 * second, jnp.zeros_like(f0)
    if method == "exact":
        f0 = model(params, x)
        H = jax.hessian(lambda z: model(params, z))(x)  # (m, k, k)
        Si = cov * keep[:, None] * keep[None, :]
        return f0 + 0.5 * jnp.einsum("mjk,jk->m", H, Si), jnp.zeros_like(f0)
    if method == "hutchinson":
        f0 = model(params, x)
        z = jax.random.normal(jax.random.fold_in(key, pid), (cfg.num_samples, V.shape[1]), mean.dtype)
        probes = (V @ z.T) * keep[:, None]  # (k, S) = P_i V z, E[u u^T] = P_i V V^T P_i
        vals = jax.lax.map(partial(_second_directional, model, params, x), probes.T,
                           batch_size=cfg.direction_batch_size or cfg.num_samples)  # (S, m)
        se = jnp.std(vals, axis=0, ddof=1) / math.sqrt(cfg.num_samples)
        return f0 + 0.5 * jnp.mean(vals, axis=0), 0.5 * se
    if method == "gauss_newton":
        z = model.body(params, x)
        J = jax.jacrev(lambda y: model.body(params, y))(x)  # (c, k): c reverse passes
        W = (J * keep[None, :]) @ V  # (c, r) = J P_i V; V is shared by all points: one GEMM
        G = W @ W.T  # J Sigma_i J^T
        Hs = jax.hessian(lambda u: jnp.atleast_1d(model.head(u)))(z)  # (m, c, c)
        f0 = jnp.atleast_1d(model.head(z))
        return f0 + 0.5 * jnp.einsum("mab,ab->m", Hs, G), jnp.zeros_like(f0)
    if method == "finite_difference":
        f0 = model(params, x)
        h = cfg.step

        def fd(v):
            # Step h along the unit direction, then rescale by |v|^2: a fixed absolute step keeps
            # round-off bounded for the many directions with tiny variance.
            nv = jnp.sqrt(jnp.sum(v * v))
            u = v / jnp.where(nv > 0, nv, 1.0)
            return nv * nv * (model(params, x + h * u) + model(params, x - h * u) - 2.0 * f0) / (h * h)

        D = V * keep[:, None]  # columns P_i v_r
        return f0 + 0.5 * _sum_over_directions(fd, D, cfg.direction_batch_size), jnp.zeros_like(f0)
    if method == "monte_carlo":
        vals = jax.lax.map(lambda row: model(params, row.at[i].set(a)), data,
                           batch_size=min(cfg.data_batch_size, data.shape[0]))  # (n, m)
        n = data.shape[0]
        return jnp.mean(vals, axis=0), jnp.std(vals, axis=0) / math.sqrt(n)
    raise AssertionError(method)


@partial(jax.jit, static_argnames=("model", "cfg"))
def _run(model, cfg, params, mean, cov, V, data, key, idx, alphas, pids):
    def local(params, mean, cov, V, data, key, idx, alphas, pids):
        def one(pt):
            return _point(model, cfg, params, mean, cov, V, data, key, *pt)

        return jax.lax.map(one, (idx, alphas, pids), batch_size=cfg.batch_size)

    if cfg.mesh is None:
        return local(params, mean, cov, V, data, key, idx, alphas, pids)
    ax = cfg.mesh.axis_names[0]
    rep, pts = P(), P(ax)
    return jax.shard_map(
        local, mesh=cfg.mesh,
        in_specs=(rep, rep, rep, rep, rep, rep, pts, pts, pts),
        out_specs=(pts, pts), check_vma=False,
    )(params, mean, cov, V, data, key, idx, alphas, pids)


# ----------------------------------------------------------------------------- public entry point


def _features(features, k: int) -> np.ndarray:
    if features is None:
        return np.arange(k)
    idx = np.atleast_1d(np.asarray(features))
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"features must be a non-empty 1-d sequence of ints, got {features!r}")
    bad = idx[(idx < 0) | (idx >= k)]
    if bad.size:
        raise ValueError(f"features {bad.tolist()} out of range for {k} input features")
    uniq, counts = np.unique(idx, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"features contains duplicates: {uniq[counts > 1].tolist()}")
    return idx


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
        warnings.warn(msg + " (extrapolating; pass strict=True to refuse)", stacklevel=3)
    return a.astype(dtype)


def interventional_expectation(
    f: Callable,
    stats: InputStats,
    alphas,
    *,
    params: Any = None,
    features=None,
    method: str = "directional",
    rank: int | float | None = None,
    head: Callable | None = None,
    key: jax.Array | None = None,
    num_samples: int = 16,
    data=None,
    step: float = 1e-4,
    batch_size: int = 32,
    direction_batch_size: int | None = None,
    data_batch_size: int = 256,
    strict: bool = False,
    check_finite: bool = True,
    check_gauss_newton: bool = False,
    devices=None,
    mesh: Mesh | None = None,
    return_info: bool = False,
    _compile_only: bool = False,
):
    r"""Interventional expectations ``E[y | do(x_i = a)]`` for features x alphas x outputs.

    .. math::
        \mathbb{E}[y \mid do(x_i = a)] \approx f(\mu_{ia}) + \tfrac12 \operatorname{Tr}
        \big(\nabla^2 f(\mu_{ia})\, \Sigma_i\big), \quad \Sigma_i = P_i \Sigma P_i

    (ACE paper eqn 4 with Corollary 2.1; eqn 2 for ``monte_carlo``; appendix A.5 for
    ``finite_difference``.)

    Args:
      f: the model on ONE input ``(k,) -> (m,)`` (a scalar output counts as ``m = 1``); called
        ``f(params, x)`` when ``params`` is given, else ``f(x)``. Pass the parameters through
        ``params`` (e.g. from :func:`jcausal.models.functional`) rather than closing over them:
        closed-over arrays become compile-time constants. ``f`` is a static argument, cached by
        identity: reuse the same callable to avoid recompiling.
      stats: :func:`jcausal.ace.input_stats` of the training inputs.
      alphas: ``(A,)`` intervention values shared by all features, or ``(F, A)`` per feature.
      params: pytree passed to ``f``.
      features: the ``F`` feature indices to intervene on (default all ``k``).
      method: one of

        - ``"directional"`` (default): ``sum_r (P_i v_r)^T H (P_i v_r)``, each term one
          forward-over-forward ``jax.jvp`` (exact; all outputs in one pass).
        - ``"exact"``: ``jax.hessian`` contracted with ``Sigma_i``; the reference, ``O(k)`` passes.
        - ``"hutchinson"``: unbiased stochastic trace with ``num_samples`` probes ``P_i V z``,
          ``z ~ N(0, I)``; needs ``key``; standard errors in ``Info.stderr``.
        - ``"gauss_newton"``: ``f`` is the *body* and ``head`` the smooth map after it
          (e.g. ``jax.nn.softmax``). ASSUMES the body is piecewise linear (ReLU / max-pool /
          linear layers), so its Hessian vanishes almost everywhere and
          ``H = J^T (d^2 head) J`` exactly a.e.; then ``Tr(H Sigma_i) = Tr(d^2 head(z)
          J Sigma_i J^T)`` from ``c`` reverse passes. Wrong for smooth bodies (tanh, softplus):
          set ``check_gauss_newton=True`` to compare with ``exact`` at one probe point.
        - ``"finite_difference"``: the paper's 3-pass central difference (eqn 9) along each
          ``P_i v_r``, taken with absolute step ``step`` along the unit vector and rescaled by
          ``|P_i v_r|^2``; float64 only (in float32 the paper's eps = 1e-6 gave relative errors
          ~1e13 on this project's MNIST MLP).
        - ``"monte_carlo"``: eqn 2 directly, the mean of ``f`` over the rows of ``data`` with
          column ``i`` set to ``a``; standard errors in ``Info.stderr``.

      rank: keep the top directions of the factor: an int, or a variance fraction such as 0.95
        (factor methods only); the discarded variance is in ``Info``.
      head: the smooth output map for ``gauss_newton``.
      key: PRNG key for ``hutchinson``.
      num_samples: probes per point for ``hutchinson``.
      data: ``(n, k)`` rows for ``monte_carlo``.
      step: finite-difference step along each unit direction (input units).
      batch_size: (feature, alpha) points evaluated at once per device (bounds memory).
      direction_batch_size: directions in flight per point (``None``: all ``r`` at once).
      data_batch_size: rows in flight per point for ``monte_carlo``.
      strict: raise (instead of warn) when an alpha lies outside ``[stats.low, stats.high]``.
      check_finite: raise ``FloatingPointError`` naming the (feature, alpha) points where the
        result is NaN/inf, instead of returning them.
      check_gauss_newton: compare ``gauss_newton`` with ``exact`` at the first point first.
      devices, mesh: where to run: a 1-D ``Mesh`` over which the points are sharded, or a list of
        devices for one (default: every visible device; one device runs unsharded).
      return_info: also return an :class:`Info`.

    Returns:
      ``(F, A, m)`` array in the dtype of ``stats`` (and an :class:`Info` with ``return_info``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    dtype = stats.mean.dtype
    k = stats.mean.shape[0]
    idx = _features(features, k)
    alph = _alphas(alphas, stats, idx, strict, dtype)
    F, A = alph.shape

    if rank is not None and method not in _FACTOR_METHODS:
        raise ValueError(f"rank= applies to {_FACTOR_METHODS}, not to method={method!r}")
    V, discarded = truncate(stats, rank)
    if method == "finite_difference" and dtype != jnp.float64:
        raise ValueError(
            "method='finite_difference' refuses to run in float32: second differences with a small "
            "step cancel catastrophically (the paper's eps=1e-6 gave relative errors ~1e13 in float32 "
            "on an MNIST MLP). Enable float64 (jax.config.update('jax_enable_x64', True) and float64 "
            "stats), or use method='directional', which is exact.")
    if method == "finite_difference" and not step > 0:
        raise ValueError(f"step must be > 0, got {step}")
    if method == "gauss_newton" and head is None:
        raise ValueError("method='gauss_newton' needs head= (the smooth map after the piecewise-linear body)")
    if method != "gauss_newton" and head is not None:
        raise ValueError("head= is only used by method='gauss_newton'")
    if method == "hutchinson":
        if key is None:
            raise ValueError("method='hutchinson' needs an explicit key= (PRNG key)")
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    if method == "monte_carlo":
        if data is None:
            raise ValueError("method='monte_carlo' needs data= (the (n, k) rows to average over)")
        data = jnp.asarray(data, dtype)
        if data.ndim != 2 or data.shape[1] != k or data.shape[0] < 1:
            raise ValueError(f"data must have shape (n, {k}) with n >= 1, got {data.shape}")
    else:
        data = jnp.zeros((1, k), dtype)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    key = jax.random.key(0) if key is None else key

    if mesh is None and (devices is not None or len(jax.devices()) > 1):
        mesh = make_mesh(devices)
    if mesh is not None and mesh.devices.size == 1:
        mesh = None
    ndev = 1 if mesh is None else mesh.devices.size

    # Pad the flattened (feature, alpha) points to a multiple of (devices x batch): fixed shapes.
    n_pts = F * A
    bs = min(batch_size, -(-n_pts // ndev))
    n_pad = -(-n_pts // (ndev * bs)) * ndev * bs
    flat_idx = np.zeros(n_pad, np.int32)
    flat_idx[:n_pts] = np.repeat(idx, A)
    flat_a = np.full(n_pad, float(np.asarray(stats.mean)[0]), np.float64)
    flat_a[:n_pts] = alph.reshape(-1)
    model = _Model(f, params is not None, head)
    cfg = _Config(method, bs, direction_batch_size, data_batch_size, num_samples, float(step), mesh)

    if method == "gauss_newton" and check_gauss_newton:
        _check_gauss_newton(model, params, stats, stats.factor, int(idx[0]), alph[0, 0], key)

    args = (params, stats.mean, stats.cov, V, data, key, jnp.asarray(flat_idx),
            jnp.asarray(flat_a, dtype), jnp.arange(n_pad, dtype=jnp.int32))
    if _compile_only:
        return _run.lower(model, cfg, *args).compile()
    vals, se = _run(model, cfg, *args)
    m = vals.shape[-1]
    vals = vals[:n_pts].reshape(F, A, m)
    if check_finite:
        bad = ~np.all(np.isfinite(np.asarray(vals)), axis=-1)
        if np.any(bad):
            where = [(int(idx[r]), float(alph[r, c])) for r, c in np.argwhere(bad)[:10]]
            raise FloatingPointError(
                f"f gave non-finite interventional expectations at {int(bad.sum())} of {n_pts} "
                f"(feature, alpha) points, e.g. {where}; pass check_finite=False to get them anyway")
    if not return_info:
        return vals
    stoch = method in ("hutchinson", "monte_carlo")
    info = Info(method, int(V.shape[1]) if method in _FACTOR_METHODS else k, discarded,
                se[:n_pts].reshape(F, A, m) if stoch else None)
    return vals, info


def compiled(f: Callable, stats: InputStats, alphas, **kwargs):
    """The compiled XLA program :func:`interventional_expectation` would run for these arguments
    (nothing is executed): use ``.memory_analysis()`` for its buffer sizes and ``.cost_analysis()``
    for XLA's flop estimate. Takes the same arguments."""
    return interventional_expectation(f, stats, alphas, _compile_only=True, **kwargs)


def _check_gauss_newton(model, params, stats, V, i, a, key, tol=1e-3):
    """Compare gauss_newton with exact at one point; raise when the body is not piecewise linear."""
    args = (params, stats.mean, stats.cov, V, jnp.zeros((1, V.shape[0]), V.dtype), key,
            jnp.asarray(i), jnp.asarray(a, V.dtype), jnp.asarray(0))
    base = _Config("gauss_newton", 1, None, 1, 2, 0.0, None)
    gn, _ = jax.jit(partial(_point, model, base))(*args)
    ex, _ = jax.jit(partial(_point, model, base._replace(method="exact")))(*args)
    err = float(jnp.max(jnp.abs(gn - ex)) / jnp.maximum(jnp.max(jnp.abs(ex)), 1e-30))
    if not err <= tol:
        raise ValueError(
            f"gauss_newton differs from exact by {err:.2e} (relative) at feature {i}, alpha {float(a)}: "
            "the body f is not piecewise linear (smooth activations?). Use method='directional'.")
