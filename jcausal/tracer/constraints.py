"""Counterfactuals people can act on: immutable features, allowed ranges, sparse decoding, several
counterfactuals per input.

The counterfactual GAN (``jcausal.tracer.counterfactual``, TRACER section 3.3) decodes ``x*`` as a
whole: every feature moves. Here a GAN output becomes an *actionable* counterfactual:

1. **Projection** (structural, not hoped for): ``P(v) = where(mutable, clip(v, low, high), x)``. An
   immutable feature of ``P(v)`` is the input's value, bit for bit; a mutable one lies in its range.
2. **Sparse decoding** (greedy forward selection): starting from ``P(x)`` (the input with only the
   changes its ranges force), the GAN's change ``delta = x* - P(x)`` is applied feature by feature,
   at one of a few step scales ``s`` (``P(x) + s delta``, projected; default ``s`` in ``{1, 2}``),
   each time the (feature, scale) that raises the target's log-probability most, until the
   classifier predicts the target with probability ``>= min_prob``; a backward pass then sets each
   change to the smallest value (none, or the smallest scale) that keeps the counterfactual valid.
   Changes smaller than ``threshold`` are snapped back (never selected). Unselected features equal
   the input's exactly. The data's observed range bounds the changes (never the input's own value).
3. **Repair** (bounded): when the full projected change is not valid, ``repair_steps`` projected
   signed-gradient steps on ``log p(y* | x)`` from ``P(x*)`` look for a valid point in the allowed
   box, which is then decoded sparsely as in 2. An input that stays invalid is *unreachable* under
   the constraints (as far as this bounded search can tell).
4. **Diversity**: the ``r``-th counterfactual of an input may not use the first (most important)
   feature of any earlier one, so the ``num`` counterfactuals use different actions and are
   pairwise different; their mean pairwise Euclidean distance is DiCE's diversity (Mothilal et al.
   2020, eqn 3 with the mean of distances).

Every jitted function takes its arrays as arguments and works on fixed padded chunks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.batching import map_chunks
from jcausal._src.calling import Classifier
from jcausal._src.checks import require_int
from jcausal._src.wrap import bind_classifier, wrap
from jcausal._src.xla import jit

__all__ = ["Constraints", "make_constraints", "project", "check_immutable_in_range", "Decoding", "Decoded",
           "sparse_decode", "dense_decode", "Actionable", "actionable", "pairwise_diversity"]


class Constraints(NamedTuple):
    """Per-feature constraints in the model's (scaled) units, flattened inputs of ``d`` features.

    Fields:
      mutable: ``(d,)`` bool, ``False`` for immutable features.
      low, high: ``(d,)`` float32 allowed range (``-inf`` / ``+inf`` where unconstrained), rounded
        inwards: a float32 in ``[low, high]`` maps back (``scaler.inverse_transform``) inside the
        range given in data units.
      names: ``(d,)`` feature names used in messages.
    """

    mutable: np.ndarray
    low: np.ndarray
    high: np.ndarray
    names: tuple[str, ...]

    @property
    def immutable(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.flatnonzero(~self.mutable))

    @property
    def constrained(self) -> bool:
        """Whether any feature is immutable or has a finite bound."""
        return bool((~self.mutable).any() or np.isfinite(self.low).any() or np.isfinite(self.high).any())

    def arrays(self, shape: Sequence[int]) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(mutable, low, high)`` as float32 device arrays of ``shape`` (for training steps)."""
        return (jnp.asarray(self.mutable.reshape(shape), jnp.float32),
                jnp.asarray(self.low.reshape(shape)), jnp.asarray(self.high.reshape(shape)))


def _resolve(feature, names: Sequence[str], given: bool, what: str) -> int:
    d = len(names)
    if isinstance(feature, (int, np.integer)) and not isinstance(feature, bool):
        j = int(feature)
        if not -d <= j < d:
            raise ValueError(f"{what}: feature index {j} is out of range for {d} features")
        return j % d
    if isinstance(feature, str):
        if feature not in names:
            known = ", ".join(names) if given else f"x0 .. x{d - 1} (no feature_names were passed)"
            raise ValueError(f"{what}: unknown feature {feature!r}; known features: {known}")
        return list(names).index(feature)
    raise ValueError(f"{what}: a feature is an index or a name, got {feature!r}")


