r"""Estimators of interventional expectations ``E[y | do(x_i = a)]``, one small object each.

Each estimator is a registered pytree dataclass: settings are static (part of the compiled
program's identity), arrays such as a PRNG key or data rows are leaves (passed to ``jit`` as
arguments, never baked in). An estimator validates itself against the input moments
(:meth:`Estimator.prepare`, at the Python boundary, before any work) and supplies its per-unit
rule; :func:`jcausal.ace.interventional_expectation` is the one driver that pads, batches and
shards the units for every estimator, as diffrax solvers or numpyro kernels are passed to one
driver. ``method="directional"`` etc. are thin aliases (:func:`make_estimator`), like optax's
aliases over its transforms. The :data:`REGISTRY` is the one list of methods: the driver, its
``METHODS`` and the CLI's ``--method`` choices all read it.

Two kinds of rule:

- *point* estimators (the second-order expansion, ACE paper eqn 4) evaluate one (feature, alpha)
  point: ``point(model, params, moments, i, a, pid) -> (value (m,), stderr (m,))``;
- *feature* estimators (the definition, eqn 2) evaluate every alpha of one feature over the same
  data rows (common random numbers): ``feature(model, params, moments, aux, i, alphas, fid) ->
  (values (A, m), stderr (A, m), stderr of the ACE differences (A, m))``.

Adding an estimator is one class decorated with :func:`register_estimator` (here or in user
code) and one test: it is then a ``method=`` name of the driver and a ``--method`` choice of the CLI.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.checks import require_int
from jcausal._src.xla import jit
from jcausal.ace.stats import InputStats, truncate

__all__ = [
    "ALIASES",
    "Definition",
    "Directional",
    "Estimator",
    "Exact",
    "FiniteDifference",
    "GaussNewton",
    "Hutchinson",
    "Moments",
    "REGISTRY",
    "default_method",
    "lookup",
    "make_estimator",
    "method_names",
    "register_estimator",
    "resolve",
    "takes_setting",
    "unregister_estimator",
]


class Moments(NamedTuple):
    """The arrays a rule reads: ``mean (k,)``, ``cov (k, k)``, ``V (k, r)`` with ``cov ~ V V^T``."""

    mean: jax.Array
    cov: jax.Array
    V: jax.Array


REGISTRY: dict[str, type] = {}  # name -> estimator class, in registration order: the one list of methods
ALIASES = {"monte_carlo": "definition"}


def register_estimator(cls):
    """Class decorator: make an :class:`Estimator` subclass a frozen pytree dataclass (fields made
    with ``static()`` are part of the compiled program's identity, the others are array leaves)
    and register it under ``cls.name``, so ``method="<name>"`` and the CLI's ``--method`` find it.

    Examples:
      >>> from typing import ClassVar
      >>> import jax.numpy as jnp
      >>> from jcausal.ace import estimators as E
      >>> @E.register_estimator
      ... class AtMean(E.Estimator):          # f at mu_ia: eqn 4 without its second-order term
      ...     name: ClassVar[str] = "at_mean_doc"
      ...     def point(self, model, params, mom, i, a, pid):
      ...         f0 = model(params, mom.mean.at[i].set(a))
      ...         return f0, jnp.zeros_like(f0)
      >>> "at_mean_doc" in E.method_names()
      True
      >>> E.unregister_estimator("at_mean_doc")
    """
    if not (isinstance(cls, type) and issubclass(cls, Estimator)) or not cls.name:
        raise TypeError("register_estimator takes an Estimator subclass with a class-level name")
    if cls.name in REGISTRY or cls.name in ALIASES:
        raise ValueError(f"an estimator named {cls.name!r} is already registered")
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    data = [f.name for f in fields if not f.metadata.get("static", False)]
    meta = [f.name for f in fields if f.metadata.get("static", False)]
    cls = jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)
    REGISTRY[cls.name] = cls
    return cls


def unregister_estimator(name: str) -> None:
    """Remove the estimator registered as ``name`` (e.g. a test's own) from the method list."""
    REGISTRY.pop(name, None)


def method_names() -> tuple[str, ...]:
    """Every ``method=`` name: the registered estimators, then the aliases."""
    return (*REGISTRY, *ALIASES)


def lookup(method: str) -> type:
    """The estimator class registered as ``method`` (or as the name an alias stands for)."""
    name = ALIASES.get(method, method)
    if name not in REGISTRY:
        raise ValueError(f"method must be one of {method_names()}, got {method!r}")
    return REGISTRY[name]


def setting_fields(method: str) -> dict[str, dataclasses.Field]:
    """The settings of the estimator registered as ``method``: ``{name: dataclass field}``."""
    return {f.name: f for f in dataclasses.fields(lookup(method))}


def takes_setting(method: str, setting: str) -> bool:
    """Whether the estimator registered as ``method`` has the setting ``setting``."""
    return setting in setting_fields(method)


def default_method(has_rows: bool) -> str:
    """The method when none is named: the definition (eqn 2) when data rows are at hand, the
    paper's expansion (eqn 4) from the moments alone otherwise."""
    return "definition" if has_rows else "directional"


def resolve(method, data=None) -> Estimator:
    """The estimator object for ``method`` (an object, a registered name, or ``None``: see
    :func:`default_method`); an estimator that averages rows and holds none gets ``data``."""
    if method is None:
        method = default_method(data is not None)
    if isinstance(method, str):
        method = lookup(method)()
    if not isinstance(method, Estimator):
        raise TypeError(f"method must be a name or an Estimator, got {type(method).__name__}")
    if data is not None and method.kind == "feature" and getattr(method, "data", None) is None:
        method = dataclasses.replace(method, data=data)
    return method


def static(default=None):
    return dataclasses.field(default=default, metadata={"static": True})


def leaf(default=None):
    return dataclasses.field(default=default, metadata={"static": False})


class Estimator:
    """Base of every estimator (see the module docstring)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "point"  # "point" or "feature"
    eqn: ClassVar[int] = 4  # the ACE paper's equation it computes
    stochastic: ClassVar[bool] = False
    uses_factor: ClassVar[bool] = False

    def prepare(self, stats: InputStats, *, dtype, model) -> tuple[Estimator, Moments, int, float]:
        """Validate against the moments and return ``(estimator, moments, rank, discarded)``.
        Raises ``ValueError`` naming the bad setting."""
        rank = getattr(self, "rank", None)
        V, discarded = truncate(stats, rank)
        r = int(V.shape[1]) if self.uses_factor else int(stats.mean.shape[0])
        return self, Moments(stats.mean, stats.cov, V), r, discarded

    def point(self, model, params, mom: Moments, i, a, pid):  # pragma: no cover - abstract
        raise NotImplementedError


# ----------------------------------------------------------------------------- helpers


def sum_over_directions(fn, D, dbs):
    """``sum_r fn(D[:, r])`` with at most ``dbs`` directions in flight (``None``: all)."""
    vals = jax.lax.map(fn, D.T, batch_size=dbs or D.shape[1])
    return jnp.sum(vals, axis=0)


def second_directional(model, params, x, v, w=None):
    """``v^T H(x) w`` (``w = v`` by default) for every output: forward-over-forward ``jax.jvp``
    (exact, no differencing)."""

    def first(y):
        return jax.jvp(lambda z: model(params, z), (y,), (v,))[1]

    return jax.jvp(first, (x,), (v if w is None else w,))[1]


_SUM_BLOCK = 64  # eqn 2: rows per partial sum (a dot accumulates sequentially)


@partial(jit, static_argnames=("model",))
def _first_one(model, params, x):
    return model.first(params, x)


@jit
def _all_finite(X):
    return jnp.all(jnp.isfinite(X))


def _one_hot(i, k, dtype):
    return (jnp.arange(k, dtype=i.dtype) == i).astype(dtype)


def _intervened_mean(mom, i, a):
    """``mu_ia`` (the mean with entry ``i`` set to ``a``) and the diagonal of ``P_i = I - e_i e_i^T``."""
    return mom.mean.at[i].set(a), 1.0 - _one_hot(i, mom.mean.shape[0], mom.mean.dtype)


def _check_dbs(dbs):
    require_int(dbs, "direction_batch_size", none_ok=True)


# ----------------------------------------------------------------------------- eqn 2


@register_estimator
class Definition(Estimator):
    r"""The definition (ACE paper eqn 2): the mean of ``f`` over data rows with ``x_i`` set to
    ``a``,

    .. math::
        \mathbb{E}[y \mid do(x_i = a)] = \frac1n \sum_{r=1}^n f(x^{(r)} \text{ with } x_i = a).

    Every alpha of a feature reuses the same rows (common random numbers), so the ACE differences
    ``E(a) - mean_a' E(a')`` have far smaller standard errors than ``E`` itself (both reported).
    When the model is a :class:`jcausal.models.Split` (first affine map + rest), the first layer
    runs once per row for all features and alphas: ``first(x with x_i = a) = first(x) +
    (a - x_i) first_linear(e_i)`` (a rank-one update), and only ``rest`` runs per (row, alpha).

    Settings:
      data: ``(n, k)`` rows (a leaf).
      num_rows: average over a seeded subsample of this many rows (``key``), or ``None`` for all.
      target_stderr: choose the subsample size so the largest standard error of ``E`` is about
        this (estimated from a 256-row pilot); exclusive with ``num_rows``.
      key: PRNG key of the subsample (required with ``num_rows`` or ``target_stderr``).
      row_batch_size: (row, alpha) evaluations in flight per feature (bounds memory).
      cache_first: keep ``first(rows)`` in memory for all features (default: when it needs at
        most 512 MiB); otherwise it is recomputed per row chunk and feature (still once per alpha
        grid, not per alpha).
    """

    name: ClassVar[str] = "definition"
    kind: ClassVar[str] = "feature"
    eqn: ClassVar[int] = 2
    stochastic: ClassVar[bool] = True
    data: Any = leaf()
    num_rows: int | None = static()
    target_stderr: float | None = static()
    key: Any = leaf()
    row_batch_size: int = static(8192)
    cache_first: bool | None = static()

    def prepare(self, stats, *, dtype, model):
        k = int(stats.mean.shape[0])
        if self.data is None:
            raise ValueError("method='definition' (eqn 2) needs data= (the (n, k) rows to average over)")
        shape = np.shape(self.data)
        if len(shape) != 2 or shape[1] != k or shape[0] < 1:
            raise ValueError(f"data must have shape (n, {k}) with n >= 1, got {shape}")
        X = jnp.asarray(self.data, dtype)  # one copy to the device; the check runs there
        if not bool(_all_finite(X)):
            bad = np.argwhere(~np.isfinite(np.asarray(X)))[:3].tolist()
            raise ValueError(f"data contains NaN/inf (first at row/column {bad})")
        if self.num_rows is not None and self.target_stderr is not None:
            raise ValueError("pass num_rows= or target_stderr=, not both")
        n = shape[0]
        require_int(self.num_rows, "num_rows", none_ok=True)
        if self.num_rows is not None:
            if self.num_rows > n:
                raise ValueError(f"num_rows={self.num_rows} is larger than the {n} rows given")
        ts = self.target_stderr
        if ts is not None and not (np.isfinite(ts) and ts > 0):
            raise ValueError(f"target_stderr must be > 0, got {self.target_stderr!r}")
        require_int(self.row_batch_size, "row_batch_size")
        if (self.num_rows is not None or ts is not None) and self.key is None:
            raise ValueError("Definition(num_rows=...) and Definition(target_stderr=...) average over a "
                             "random subsample of the rows: pass key=jax.random.key(seed) (no key is "
                             "chosen for you)")
        est = dataclasses.replace(self, data=X)
        if self.num_rows is not None and self.num_rows < n:
            est = est.subsample(self.num_rows)
        mom = Moments(stats.mean, stats.cov, stats.factor[:, :0])
        return est, mom, k, 0.0

    def subsample(self, num_rows: int) -> Definition:
        """The same estimator on a seeded subsample of ``num_rows`` rows (without replacement)."""
        n = self.data.shape[0]
        if num_rows >= n:
            return dataclasses.replace(self, num_rows=None, target_stderr=None)
        rows = jax.random.choice(jax.random.fold_in(self.key, 1), n, (num_rows,), replace=False)
        return dataclasses.replace(self, data=self.data[jnp.sort(rows)], num_rows=None, target_stderr=None)

    def first_cache_ok(self, model, params) -> bool:
        """Whether ``first(rows)`` for all rows fits the cache budget (512 MiB by default)."""
        if not model.is_split:
            return False
        if self.cache_first is not None:
            return bool(self.cache_first)
        z = _first_one.eval_shape(model, params, self.data[0])  # cached per model and shapes
        return self.data.shape[0] * math.prod(z.shape) * z.dtype.itemsize <= 512 * 2 ** 20

    def setup(self, model, params, cache: bool):
        """Work shared by every feature: ``first(rows)`` when the model is split and cached."""
        if cache:  # the output fits the cache budget, so one vmapped call (faster than lax.map)
            return jax.vmap(lambda x: model.first(params, x))(self.data)
        return None

    def feature(self, model, params, mom, aux, i, alphas, fid):
        X = self.data
        n, k = X.shape
        A = alphas.shape[0]
        rb = max(1, min(n, self.row_batch_size // A))
        g = _SUM_BLOCK if rb >= _SUM_BLOCK else rb  # rows per partial sum
        rb = rb // g * g
        nchunks = -(-n // rb)
        dt = X.dtype
        xi = jax.lax.dynamic_slice_in_dim(X, i, 1, axis=1)[:, 0]  # (n,) the intervened column
        if model.is_split:
            e_i = _one_hot(i, k, dt)
            # first_linear(e_i): the first layer's column for feature i (exact for an affine map).
            col = jax.jvp(lambda x: model.first(params, x), (X[0],), (e_i,))[1]

        def chunk_values(start):  # f on rows start..start+rb-1 with x_i = a, every alpha: (A, rb, m)
            if model.is_split:
                Zc = jax.lax.dynamic_slice_in_dim(aux, start, rb) if aux is not None else \
                    jax.vmap(lambda x: model.first(params, x))(jax.lax.dynamic_slice_in_dim(X, start, rb))
                delta = alphas[:, None] - jax.lax.dynamic_slice_in_dim(xi, start, rb)[None, :]  # (A, rb)
                Zs = Zc[None] + delta.reshape(delta.shape + (1,) * col.ndim) * col[None, None]
                return jax.vmap(jax.vmap(lambda z: model.rest(params, z)))(Zs)
            Xc = jax.lax.dynamic_slice_in_dim(X, start, rb)
            Xs = jnp.broadcast_to(Xc[None], (A,) + Xc.shape)
            Xs = jnp.where(jnp.arange(k, dtype=i.dtype)[None, None, :] == i, alphas[:, None, None], Xs)
            return jax.vmap(jax.vmap(lambda x: model(params, x)))(Xs)

        # Shifted sums as contractions with the row weights: one pass, and dots (fast) rather than
        # reductions over the middle axis. A dot accumulates sequentially, so the shift must be
        # close to the mean (float32 accuracy): it is the mean over 64 evenly spaced rows.
        pilot = X[np.linspace(0, n - 1, min(n, 64)).round().astype(np.int64)]
        Yp = jax.vmap(lambda a: jax.vmap(lambda x: model(params, x.at[i].set(a)))(pilot))(alphas)
        shift = jnp.mean(Yp, axis=1)  # (A, m)
        dshift = jnp.mean(Yp - jnp.mean(Yp, axis=0, keepdims=True), axis=1)

        def step(carry, c):
            S1, S2, T1, T2 = carry
            start = jnp.minimum(c * rb, n - rb)  # the last chunk overlaps; repeated rows weigh 0
            w = (start + jnp.arange(rb, dtype=start.dtype) >= c * rb).astype(dt)
            Y = chunk_values(start)
            Yc = Y - shift[:, None]
            Dc = Y - jnp.mean(Y, axis=0, keepdims=True) - dshift[:, None]  # ACE differences
            wg = w.reshape(-1, g)

            def wsum(V):  # sum over rows: dots over blocks of g rows, then a sum over the blocks
                return jnp.sum(jnp.einsum("br,abrm->abm", wg, V.reshape(A, -1, g, V.shape[-1])), axis=1)

            S1, S2 = S1 + wsum(Yc), S2 + wsum(Yc * Yc)
            T1, T2 = T1 + wsum(Dc), T2 + wsum(Dc * Dc)
            return (S1, S2, T1, T2), None

        z = jnp.zeros_like(shift)
        (S1, S2, T1, T2), _ = jax.lax.scan(step, (z, z, z, z), jnp.arange(nchunks))
        m1, dm1 = S1 / n, T1 / n
        se = jnp.sqrt(jnp.maximum(S2 / n - m1 ** 2, 0.0) / n)
        se_diff = jnp.sqrt(jnp.maximum(T2 / n - dm1 ** 2, 0.0) / n)
        return shift + m1, se, se_diff


# ----------------------------------------------------------------------------- eqn 4 estimators


@register_estimator
class Directional(Estimator):
    r"""Eqn 4 with ``Tr(H Sigma_i) = sum_r (P_i v_r)^T H (P_i v_r)``, each term one
    forward-over-forward ``jax.jvp`` along a column of ONE factor ``Sigma = V V^T``:

    .. math::
        \sum_r (P_i v_r)^\top H (P_i v_r) = \sum_r v_r^\top H v_r - 2 e_i^\top H (\Sigma e_i)
        + \Sigma_{ii} H_{ii}

    Exact (no differencing), all outputs in one pass; the directions are shared by every point,
    so point-independent tangents (a first layer's ``W v_r``) are computed once per batch.
    ``rank``: keep the leading directions (int, or a variance fraction such as 0.95).
    """

    name: ClassVar[str] = "directional"
    uses_factor: ClassVar[bool] = True
    rank: Any = static()
    direction_batch_size: int | None = static()

    def prepare(self, stats, *, dtype, model):
        _check_dbs(self.direction_batch_size)
        return super().prepare(stats, dtype=dtype, model=model)

    def point(self, model, params, mom, i, a, pid):
        k = mom.mean.shape[0]
        x = mom.mean.at[i].set(a)
        e_i = _one_hot(i, k, mom.mean.dtype)
        f0 = model(params, x)
        d2 = partial(second_directional, model, params, x)
        total = sum_over_directions(d2, mom.V, self.direction_batch_size)
        c = mom.V[i]
        second = total - 2.0 * d2(e_i, mom.V @ c) + jnp.dot(c, c) * d2(e_i)
        return f0 + 0.5 * second, jnp.zeros_like(f0)


@register_estimator
class Exact(Estimator):
    """Eqn 4 with ``jax.hessian`` contracted with ``Sigma_i`` (the reference; ``O(k)`` passes)."""

    name: ClassVar[str] = "exact"

    def point(self, model, params, mom, i, a, pid):
        x, keep = _intervened_mean(mom, i, a)
        f0 = model(params, x)
        H = jax.hessian(lambda z: model(params, z))(x)  # (m, k, k)
        Si = mom.cov * keep[:, None] * keep[None, :]
        return f0 + 0.5 * jnp.einsum("mjk,jk->m", H, Si), jnp.zeros_like(f0)


@register_estimator
class Hutchinson(Estimator):
    """Eqn 4 with an unbiased stochastic trace: ``num_samples`` probes ``P_i V z``,
    ``z ~ N(0, I)``, from an explicit ``key``; standard errors reported."""

    name: ClassVar[str] = "hutchinson"
    stochastic: ClassVar[bool] = True
    uses_factor: ClassVar[bool] = True
    key: Any = leaf()
    num_samples: int = static(16)
    rank: Any = static()
    direction_batch_size: int | None = static()

    def prepare(self, stats, *, dtype, model):
        if self.key is None:
            raise ValueError("method='hutchinson' needs an explicit key= (PRNG key)")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {self.num_samples}")
        _check_dbs(self.direction_batch_size)
        return super().prepare(stats, dtype=dtype, model=model)

    def point(self, model, params, mom, i, a, pid):
        x, keep = _intervened_mean(mom, i, a)
        f0 = model(params, x)
        z = jax.random.normal(jax.random.fold_in(self.key, pid), (self.num_samples, mom.V.shape[1]),
                              mom.mean.dtype)
        probes = (mom.V @ z.T) * keep[:, None]  # (k, S) = P_i V z, E[u u^T] = P_i V V^T P_i
        vals = jax.lax.map(partial(second_directional, model, params, x), probes.T,
                           batch_size=self.direction_batch_size or self.num_samples)  # (S, m)
        se = jnp.std(vals, axis=0, ddof=1) / math.sqrt(self.num_samples)
        return f0 + 0.5 * jnp.mean(vals, axis=0), 0.5 * se


@register_estimator
class GaussNewton(Estimator):
    """Eqn 4 for a piecewise-linear body (ReLU / max-pool / linear) and a smooth ``head``:
    ``H = J^T (d^2 head) J`` almost everywhere, so ``Tr(H Sigma_i) = Tr(d^2 head(z) J Sigma_i
    J^T)`` from ``c`` reverse passes. Wrong for smooth bodies: ``check=True`` compares with
    ``exact`` at one point first."""

    name: ClassVar[str] = "gauss_newton"
    uses_factor: ClassVar[bool] = True
    head: Callable | None = static()
    rank: Any = static()
    check: bool = static(False)

    def prepare(self, stats, *, dtype, model):
        if self.head is None:
            raise ValueError(
                "method='gauss_newton' needs head= (the smooth map after the piecewise-linear body)")
        return super().prepare(stats, dtype=dtype, model=model)

    def point(self, model, params, mom, i, a, pid):
        x, keep = _intervened_mean(mom, i, a)
        z = model.body(params, x)
        J = jax.jacrev(lambda y: model.body(params, y))(x)  # (c, k): c reverse passes
        W = (J * keep[None, :]) @ mom.V  # (c, r) = J P_i V; V is shared by all points: one GEMM
        G = W @ W.T  # J Sigma_i J^T
        Hs = jax.hessian(lambda u: model.apply_head(params, u))(z)  # (m, c, c)
        f0 = model.apply_head(params, z)
        return f0 + 0.5 * jnp.einsum("mab,ab->m", Hs, G), jnp.zeros_like(f0)


@register_estimator
class FiniteDifference(Estimator):
    """Eqn 4 with the paper's 3-pass central difference (appendix A.5, eqn 9) along each
    ``P_i v_r``: absolute ``step`` along the unit direction, rescaled by ``|P_i v_r|^2``. A
    comparison method, float64 only (in float32 the second differences at the paper's eps = 1e-6 are
    rounding noise)."""

    name: ClassVar[str] = "finite_difference"
    uses_factor: ClassVar[bool] = True
    step: float = static(1e-4)
    rank: Any = static()
    direction_batch_size: int | None = static()

    def prepare(self, stats, *, dtype, model):
        if dtype != jnp.float64:
            raise ValueError(
                "method='finite_difference' refuses to run in float32: second differences with a small "
                "step cancel catastrophically (the paper's eps=1e-6 gave relative errors ~1e13 in float32 "
                "on an MNIST MLP). Enable float64 (jax.config.update('jax_enable_x64', True) and float64 "
                "stats), or use method='directional', which is exact.")
        if not self.step > 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        _check_dbs(self.direction_batch_size)
        return super().prepare(stats, dtype=dtype, model=model)

    def point(self, model, params, mom, i, a, pid):
        x, keep = _intervened_mean(mom, i, a)
        f0 = model(params, x)
        h = self.step

        def fd(v):
            nv = jnp.sqrt(jnp.sum(v * v))
            u = v / jnp.where(nv > 0, nv, 1.0)
            return nv * nv * (model(params, x + h * u) + model(params, x - h * u) - 2.0 * f0) / (h * h)

        D = mom.V * keep[:, None]  # columns P_i v_r
        return f0 + 0.5 * sum_over_directions(fd, D, self.direction_batch_size), jnp.zeros_like(f0)


def make_estimator(method: str, **settings) -> Estimator:
    """The estimator called ``method`` with its settings; a setting the method does not take is
    an error naming the methods that do (e.g. ``rank=`` with ``method="exact"``).

    Examples:
      >>> from jcausal.ace import make_estimator
      >>> type(make_estimator("directional", rank=0.95)).__name__
      'Directional'
      >>> type(make_estimator("monte_carlo")).__name__      # an alias of the definition (eqn 2)
      'Definition'
    """
    cls = lookup(method)
    own = {f.name for f in dataclasses.fields(cls)}
    for key, val in settings.items():
        if val is None or key in own:
            continue
        takers = [n for n, c in REGISTRY.items() if key in {f.name for f in dataclasses.fields(c)}]
        raise ValueError(f"{key}= applies to methods {takers}, not to method={method!r}")
    return cls(**{k: v for k, v in settings.items() if k in own and v is not None})
