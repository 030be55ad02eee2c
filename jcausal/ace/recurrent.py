"""Causal attributions for recurrent networks (ACE paper section 4.5, appendix A.4.2 Algorithm 2,
Proposition 3 and appendix A.3.4).

- Without output-to-input feedback (sequence classifiers) the unrolled network is a feedforward
  function of the flattened ``(T, F)`` input: :func:`unrolled_expectation` reuses Phase I on it.
- With feedback (one-step predictors whose output is the next input) an intervention changes the
  distribution of later inputs: :func:`feedback_expectation` intervenes on every training sequence,
  rolls the model forward with ``lax.scan`` feeding outputs back, recomputes the input moments
  from the rollouts and applies eqn 4 at their mean (Algorithm 2).
- :func:`lag_tau` estimates how far back an output depends on its inputs (Proposition 3).

Sequences are ``(n, T, F)`` arrays (``(n, T)`` means ``F = 1``) with an optional ``lengths``
``(n,)``: entries at ``t >= lengths[j]`` are padding and are never read as data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.batching import pad_points
from jcausal._src.calling import trace_model
from jcausal._src.checks import require_int
from jcausal._src.xla import jit
from jcausal.ace.interventional import interventional_expectation, taylor_expectation
from jcausal.ace.stats import InputStats, input_stats

__all__ = [
    "FeedbackBatches",
    "FeedbackResult",
    "LagTau",
    "sequence_stats",
    "unrolled_expectation",
    "feedback_expectation",
    "lag_tau",
]


def _as_3d(X) -> jax.Array:
    X = jnp.asarray(X)
    if X.ndim == 2:
        X = X[..., None]
    if X.ndim != 3:
        raise ValueError(f"sequences must be (n, T) or (n, T, F), got shape {X.shape}")
    return X


def _usable(X, lengths, need: int, what: str) -> np.ndarray:
    """Indices of sequences with at least ``need`` real steps."""
    n, T, _ = X.shape
    if need > T:
        raise ValueError(f"{what} needs {need} steps but the sequences hold only T = {T}")
    if lengths is None:
        return np.arange(n)
    lengths = np.asarray(lengths)
    if lengths.shape != (n,):
        raise ValueError(f"lengths must have shape ({n},), got {lengths.shape}")
    keep = np.flatnonzero(lengths >= need)
    if keep.size < 2:
        raise ValueError(f"{what}: only {keep.size} sequences have >= {need} steps (need >= 2)")
    return keep


def sequence_stats(X, lengths=None, *, horizon: int | None = None, low=None, high=None) -> InputStats:
    """:func:`jcausal.ace.input_stats` of the first ``horizon`` steps, flattened to
    ``(horizon * F,)`` (index ``t * F + i``), over the sequences that are at least that long."""
    X = _as_3d(X)
    horizon = X.shape[1] if horizon is None else int(horizon)
    keep = _usable(X, lengths, horizon, "sequence_stats")
    return input_stats(X[keep, :horizon].reshape(keep.size, -1), low=low, high=high)


@lru_cache(maxsize=128)
def _flat(f: Callable, horizon: int, F: int, has_params: bool) -> Callable:
    """A stable (cached) flattened view of a sequence model, so jit caches stay warm."""
    if has_params:
        return lambda p, z: f(p, z.reshape(horizon, F))
    return lambda z: f(z.reshape(horizon, F))


def _positions(positions, horizon: int, F: int) -> list[int]:
    out = []
    for t, i in positions:
        if not 0 <= t < horizon:
            raise ValueError(f"time step {t} outside the horizon [0, {horizon})")
        if not 0 <= i < F:
            raise ValueError(f"feature index {i} out of range for {F} features")
        out.append(int(t) * F + int(i))
    return out


def unrolled_expectation(
    f_seq: Callable,
    X,
    alphas,
    *,
    positions,
    params: Any = None,
    lengths=None,
    horizon: int | None = None,
    stats: InputStats | None = None,
    **phase1,
):
    """``E[y | do(x_i^t = a)]`` for a recurrent model WITHOUT output-to-input feedback, by Phase I
    on the unrolled network (ACE paper section 4.5).

    Args:
      f_seq: ``f_seq(params, x)`` (or ``f_seq(x)``) on ONE sequence ``(horizon, F)`` -> ``(m,)``.
      X: ``(n, T, F)`` training sequences; ``lengths`` ``(n,)`` optional.
      alphas: ``(A,)`` or ``(P, A)``.
      positions: ``[(t, i), ...]`` the ``P`` (time step, feature) pairs intervened on.
      horizon: steps fed to the model (default ``T``); moments use the sequences at least this long.
      stats: precomputed :func:`sequence_stats`.
      **phase1: passed to :func:`jcausal.ace.interventional_expectation`.

    Returns:
      ``(P, A, m)``, identical to Phase I on the flattened input.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from jcausal.ace.recurrent import unrolled_expectation
      >>> X = np.random.default_rng(0).normal(size=(64, 4, 1)).astype(np.float32)   # (n, T, F)
      >>> f = lambda x: jnp.sum(x, axis=0)                  # one sequence (T, 1) -> (1,)
      >>> E = unrolled_expectation(f, X, [0.0, 1.0], positions=[(0, 0)], data=X.reshape(64, -1))
      >>> E.shape                                           # (positions, alphas, outputs)
      (1, 2, 1)
      >>> bool(np.allclose(E[0, 1] - E[0, 0], 1.0, atol=1e-5))   # linear model: slope 1
      True
    """
    X = _as_3d(X)
    horizon = X.shape[1] if horizon is None else int(horizon)
    F = X.shape[2]
    feats = _positions(positions, horizon, F)
    if stats is None:
        stats = sequence_stats(X, lengths, horizon=horizon)
    f = _flat(f_seq, horizon, F, params is not None)
    return interventional_expectation(f, stats, alphas, params=params, features=feats, **phase1)


class FeedbackResult(NamedTuple):
    """Algorithm 2 output.

    Fields:
      expectations: ``(A, m)`` ``E[y^t | do(x_i^{t_hat} = a)]``.
      mean: ``(A, horizon * F)`` interventional mean of the (rolled-out) inputs.
      cov: ``(A, horizon * F, horizon * F)`` their interventional covariance.
      used: number of training sequences rolled out.
    """

    expectations: jax.Array
    mean: jax.Array
    cov: jax.Array
    used: int


def _teacher_forced(step, params, carry, xs):
    return jax.lax.scan(lambda c, x: step(params, c, x), carry, xs)


@dataclasses.dataclass(frozen=True)
class FeedbackBatches:
    """How much :func:`feedback_expectation` runs at once (memory, not results); validated when
    built.

    Fields:
      alphas: intervention values processed at once.
      sequences: sequences rolled out at once (the moments are accumulated chunk by chunk, so
        memory does not grow with ``n``).
      directions: directions in flight per point (``None``: all; see Phase I).
    """

    alphas: int = 8
    sequences: int = 1024
    directions: int | None = None

    def __post_init__(self):
        require_int(self.alphas, "alphas")
        require_int(self.sequences, "sequences")
        require_int(self.directions, "directions", none_ok=True)


def feedback_expectation(
    step: Callable,
    init_carry,
    X,
    alphas,
    *,
    t_hat: int,
    feature: int,
    params: Any = None,
    lengths=None,
    horizon: int | None = None,
    output_time: int | None = None,
    batches: FeedbackBatches | None = None,
) -> FeedbackResult:
    """Algorithm 2 of the ACE paper: interventional expectations through output-to-input feedback.

    For each ``a``: every training sequence (long enough) keeps its data up to ``t_hat``, gets
    ``x_feature^{t_hat} = a``, and is rolled forward to ``horizon`` with the model's outputs fed back
    as the next inputs. The mean and covariance of the resulting input sequences give eqn 4 at the
    mean, ``y^t`` taken as the teacher-forced output at ``output_time`` (directional method).

    Args:
      step: ``step(params, carry, x_t (F,)) -> (carry, y_t (F,))``, ``y_t`` predicting ``x_{t+1}``
        (e.g. ``OneStepPredictor.step`` wrapped as a pure function).
      init_carry: the initial recurrent state (pytree).
      X: ``(n, T, F)`` training sequences; ``lengths`` ``(n,)`` optional.
      alphas: ``(A,)`` intervention values.
      t_hat, feature: where to intervene.
      horizon: length of the rollouts (default ``T``); ``output_time``: which output ``y^t``
        (default ``horizon - 1``).
      batches: :class:`FeedbackBatches`, how much runs at once (default ``FeedbackBatches()``).

    Raises:
      ValueError: ``t_hat``/``feature``/``output_time`` out of range, too few long-enough sequences.
      FloatingPointError: a rollout diverged (names the alphas).

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from jcausal.ace.recurrent import feedback_expectation
      >>> X = np.random.default_rng(0).normal(size=(32, 4, 1)).astype(np.float32)
      >>> step = lambda w, carry, x: (carry, w * x)          # predicts x_{t+1} = w x_t
      >>> R = feedback_expectation(step, jnp.zeros(()), X, [0.0, 2.0], t_hat=1, feature=0,
      ...                          params=jnp.float32(0.5))
      >>> np.asarray(R.expectations[:, 0], float).round(3).tolist()        # y^3 = w^3 x^1 once x^1 = a
      [0.0, 0.25]
    """
    X = _as_3d(X)
    n, T, F = X.shape
    horizon = T if horizon is None else int(horizon)
    t_out = horizon - 1 if output_time is None else int(output_time)
    if not 0 <= t_hat < horizon:
        raise ValueError(f"t_hat = {t_hat} is beyond the horizon [0, {horizon})")
    if not 0 <= feature < F:
        raise ValueError(f"feature index {feature} out of range for {F} features")
    if not 0 <= t_out < horizon:
        raise ValueError(f"output_time = {t_out} outside [0, {horizon})")
    keep = _usable(X, lengths, t_hat + 1, f"t_hat = {t_hat}")
    data = X[keep, : t_hat + 1]
    batches = FeedbackBatches() if batches is None else batches
    batch_size, direction_batch_size = int(batches.alphas), batches.directions
    # fixed chunk shapes: the last chunk padded (with the first sequence), masked out of the moments
    data, sbs = pad_points(data, keep.size, int(batches.sequences))
    data = jnp.asarray(data)
    mask = jnp.arange(data.shape[0]) < keep.size
    alphas = jnp.asarray(alphas, X.dtype).reshape(-1)
    # traced now: the arrays step reads enter the compiled program as arguments (never stale)
    step, consts = trace_model(step, params, init_carry, jax.ShapeDtypeStruct((F,), X.dtype), has_params=True)
    mean, cov, expect = _feedback(step, (params, (consts,)), init_carry, data.reshape(-1, sbs, t_hat + 1, F),
                                  mask.reshape(-1, sbs), alphas, feature, horizon, t_out, batch_size,
                                  direction_batch_size)
    bad = ~np.all(np.isfinite(np.asarray(mean)), axis=1)
    if bad.any():
        raise FloatingPointError(
            f"the rollout diverged (non-finite inputs) for alphas {np.asarray(alphas)[bad].tolist()}")
    return FeedbackResult(expect, mean, cov, int(keep.size))


@partial(jit, static_argnames=("step", "feature", "horizon", "t_out", "batch_size", "dbs"))
def _feedback(step, params, init_carry, chunks, mask, alphas, feature, horizon, t_out, batch_size, dbs):
    _, _, t1, F = chunks.shape
    n = jnp.sum(mask).astype(chunks.dtype)

    def rollout(xs, a):
        xs = xs.at[t1 - 1, feature].set(a)
        carry, ys = _teacher_forced(step, params, init_carry, xs)

        def free(c, _):
            carry, x = c
            carry, y = step(params, carry, x)
            return (carry, y), x

        (_, _), rolled = jax.lax.scan(free, (carry, ys[-1]), None, length=horizon - t1)
        return jnp.concatenate([xs, rolled], axis=0)  # (horizon, F)

    def f_out(p, z):
        _, ys = _teacher_forced(step, p, init_carry, z.reshape(horizon, F)[: t_out + 1])
        return ys[-1]

    def per_alpha(a):
        pivot = rollout(chunks[0, 0], a).reshape(-1)  # shift for a stable one-pass covariance

        def accumulate(acc, chunk):
            xs, m = chunk
            r = (jax.vmap(rollout, in_axes=(0, None))(xs, a).reshape(xs.shape[0], -1) - pivot[None, :])
            r = r * m[:, None].astype(r.dtype)
            return (acc[0] + jnp.sum(r, axis=0), acc[1] + r.T @ r), None

        D = pivot.shape[0]
        zero = (jnp.zeros((D,), chunks.dtype), jnp.zeros((D, D), chunks.dtype))
        (s1, s2), _ = jax.lax.scan(accumulate, zero, (chunks, mask))
        shift = s1 / n
        mu = pivot + shift
        cov = s2 / n - jnp.outer(shift, shift)
        w, U = jnp.linalg.eigh(0.5 * (cov + cov.T))
        V = U * jnp.sqrt(jnp.clip(w, 0.0))[None, :]
        return mu, cov, taylor_expectation(f_out, mu, V, params=params, direction_batch_size=dbs)

    return jax.lax.map(per_alpha, alphas, batch_size=min(batch_size, alphas.shape[0]))


class LagTau(NamedTuple):
    """Proposition 3: ``tau`` = mean over sequences of the largest lag ``k`` with
    ``|det(d y^t / d x^{t-k})| > tol``.

    Fields:
      tau: ``()`` the mean lag.
      per_sequence: ``(n_used,)`` int32 lag of each sequence.
      dets: ``(n_used, t + 1)`` the determinant magnitude at every lag ``k = 0..t``.
    """

    tau: jax.Array
    per_sequence: jax.Array
    dets: jax.Array


def lag_tau(f_out: Callable, X, *, t: int, params: Any = None, lengths=None, tol: float = 1e-6) -> LagTau:
    """How far back output ``y^t`` depends on the inputs (ACE paper Proposition 3, appendix A.3.4).

    One reverse pass per sequence gives ``d y^t / d x`` for every lag at once. With ``m`` outputs
    and ``F`` input features the block at lag ``k`` is ``m x F``: its ``|det|`` when square, else
    ``sqrt(det(B B^T))`` (the volume it spans).

    Args:
      f_out: ``f_out(params, x)`` (or ``f_out(x)``) on ONE sequence ``(t + 1, F)`` -> ``y^t`` ``(m,)``.
      X: ``(n, T, F)`` sequences (those with ``lengths > t`` are used).
      t: the output time step.
      tol: the determinant threshold.

    Examples:
      >>> import numpy as np
      >>> from jcausal.ace.recurrent import lag_tau
      >>> X = np.random.default_rng(0).normal(size=(8, 5, 1)).astype(np.float32)
      >>> float(lag_tau(lambda x: x[-1] + 0.5 * x[-2], X, t=3).tau)   # y^t depends on x^t and x^{t-1}
      1.0
    """
    X = _as_3d(X)
    keep = _usable(X, lengths, t + 1, f"lag_tau at t = {t}")
    xs = X[keep, : t + 1]
    f_out, consts = trace_model(f_out, params, jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype))
    dets = _lag_dets(f_out, (params, (consts,)), xs, True)
    above = np.asarray(dets) > tol
    lags = np.arange(t + 1)
    per = np.where(above.any(axis=1), np.max(np.where(above, lags[None, :], -1), axis=1), 0)
    return LagTau(jnp.asarray(per.mean()), jnp.asarray(per, jnp.int32), dets)


@partial(jit, static_argnames=("f_out", "has_params"))
def _lag_dets(f_out, params, xs, has_params):
    def one(x):
        g = (lambda z: jnp.atleast_1d(f_out(params, z))) if has_params else (
            lambda z: jnp.atleast_1d(f_out(z)))
        J = jax.jacrev(g)(x)  # (m, t+1, F)
        blocks = jnp.moveaxis(J, 1, 0)[::-1]  # lag k = 0..t: d y^t / d x^{t-k}, each (m, F)
        m, F = blocks.shape[1:]
        if m == F:
            return jnp.abs(jnp.linalg.det(blocks))
        gram = blocks @ jnp.swapaxes(blocks, 1, 2)
        return jnp.sqrt(jnp.abs(jnp.linalg.det(gram)))

    return jax.vmap(one)(xs)