def _to_model_units(scaler, j: int, value: float, d: int) -> float:
    """``value`` of feature ``j`` in data units -> model units through ``scaler.transform`` (any
    per-feature scaler: the other columns of the row do not matter)."""
    if scaler is None:
        return float(value)
    row = np.zeros((1, d), np.float64)
    row[0, j] = value
    return float(np.asarray(scaler.transform(row), np.float64)[0, j])


def _to_data_units(scaler, j: int, d: int, value) -> float:
    if scaler is None or not hasattr(scaler, "inverse_transform"):
        return float(value)
    row = np.zeros((1, d), np.float32)
    row[0, j] = value
    return float(np.asarray(scaler.inverse_transform(row), np.float64)[0, j])


def _inward(bound: float, back, data_bound: float, *, up: bool) -> np.float32:
    """The float32 nearest ``bound`` (model units), moved inwards until ``back`` (to data units)
    respects ``data_bound``: a few ulps at most."""
    f = np.float32(bound)
    step = np.float32(np.inf if up else -np.inf)
    for _ in range(16):
        v = back(f)
        if (v >= data_bound) if up else (v <= data_bound):
            break
        f = np.nextafter(f, step)
    return f


def make_constraints(d: int, *, immutable: Sequence[int | str] | None = None,
                     ranges: Mapping[int | str, tuple[float | None, float | None]] | None = None,
                     feature_names: Sequence[str] | None = None, scaler=None) -> Constraints:
    """Resolve user constraints into :class:`Constraints` in model units.

    Args:
      d: number of (flattened) features.
      immutable: features that must not change, as indices or names.
      ranges: ``{feature: (low, high)}`` allowed values in the DATA's units (``None`` for an open
        side); converted to model units with ``scaler.transform`` (e.g. a
        :class:`jcausal.data.MinMaxScaler`); without a scaler the ranges are in model units.
      feature_names: ``d`` names (default ``x0``, ``x1`` ...), to refer to features by name.
      scaler: the data's scaler or ``None``.

    Raises:
      ValueError: an unknown name or index, a range with
        ``low > high`` or a non-finite bound, ``feature_names`` of the wrong length.
    """
    d = int(d)
    if feature_names is not None:
        feature_names = tuple(str(n) for n in feature_names)
        if len(feature_names) != d:
            raise ValueError(f"{len(feature_names)} feature names for {d} features")
    names = feature_names if feature_names is not None else tuple(f"x{i}" for i in range(d))
    mutable = np.ones(d, bool)
    for f in (immutable or ()):
        mutable[_resolve(f, names, feature_names is not None, "immutable")] = False
    low = np.full(d, -np.inf, np.float32)
    high = np.full(d, np.inf, np.float32)
    for f, bounds in (ranges or {}).items():
        j = _resolve(f, names, feature_names is not None, "ranges")
        try:
            lo, hi = bounds
        except (TypeError, ValueError):
            raise ValueError(f"ranges: feature {names[j]!r} needs a (low, high) pair, "
                             f"got {bounds!r}") from None
        lo = -np.inf if lo is None else float(lo)
        hi = np.inf if hi is None else float(hi)
        if np.isnan(lo) or np.isnan(hi) or lo == np.inf or hi == -np.inf:
            raise ValueError(f"ranges: feature {names[j]!r} has an invalid bound ({lo}, {hi})")
        if lo > hi:
            raise ValueError(f"ranges: feature {names[j]!r} has low {lo} > high {hi}")
        mlo = _to_model_units(scaler, j, lo, d) if np.isfinite(lo) else -np.inf
        mhi = _to_model_units(scaler, j, hi, d) if np.isfinite(hi) else np.inf
        mlo, mhi = min(mlo, mhi), max(mlo, mhi)  # a decreasing scaler swaps the ends
        # float32 bounds rounded inwards: every allowed float32 maps back inside the data-unit range
        back = partial(_to_data_units, scaler, j, d)
        low[j] = _inward(mlo, back, lo, up=True) if np.isfinite(mlo) else -np.inf
        high[j] = _inward(mhi, back, hi, up=False) if np.isfinite(mhi) else np.inf
        if low[j] > high[j]:  # a range narrower than float32's resolution: its nearest float32
            low[j] = high[j] = np.float32(0.5 * (mlo + mhi))
    return Constraints(mutable, low, high, names)


def _outside(cons: Constraints, x) -> np.ndarray:
    """``(n, d)`` bool: the entries of ``x`` ``(n, ...)`` outside their feature's range, with two
    ulps of slack (the bounds were rounded inwards: an input on a bound is in range)."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    lo = np.nextafter(np.nextafter(cons.low, np.float32(-np.inf)), np.float32(-np.inf))
    hi = np.nextafter(np.nextafter(cons.high, np.float32(np.inf)), np.float32(np.inf))
    return (x < lo[None, :]) | (x > hi[None, :])


def out_of_range(cons: Constraints, x) -> np.ndarray:
    """``(n,)`` bool: inputs with a mutable feature outside its range (already of the target class,
    such an input is not an answer as it is: it is searched like the others, and projected)."""
    return (cons.mutable[None, :] & _outside(cons, x)).any(1)


def check_immutable_in_range(cons: Constraints, x) -> None:
    """Raise ValueError when an immutable feature's range excludes an input's own value (no
    counterfactual can satisfy both), naming the feature and the inputs. ``x``: ``(n, d)``."""
    bad = ~cons.mutable[None, :] & _outside(cons, x)
    if bad.any():
        j = int(np.flatnonzero(bad.any(0))[0])
        rows = np.flatnonzero(bad[:, j])
        raise ValueError(f"feature {cons.names[j]!r} is immutable but its range excludes the value of "
                         f"input(s) {_list(rows)}")


def _list(rows, limit: int = 20) -> str:
    rows = [int(r) for r in rows]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"{rows[:limit]}{more}"


def project(v, x, mutable, low, high):
    """``P(v) = where(mutable, clip(v, low, high), x)``: any shapes that broadcast; immutable
    entries are ``x``'s exactly."""
    return jnp.where(mutable, jnp.clip(v, low, high), x)


# ----------------------------------------------------------------------------- sparse decoding


@dataclasses.dataclass(frozen=True)
class Decoding:
    """How proposals (GAN outputs) become counterfactuals; see the module docstring. Validated when
    built (``scales`` are stored ascending, as floats).

    Fields:
      sparse: greedy sparse decoding (``False``: the projected proposal, every feature may move).
      scales: step scales of a proposal's change each feature may take, ascending (larger scales:
        fewer features changed, each by more; see the README's counterfactual section).
      threshold: changes smaller than this (model units) are snapped back.
      min_prob: valid means the target is predicted with at least this probability.
      repair_steps, step_size: the bounded projected gradient search for invalid proposals (0: none).
      noise: std of the latent noise of the 2nd, 3rd ... counterfactual in dense decoding.
    """

    sparse: bool = True
    scales: tuple[float, ...] = (1.0, 2.0)
    threshold: float = 1e-3
    min_prob: float = 0.5
    repair_steps: int = 200
    step_size: float = 0.02
    noise: float = 1.0

    @classmethod
    def dense(cls, **kw) -> Decoding:
        """The paper's decoding (images' default): the projected GAN output, no repair."""
        return cls(**{"sparse": False, "repair_steps": 0, **kw})

    def __post_init__(self):
        sc = tuple(float(a) for a in np.atleast_1d(self.scales))
        if not sc or any(not (np.isfinite(a) and a > 0) for a in sc):
            raise ValueError(f"scales = {self.scales}: need one or more finite positive scales")
        if not 0.0 < self.min_prob < 1.0:
            raise ValueError(f"min_prob = {self.min_prob}: must lie in (0, 1)")
        require_int(self.repair_steps, "repair_steps", minimum=0)
        if not (self.threshold >= 0 and self.step_size > 0 and self.noise >= 0):
            raise ValueError(f"threshold and noise must be >= 0 and step_size > 0, got {self.threshold}, "
                             f"{self.noise}, {self.step_size}")
        object.__setattr__(self, "scales", tuple(sorted(sc)))
        object.__setattr__(self, "repair_steps", int(self.repair_steps))


class Decoded(NamedTuple):
    """Sparse decoding of a batch (numpy, leading axis ``n``, flattened features ``d``).

    Fields:
      counterfactuals: ``(n, d)`` float32; selected: ``(n, d)`` bool, the features taken from the
        (GAN or repaired) change; first: ``(n,)`` int, the first selected feature (``-1``: none);
      valid: ``(n,)`` bool (target predicted with probability ``>= min_prob``); repaired: ``(n,)``
        bool, the GAN's change was not enough and the gradient search was used.
    """

    counterfactuals: np.ndarray
    selected: np.ndarray
    first: np.ndarray
    valid: np.ndarray
    repaired: np.ndarray


def _logp(clf: Classifier, params, xf):
    return clf.log_probs(params, xf)


def _is_valid(lp, t, log_min_prob):
    return (jnp.argmax(lp) == t) & (lp[t] >= log_min_prob)


@jit(static_argnums=(0, 1))
def _repair(clf, steps, params, start, x, t, mutable, low, high, step_size, log_min_prob):
    """Projected signed-gradient ascent on ``log p(t | v)`` for ONE example, at most ``steps``
    iterations, stopped at the first valid point (a bounded ``while_loop``). Returns ``(v, valid)``."""
    lp = partial(_logp, clf, params)
    grad = jax.grad(lambda v: lp(v)[t])

    def body(carry):
        v, ok, i = carry
        nv = project(v + jnp.where(mutable, step_size * jnp.sign(grad(v)), 0.0), x, mutable, low, high)
        nv = jnp.where(ok, v, nv)  # under vmap the loop runs for the slowest row: finished rows wait
        return nv, ok | _is_valid(lp(nv), t, log_min_prob), i + 1

    v0 = project(start, x, mutable, low, high)
    v, ok, _ = jax.lax.while_loop(lambda c: (~c[1]) & (c[2] < steps), body,
                                  (v0, _is_valid(lp(v0), t, log_min_prob), 0))
    return v, ok


@jit(static_argnums=0)
def _greedy(clf, params, base, changes, eligible, t, log_min_prob):
    """Greedy forward selection for ONE example.

    ``base`` ``(d,)``; ``changes`` ``(m, d)``: the candidate changes of each feature (the proposal's
    change at ``m`` step scales, already projected); ``eligible`` ``(d,)`` bool. Each round adds the
    (feature, scale) that raises ``log p(t)`` most, until valid; at most ``d`` rounds of ``m d``
    evaluations (a bounded ``while_loop``), then a backward pass sets each change (smallest first)
    to the smallest value that keeps the counterfactual valid: none, or the smallest scale.
    Returns ``(change (d,), used (d,) bool, first, valid)``.
    """
    lp = partial(_logp, clf, params)
    m, d = changes.shape
    onehots = jnp.eye(d, dtype=base.dtype)

    def score(chg):
        return lp(base + chg)

    def cond(c):
        _, used, _, ok, i = c
        return (~ok) & (i < d) & jnp.any(eligible & ~used)

    def body(c):
        chg, used, first, _, i = c
        cand = jnp.where(onehots[None] > 0, changes[:, None, :], chg[None, None, :])  # (m, d, d)
        s = jax.vmap(jax.vmap(lambda v: score(v)[t]))(cand)
        s = jnp.where((eligible & ~used)[None, :], s, -jnp.inf).reshape(-1)
        kj = jnp.argmax(s)
        k, j = kj // d, kj % d
        chg = chg.at[j].set(changes[k, j])
        used = used.at[j].set(True)
        return chg, used, jnp.where(first < 0, j, first), _is_valid(score(chg), t, log_min_prob), i + 1

    zero = jnp.zeros_like(base)
    chg, used, first, ok, _ = jax.lax.while_loop(
        cond, body, (zero, jnp.zeros(d, bool), jnp.asarray(-1, jnp.int32),
                     _is_valid(score(zero), t, log_min_prob), 0))

    def prune(i, c):  # the smallest valid value of each change: none, then scales ascending
        chg, used = c
        j = order[i]
        vals = jnp.concatenate([jnp.zeros(1, chg.dtype), changes[:, j]])  # (m + 1,)
        cand = jax.vmap(lambda v: chg.at[j].set(v))(vals)
        ok_v = jax.vmap(lambda v: _is_valid(score(v), t, log_min_prob))(cand)
        k = jnp.argmax(ok_v)
        take = ok & used[j] & ok_v[k]
        return jnp.where(take, cand[k], chg), used.at[j].set(used[j] & ~(take & (k == 0)))

    order = jnp.argsort(jnp.abs(chg))
    chg, used = jax.lax.fori_loop(0, d, prune, (chg, used))
    first = jnp.where(used[jnp.maximum(first, 0)], first, jnp.argmax(jnp.where(used, jnp.abs(chg), -1.0)))
    return chg, used, jnp.where(jnp.any(used), first, -1), ok


@jit(static_argnums=0)
def _decode(clf, params, xb, pb, tb, bb, lo, hi, mut, thr, lmp, scales):
    """A chunk of :func:`_greedy` (rows ``(b, d)``, per-row bounds ``lo``/``hi``): ``(counterfactuals,
    selected, first, valid)``."""
    base = project(xb, xb, mut, lo, hi)
    delta = pb - base
    changes = project(base[:, None, :] + scales[None, :, None] * delta[:, None, :], xb[:, None, :], mut,
                      lo[:, None, :], hi[:, None, :]) - base[:, None, :]
    elig = mut[None, :] & ~bb & (jnp.abs(project(pb, xb, mut, lo, hi) - base) >= thr)
    chg, used, first, ok = jax.vmap(lambda b, c, e, ti: _greedy(clf, params, b, c, e, ti, lmp))(
        base, changes, elig, tb)
    cf = jnp.where(used, project(base + chg, xb, mut, lo, hi), base)
    return cf, used, first, ok


@jit(static_argnums=(0, 1))
def _fix(clf, steps, params, xb, pb, tb, bb, lo, hi, mut, thr, lmp, scales, step):
    """A chunk of :func:`_repair` from the proposals (banned features at the input's value)."""
    del thr, scales
    mut_b = mut[None, :] & ~bb
    start = jnp.where(mut_b, pb, project(xb, xb, mut, lo, hi))
    one = partial(_repair, clf, steps, params)
    return jax.vmap(lambda s, xi, ti, m, a, b: one(s, xi, ti, m, a, b, step, lmp))(
        start, xb, tb, mut_b, lo, hi)


def _row_bounds(cons: Constraints, x: np.ndarray, domain) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``(low, high)`` ``(n, d)``: the user's ranges, intersected with the data's ``domain``
    widened to include each input's own value (the domain never forces a change)."""
    n, d = x.shape
    lo = np.broadcast_to(cons.low, (n, d))
    hi = np.broadcast_to(cons.high, (n, d))
    if domain is None:
        return np.ascontiguousarray(lo), np.ascontiguousarray(hi)
    dlo, dhi = (np.asarray(a, np.float32).reshape(d) for a in domain)
    lo2 = np.maximum(lo, np.minimum(dlo[None, :], x))
    hi2 = np.minimum(hi, np.maximum(dhi[None, :], x))
    empty = lo2 > hi2  # a user range outside the data's: the user's wins
    return np.where(empty, lo, lo2).astype(np.float32), np.where(empty, hi, hi2).astype(np.float32)


def _bound(model, input_shape) -> tuple[Classifier, object]:
    """The classifier through the one entry (:func:`jcausal.wrap`; a wrapped model is taken as it
    is) and bound for the compiled programs below; a pair already bound (``actionable`` binds once
    for all its rounds) is returned as it is."""
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], Classifier):
        return model
    shape = tuple(int(s) for s in input_shape)
    return bind_classifier(wrap(model, np.zeros(shape, np.float32), split=False))


def sparse_decode(model, x, proposals, targets, cons: Constraints, *, input_shape,
                  banned=None, decoding: Decoding | None = None, domain=None,
                  batch_size: int = 128) -> Decoded:
    """Actionable counterfactuals from proposals (e.g. GAN outputs): projection, greedy sparse
    selection of the proposal's changes, bounded gradient repair (see the module docstring).

    Args:
      model: the classifier of ONE input of ``input_shape``: anything :func:`jcausal.wrap` takes
        (logits or probabilities, as its ``output`` says).
      x, proposals: ``(n, d)`` inputs and proposed counterfactuals (flattened, model units).
      targets: ``(n,)`` ints; cons: :class:`Constraints` of ``d`` features.
      banned: ``(n, d)`` bool, features that may not be selected (diversity), or ``None``.
      decoding: :class:`Decoding` settings (``sparse`` and ``noise`` are not used here):
        ``threshold`` (changes ``|P(x*) - P(x)| < threshold`` are snapped back, never selected),
        ``scales`` (the step scales of the proposal's change each feature may take; ``2``: twice
        the GAN's change, clipped to the ranges), ``min_prob`` (valid when the target is the argmax
        with at least this probability), ``repair_steps``/``step_size`` (the bounded gradient
        search; 0 steps: no repair). Default ``Decoding()``.
      domain: ``None`` or ``(low, high)`` ``(d,)``: the data's observed range (e.g. the training
        data's min and max); changes are clipped to it, but it never moves an input's own value.
      batch_size: inputs decoded per compiled call.

    Returns:
      :class:`Decoded`. Immutable features equal ``x`` bitwise; every mutable feature lies in
      ``[low, high]``; unselected mutable features equal ``clip(x, low, high)``.
    """
    decoding = Decoding() if decoding is None else decoding
    scales, threshold, min_prob = decoding.scales, decoding.threshold, decoding.min_prob
    repair_steps, step_size = decoding.repair_steps, decoding.step_size
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    prop = np.asarray(proposals, np.float32).reshape(len(x), -1)
    t = np.asarray(targets).astype(np.int32).reshape(-1)
    n, d = x.shape
    if n == 0:
        z = np.zeros((0, d), np.float32)
        return Decoded(z, z.astype(bool), np.zeros(0, int), np.zeros(0, bool), np.zeros(0, bool))
    banned = np.zeros((n, d), bool) if banned is None else np.asarray(banned, bool).reshape(n, d)
    scales = sorted(float(a) for a in scales)  # the backward pass tries them smallest first
    clf, params = _bound(model, input_shape)
    lo, hi = _row_bounds(cons, x, domain)
    mut = jnp.asarray(cons.mutable)
    lmp = jnp.asarray(np.log(min_prob), jnp.float32)
    thr = jnp.asarray(threshold, jnp.float32)

    args = (x, prop, t, banned, lo, hi)
    consts = (mut, thr, lmp, jnp.asarray(scales, jnp.float32).reshape(-1))
    cf, sel, first, ok = map_chunks(lambda *a: _decode(clf, params, *a, *consts), args, batch_size,
                                    shrink=True)
    repaired = np.zeros(n, bool)
    bad = np.flatnonzero(~ok)
    if len(bad) and repair_steps > 0:
        sub = (x[bad], prop[bad], t[bad], banned[bad], lo[bad], hi[bad])
        step = jnp.asarray(step_size, jnp.float32)
        v, found = map_chunks(lambda *a: _fix(clf, int(repair_steps), params, *a, *consts, step), sub,
                              batch_size, shrink=True)
        hit = bad[found]
        if len(hit):
            c2, s2, f2, ok2 = map_chunks(lambda *a: _decode(clf, params, *a, *consts),
                                         (x[hit], v[found], t[hit], banned[hit], lo[hit], hi[hit]),
                                         batch_size, shrink=True)
            cf[hit], sel[hit], first[hit], ok[hit] = c2, s2, f2, ok2
            repaired[hit] = True
    return Decoded(cf, sel, first.astype(int), ok.astype(bool), repaired)


def pairwise_diversity(cfs) -> np.ndarray:
    """Mean pairwise Euclidean distance of each input's counterfactuals: ``(n, num, ...)`` ->
    ``(n,)`` (0 when ``num == 1``); DiCE's diversity with distances instead of a determinant."""
    c = np.asarray(cfs, np.float64)
    c = c.reshape(c.shape[0], c.shape[1], -1)
    k = c.shape[1]
    if k < 2:
        return np.zeros(c.shape[0])
    dd = np.sqrt(np.sum(np.square(c[:, :, None] - c[:, None, :]), -1))
    iu = np.triu_indices(k, 1)
    return dd[:, iu[0], iu[1]].mean(1)


@jit(static_argnums=0)
def _valid(clf, params, xb, tb, lmp):
    return jax.vmap(lambda v, ti: _is_valid(_logp(clf, params, v), ti, lmp))(xb, tb)


def dense_decode(model, x, proposals, targets, cons: Constraints, *, input_shape,
                 domain=None, min_prob: float = 0.5, repair_steps: int = 0, step_size: float = 0.02,
                 batch_size: int = 128) -> Decoded:
    """The projected proposals ``P(x*)`` (every feature may move), with the bounded gradient repair
    of invalid ones when ``repair_steps > 0``. Arguments as for :func:`sparse_decode`."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    prop = np.asarray(proposals, np.float32).reshape(len(x), -1)
    t = np.asarray(targets).astype(np.int32).reshape(-1)
    n, d = x.shape
    lo, hi = _row_bounds(cons, x, domain)
    mut = jnp.asarray(cons.mutable)
    cf = np.asarray(project(prop, x, cons.mutable, lo, hi), np.float32)
    clf, params = _bound(model, input_shape)
    lmp = jnp.asarray(np.log(min_prob), jnp.float32)
    (ok,) = map_chunks(lambda xb, tb: (_valid(clf, params, xb, tb, lmp),), (cf, t), batch_size,
                       shrink=True) if n else (np.zeros(0, bool),)
    repaired = np.zeros(n, bool)
    bad = np.flatnonzero(~ok)
    if len(bad) and repair_steps > 0:
        consts = (mut, jnp.zeros((), jnp.float32), lmp, jnp.ones(1, jnp.float32),
                  jnp.asarray(step_size, jnp.float32))
        v, found = map_chunks(lambda *a: _fix(clf, int(repair_steps), params, *a, *consts),
                              (x[bad], prop[bad], t[bad], np.zeros((len(bad), d), bool), lo[bad], hi[bad]),
                              batch_size, shrink=True)
        cf[bad[found]] = v[found]
        ok[bad[found]] = True
        repaired[bad[found]] = True
    changed = cf != x
    first = np.where(changed.any(1), np.argmax(np.abs(cf - x), 1), -1)
    return Decoded(cf, changed, first, ok.astype(bool), repaired)


class Actionable(NamedTuple):
    """``num`` counterfactuals per input (numpy): ``counterfactuals`` ``(n, num, d)``, ``valid`` and
    ``repaired`` ``(n, num)`` bool, ``first`` ``(n, num)`` int (see :class:`Decoded`)."""

    counterfactuals: np.ndarray
    valid: np.ndarray
    repaired: np.ndarray
    first: np.ndarray


def actionable(model, propose, x, targets, cons: Constraints, decoding: Decoding, *,
               input_shape, num: int = 1, latent: int = 0, key: jax.Array | None = None, domain=None,
               batch_size: int = 128) -> Actionable:
    """``num`` actionable counterfactuals of each input.

    Args:
      model: the classifier (anything :func:`jcausal.wrap` takes; wrapped and bound once here);
        propose: ``noise -> (n, d)`` proposals (``noise``: ``None`` or
        ``(n, latent)`` latent noise; e.g. the GAN's :func:`~jcausal.tracer.generate`).
      x: ``(n, d)``; targets: ``(n,)``; cons, decoding: :class:`Constraints`, :class:`Decoding`.
      domain: the data's ``(low, high)`` ``(d,)``, bounding sparse changes (dense decoding keeps the
        GAN's output: only the user's constraints apply, so the paper's decoding is unchanged).
      num: counterfactuals per input. Sparse decoding: the ``r``-th may not use the first feature of
        any earlier one (different actions; deterministic). Dense decoding: the ``r``-th decodes the
        GAN with latent noise of std ``decoding.noise`` drawn from ``key`` (required for ``num > 1``).
    """
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    n, d = x.shape
    bound = _bound(model, input_shape)  # once, for every round below
    if not decoding.sparse and num > 1 and key is None:
        raise ValueError("num > 1 with dense decoding draws latent noise: pass key=")
    out = np.zeros((n, num, d), np.float32)
    valid, repaired = np.zeros((n, num), bool), np.zeros((n, num), bool)
    first = np.full((n, num), -1, int)
    banned = np.zeros((n, d), bool)
    prop = propose(None)
    kw = dict(input_shape=input_shape, min_prob=decoding.min_prob, repair_steps=decoding.repair_steps,
              step_size=decoding.step_size, batch_size=batch_size)
    for r in range(num):
        if decoding.sparse:
            dec = sparse_decode(bound, x, prop, targets, cons, banned=banned, decoding=decoding,
                                domain=domain, input_shape=input_shape, batch_size=batch_size)
            has = dec.first >= 0
            banned[np.flatnonzero(has), dec.first[has]] = True
        else:
            noise = None if r == 0 else decoding.noise * np.asarray(
                jax.random.normal(jax.random.fold_in(key, r), (n, latent)), np.float32)
            dec = dense_decode(bound, x, prop if r == 0 else propose(noise), targets, cons, **kw)
        out[:, r], valid[:, r], repaired[:, r], first[:, r] = dec.counterfactuals, dec.valid, dec.repaired, \
            dec.first
    return Actionable(out, valid, repaired, first)
