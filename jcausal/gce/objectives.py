"""Sample estimates of the causal influence of latent factors on a classifier's output.

O'Shaughnessy et al. 2020 (GCE), section 3.2 and appendices A and D. The latent vector
``z = [alpha; beta]`` has the ``K`` causal factors first and the ``L`` noncausal ones after; every
factor is drawn from the prior ``N(0, 1)``. A generative map ``decode`` takes ONE latent vector to
ONE classifier input, ``classify`` returns that input's class probabilities ``p(y | x)``.

All estimators draw one grid of latents (``n_outer`` draws of the factors whose influence is
measured times ``n_inner`` draws of the others), decode and classify the whole grid as one
``vmap``-ed batch and reduce it with entropies. They are pure functions of the key and the
parameters: jit-able (sizes are Python ints) and differentiable in the generator's parameters.
Logs are taken of ``max(p, tiny)``, so gradients stay finite where a probability is exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.calling import trace_model, unwrap_model
from jcausal._src.xla import jit

__all__ = [
    "SAMPLERS",
    "VARIANTS",
    "information_flow",
    "mutual_information",
    "factor_flows",
    "check_models",
    "entropy",
]

VARIANTS = ("joint", "independent", "joint_conditional", "independent_conditional")
SAMPLERS = ("sobol", "stratified", "mc")
"""Latent samplers of the estimators: ``"sobol"`` (the default; randomized quasi-Monte Carlo: the
causal draws a Latin hypercube in increasing order of the first coordinate, and the noncausal
draws of all of them ONE scrambled Sobol sequence cut into consecutive blocks, so that the
blocks of neighbouring causal draws together form a finer net), ``"stratified"`` (a Latin
hypercube in every sample set: one draw per equal-probability stratum of ``N(0, 1)`` in each
coordinate, strata paired at random across coordinates, and fresh noncausal draws for every causal
draw) and ``"mc"`` (plain Monte Carlo, the paper's Algorithm 2). See ``docs/gce_estimator.rst``."""

SOBOL_BITS = 30
"""Bits of the Sobol points (scipy's direction numbers, Joe and Kuo 2008): at most ``2**30``
points per sequence."""


def check_sampler(sampler: str, n_outer: int, n_inner: int, *, inner_dims: int = 1,
                  names=("n_alpha", "n_beta")) -> None:
    """Refuse an unknown sampler, or sizes too small for it: stratifying needs at least 2 draws
    (of the measured factors, and of the others when there are any)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler = {sampler!r}: choose one of {SAMPLERS} ('sobol': randomized "
                         "quasi-Monte Carlo, the default; 'stratified': Latin hypercube draws; 'mc': plain "
                         "Monte Carlo, the paper's Algorithm 2)")
    if n_outer * n_inner > 2 ** SOBOL_BITS and sampler == "sobol":
        raise ValueError(f"sampler='sobol' draws at most 2**{SOBOL_BITS} points per sequence, got "
                         f"{names[0]} * {names[1]} = {n_outer * n_inner}")
    if sampler != "mc":
        small = [f"{n} = {v}" for n, v, dims in ((names[0], n_outer, 1), (names[1], n_inner, inner_dims))
                 if dims > 0 and v < 2]
        if small:
            raise ValueError(f"sampler={sampler!r} needs at least 2 draws to stratify, got "
                             f"{', '.join(small)}: raise it, or pass sampler='mc' for single draws")


def normal_draws(key: jax.Array, shape: tuple[int, ...], sampler: str = "mc") -> jax.Array:
    """``N(0, 1)`` draws of ``shape = (*batch, n, d)``: ``n`` points in ``d`` coordinates per batch
    element, plain Monte Carlo or (``"stratified"``) a Latin hypercube: in every coordinate each
    of the ``n`` equal-probability strata of ``N(0, 1)`` holds exactly one point (uniform within its
    stratum, mapped by the normal quantile), the strata paired across coordinates by independent
    random permutations. Every point is marginally ``N(0, I_d)``, so any average over the points
    keeps plain Monte Carlo's expectation; for ``d = 1`` it is exact stratification."""
    if sampler == "mc":
        return jax.random.normal(key, shape)
    *batch, n, d = shape
    k_perm, k_u = jax.random.split(key)
    # a random permutation of the strata 0..n-1 in every (batch, coordinate): argsort of uniforms
    jitter = jax.random.uniform(k_u, shape)
    strata = jnp.argsort(jax.random.uniform(k_perm, shape), axis=-2).astype(jitter.dtype)
    eps = float(jnp.finfo(jitter.dtype).eps)
    return jax.scipy.special.ndtri(jnp.clip((strata + jitter) / n, eps, 1.0 - eps))


@lru_cache(maxsize=64)
def _sobol_directions(d: int, bits: int) -> np.ndarray:
    """``(d, bits)`` uint32 direction numbers of the unscrambled ``d``-dimensional Sobol sequence
    (scipy's, ``SOBOL_BITS`` bits): point ``i < 2**bits`` is the XOR of ``V[:, k]`` over the set
    bits ``k`` of ``i``, so ``V[:, k]`` is point ``2**k``."""
    from scipy.stats import qmc

    pts = qmc.Sobol(d, scramble=False, bits=SOBOL_BITS).random_base2(bits)
    return np.round(pts[2 ** np.arange(bits)].T * 2.0 ** SOBOL_BITS).astype(np.uint32)


def sobol_draws(key: jax.Array, n: int, d: int, dtype=jnp.float32) -> jax.Array:
    """``(n, d)`` ``N(0, 1)`` draws: the first ``n`` points of the ``d``-dimensional Sobol sequence,
    scrambled (a random linear matrix scramble and a random digital shift, Matousek 1998; every
    point marginally uniform on ``[0, 1)^d``, the net structure kept), jittered uniformly within
    the float's resolution and mapped by the normal quantile.

    Every aligned block of ``2**m`` consecutive points has exactly one point in each interval
    ``[k / 2**m, (k + 1) / 2**m)`` of every coordinate, and larger aligned blocks are finer nets.
    Generated on the device from ``d * log2(n)`` direction numbers (no ``(n, d)`` constant), as one
    compiled program per ``(n, d, dtype)`` (inlined under ``jit``)."""
    if d == 0:
        return jnp.zeros((n, 0), dtype)
    return _sobol_program(key, int(n), int(d), jnp.dtype(dtype))


@partial(jit, static_argnums=(1, 2, 3))
def _sobol_program(key, n: int, d: int, dtype):
    B = SOBOL_BITS
    nb = max(1, (n - 1).bit_length())  # index bits of the points 0 .. n - 1
    V = jnp.asarray(_sobol_directions(d, nb))  # (d, nb)
    k_m, k_s, k_j = jax.random.split(key, 3)
    idx = jnp.arange(n, dtype=jnp.uint32)
    bit = (idx[:, None] >> jnp.arange(nb, dtype=jnp.uint32)[None, :]) & 1  # (n, nb): bits of the index
    x = jax.lax.reduce(jnp.where(bit[:, None, :] == 1, V[None], jnp.uint32(0)), jnp.uint32(0),
                       jax.lax.bitwise_xor, (2,))  # (n, d)
    # random lower-triangular binary matrix (most significant bit first, unit diagonal): output
    # bit r is the parity of the input bits at r and above, chosen at random
    r = np.arange(B)
    above = np.asarray([((1 << B) - 1) ^ ((1 << (B - i)) - 1) for i in r], np.uint32)
    own = np.asarray([1 << (B - 1 - i) for i in r], np.uint32)
    rows = (jax.random.bits(k_m, (d, B), jnp.uint32) & above[None]) | own[None]  # (d, B)
    parity = jax.lax.population_count(rows[None] & x[:, :, None]) & 1  # (n, d, B)
    y = jnp.sum(parity << jnp.asarray(B - 1 - r, jnp.uint32)[None, None, :], axis=-1,
                dtype=jnp.uint32)  # disjoint bits: the sum is their OR
    y = y ^ (jax.random.bits(k_s, (1, d), jnp.uint32) & jnp.uint32((1 << B) - 1))
    mant = int(jnp.finfo(dtype).nmant) + 1
    top = y >> (B - mant) if mant < B else y
    u = (top.astype(dtype) + jax.random.uniform(k_j, (n, d), dtype)) / float(2 ** min(mant, B))
    eps = float(jnp.finfo(dtype).eps)
    return jax.scipy.special.ndtri(jnp.clip(u, eps, 1.0 - eps))


def entropy(p: jax.Array, axis: int = -1) -> jax.Array:
    """Shannon entropy in nats, ``-sum p log p`` over ``axis``, with ``0 log 0 = 0`` and finite
    gradients (the log is taken of ``max(p, tiny)``)."""
    tiny = jnp.finfo(p.dtype).tiny
    return -jnp.sum(p * jnp.log(jnp.maximum(p, tiny)), axis=axis)


def caller(f: Callable, params: Any, noisy: bool = False) -> Callable:
    """``f(x)`` / ``f(params, x)``, optionally with ``key=`` (the decoder's noise)."""
    if noisy:
        return (lambda x, k: f(x, key=k)) if params is None else (lambda x, k: f(params, x, key=k))
    return (lambda x: f(x)) if params is None else (lambda x: f(params, x))


def split_params(params) -> tuple[Any, Any]:
    """``(decode_params, classify_params)`` from the pair ``params`` (or ``(None, None)``)."""
    if params is None:
        return None, None
    if not (isinstance(params, (tuple, list)) and len(params) == 2):
        raise ValueError(
            "params must be a pair (decode_params, classify_params) (either may be None), got "
            f"{type(params).__name__}")
    return params[0], params[1]


def unwrap_models(decode: Callable, classify: Callable, params):
    """``(decode, classify, (decode_params, classify_params))``: a :func:`jcausal.wrap` model gives
    its pure ``apply`` and its parameters (a wrapped classifier whose output is logits comes with
    its softmax: GCE needs class probabilities); plain callables and ``params`` pass unchanged."""
    gp, cp = split_params(params)
    decode, gp = unwrap_model(decode, gp, split=False)
    classify, cp = unwrap_model(classify, cp, split=False, probabilities=True)
    return decode, classify, (gp, cp)


def bind_models(decode: Callable, classify: Callable, params, *, dim: int | None = None, example=None,
                encode: Callable | None = None, noisy: bool = False):
    """Trace the models once, at this call: ``(encode, decode, classify, params)`` to pass to jitted
    code in their place, with ``params`` the pair ``((gen_params, consts), (clf_params, consts))``.

    Whatever the models read (closed-over arrays, module variables) enters the compiled programs
    as arguments, so a model changed between two calls is never evaluated in its old state.
    ``decode`` is traced on a latent ``(dim,)`` or, with ``encode``, on the latent mean that
    ``encode`` gives for ``example`` (ONE input).
    """
    decode, classify, (gp, cp) = unwrap_models(decode, classify, params)
    slots = []
    if encode is not None:
        enc, ce = trace_model(encode, gp, example)
        z = jax.eval_shape(lambda P, x: enc(P, x), (gp, (ce,)), example)[0]
        slots.append(ce)
    else:
        enc, z = None, jax.ShapeDtypeStruct((dim,), jnp.float32)
    kw = {"key": jax.random.key(0)} if noisy else {}
    dec, cd = trace_model(decode, gp, z, has_params=gp is not None, slot=len(slots), **kw)
    slots.append(cd)
    x = jax.eval_shape(lambda P, zz, kw: dec(P, zz, **kw), (gp, tuple(slots)), z, kw)
    clf, cc = trace_model(classify, cp, x, has_params=cp is not None)
    return enc, dec, clf, ((gp, tuple(slots)), (cp, (cc,)))


def _is_traced(*trees) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(trees))


def check_sizes(K: int, L: int, n_outer: int, n_inner: int, names=("n_alpha", "n_beta")) -> None:
    """Refuse factor counts and sample sizes that are not positive Python ints (they fix shapes)."""
    for name, v in (("K", K), ("L", L), (names[0], n_outer), (names[1], n_inner)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise ValueError(f"{name} must be a Python int (it fixes array shapes), got {v!r}")
    if K < 1:
        raise ValueError(f"K = {K}: the number of causal factors must be at least 1")
    if L < 0:
        raise ValueError(f"L = {L}: the number of noncausal factors must be at least 0")
    if n_outer < 1:
        raise ValueError(f"{names[0]} = {n_outer}: need at least one sample")
    if n_inner < 1:
        raise ValueError(f"{names[1]} = {n_inner}: need at least one sample")


def check_models(decode: Callable, classify: Callable, dim: int, *, params=None, noisy: bool = False,
                 atol: float = 1e-3) -> int:
    """Probe ``decode`` and ``classify`` once at ``z = 0`` (outside ``jit``) and return the number
    of classes ``M``.

    Raises:
      ValueError: the classifier rejects the decoder's output (naming its shape), or its output
        is not a probability vector: not 1-d, NaN/inf, negative, or not summing to 1 within
        ``atol`` (the sum is named).
    """
    dparams, cparams = split_params(params)
    dec = caller(decode, dparams, noisy)
    clf = caller(classify, cparams)
    z = jnp.zeros((dim,), jnp.float32)
    x = dec(z, jax.random.key(0)) if noisy else dec(z)
    try:
        p = clf(x)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"classify rejected the decoder's output of shape {tuple(jnp.shape(x))}: {err}") from err
    p = np.asarray(p, np.float64)
    if p.ndim != 1 or p.size < 2:
        raise ValueError(f"classify must return a vector of >= 2 class probabilities for ONE input, "
                         f"got shape {p.shape} for an input of shape {tuple(jnp.shape(x))}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"classify returned non-finite class probabilities {p.tolist()} at the probe "
                         "latent z = 0")
    if np.any(p < -atol):
        raise ValueError(f"classify returned negative class probabilities {p.tolist()}: pass "
                         "probabilities (e.g. jax.nn.softmax of the logits), not logits")
    if abs(p.sum() - 1.0) > atol:
        raise ValueError(f"class probabilities sum to {p.sum():.6g}, not 1, at the probe latent z = 0: "
                         "pass probabilities (e.g. jax.nn.softmax of the logits), not logits")
    return int(p.size)


def grid_latents(key: jax.Array, dim: int, outer_mask, n_outer: int, n_inner: int, sampler: str = "mc",
                 per_outer: bool = True) -> jax.Array:
    """``(n_outer, n_inner, dim)`` latents ``z_ij``: the coordinates in ``outer_mask`` from outer
    draw ``i``, the others from inner draw ``j`` (all ``N(0, I)``).

    With ``per_outer`` every outer draw gets its own inner draws, as in Algorithm 2 (the ``beta``
    loop inside the ``alpha`` loop); without it (the conditional estimators, which average over
    outer draws at a fixed inner draw) one inner set is shared. ``"mc"`` draws plain ``N(0, I)``
    points, ``"stratified"`` a Latin hypercube (:func:`normal_draws`) of the outer coordinates and
    of each inner set (independent across outer draws). ``"sobol"`` draws the outer coordinates as
    ``"stratified"`` does, sorted by the first one, and the inner sets as consecutive blocks of ONE
    scrambled Sobol sequence (:func:`sobol_draws`): each block is a low-discrepancy set, and the
    blocks of neighbouring outer draws (whose integrands are alike) together form a finer one.
    Every point stays marginally ``N(0, I)``.
    """
    mask = tuple(bool(m) for m in np.asarray(outer_mask, bool).reshape(-1))
    return _grid_latents(key, int(dim), mask, int(n_outer), int(n_inner), sampler, bool(per_outer))


@partial(jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _grid_latents(key, dim, mask, n_outer, n_inner, sampler, per_outer):
    """:func:`grid_latents` as ONE compiled program per setting (called outside ``jit`` it would
    dispatch and compile dozens of small operations; inside ``jit`` it is inlined)."""
    mask = np.asarray(mask, bool)
    k_out, k_in = jax.random.split(key)
    outer = normal_draws(k_out, (n_outer, int(mask.sum())), "mc" if sampler == "mc" else "stratified")
    d_in = int((~mask).sum())
    if sampler == "sobol":
        if outer.shape[1]:
            outer = outer[jnp.argsort(outer[:, 0])]
        inner = sobol_draws(k_in, (n_outer if per_outer else 1) * n_inner, d_in, outer.dtype)
        inner = inner.reshape(((n_outer,) if per_outer else ()) + (n_inner, d_in))
    else:
        inner = normal_draws(k_in, ((n_outer,) if per_outer else ()) + (n_inner, d_in), sampler)
    z_out = jnp.zeros((n_outer, dim), outer.dtype).at[:, mask].set(outer)
    z_in = jnp.zeros(inner.shape[:-1] + (dim,), inner.dtype).at[..., ~mask].set(inner)
    z_in = z_in if per_outer else z_in[None]
    z = jnp.where(jnp.asarray(mask)[None, None, :], z_out[:, None, :], z_in)
    return jnp.broadcast_to(z, (n_outer, n_inner, dim))


def _grid_probs(decode, classify, key, dim: int, outer_mask: np.ndarray, n_outer: int, n_inner: int,
                dparams, cparams, noisy: bool, chunk: int | None = None, sampler: str = "mc",
                per_outer: bool = True, order: jax.Array | None = None) -> jax.Array:
    """``P[i, j] = p(y | decode(z_ij))``, ``(n_outer, n_inner, M)`` (latents: :func:`grid_latents`,
    their coordinates reordered as ``z[..., order]`` when ``order`` is given)."""
    k_grid, k_noise = jax.random.split(key)
    z = grid_latents(k_grid, dim, outer_mask, n_outer, n_inner, sampler, per_outer)
    z = (z if order is None else z[..., order]).reshape(-1, dim)
    dec = caller(decode, dparams, noisy)
    clf = caller(classify, cparams)
    n = n_outer * n_inner
    keys = jax.random.split(k_noise, n)
    run = jax.vmap(lambda zz, kk: clf(dec(zz, kk))) if noisy else jax.vmap(lambda zz, kk: clf(dec(zz)))
    size = n if chunk is None else max(1, min(int(chunk), n))
    # fixed-size pieces, unrolled in the trace: small batches stay in cache, and XLA:CPU runs
    # convolutions inside loops slowly
    p = jnp.concatenate([run(z[i:i + size], keys[i:i + size]) for i in range(0, n, size)], axis=0)
    return p.reshape(n_outer, n_inner, -1)


def _unconditional(P: jax.Array) -> jax.Array:
    """``I(outer; Y) = H(mean_ij P) - mean_i H(mean_j P[i])`` (Algorithm 2)."""
    p_given = jnp.mean(P, axis=1)  # p(y | outer_i), (n_outer, M)
    return entropy(jnp.mean(p_given, axis=0)) - jnp.mean(entropy(p_given))


def _conditional(P: jax.Array) -> jax.Array:
    """``I(outer; Y | inner) = mean_j [H(mean_i P[:, j]) - mean_i H(P[i, j])]``."""
    p_inner = jnp.mean(P, axis=0)  # p(y | inner_j), (n_inner, M)
    return jnp.mean(entropy(p_inner)) - jnp.mean(entropy(P))


def mutual_information(decode: Callable, classify: Callable, key: jax.Array, *, dim: int, factors,
                       n_outer: int, n_inner: int, conditional: bool = False, params=None,
                       noisy: bool = False, chunk: int | None = None,
                       sampler: str = "sobol") -> jax.Array:
    """``I(z_S; Y)`` (or ``I(z_S; Y | z_rest)``) for any set ``S`` of latent coordinates.

    The building block of every estimator here (appendix D with ``N_x = 1``): ``n_outer`` draws
    of ``z_S`` times ``n_inner`` draws of the other coordinates, one batch of
    ``n_outer * n_inner`` decodes. Unconditional:

    .. math:: \\hat I = H\\big(\\tfrac{1}{N_o N_i}\\sum_{ij} p(y|x_{ij})\\big)
              - \\tfrac{1}{N_o}\\sum_i H\\big(\\tfrac{1}{N_i}\\sum_j p(y|x_{ij})\\big)

    Conditional: the roles swap, ``mean_j H(mean_i P_ij) - mean_ij H(P_ij)``.

    Args:
      decode, classify, params, noisy: as in :func:`information_flow`.
      key: PRNG key.
      dim: ``K + L``, the latent dimension.
      factors: indices of ``S`` (Python ints).
      n_outer, n_inner: sample counts of ``z_S`` and of the rest.
      conditional: condition on the other coordinates.
      chunk: decode and classify at most this many latents per call (a Python-unrolled sequence
        of fixed-size batches; ``None``: one batch). Same result, far less cache traffic.
      sampler: one of :data:`SAMPLERS` (see :func:`grid_latents`).

    Outside ``jit`` the call raises if the models gave NaN/inf probabilities on some latents of
    the grid (the count comes from the same computation); traced calls return the estimate.

    Returns:
      Scalar estimate in nats (float dtype of the classifier output).

    Raises:
      ValueError: an unknown sampler or sizes it cannot use; (not traced) NaN/inf class
        probabilities on some latents (the message says how many of the ``n_outer * n_inner``).
    """
    factors = sorted(set(int(f) for f in factors))
    check_sampler(sampler, n_outer, n_inner, inner_dims=dim - len(factors), names=("n_outer", "n_inner"))
    decode, classify, (dp, cp) = unwrap_models(decode, classify, params)  # jcausal.wrap models
    params = None if dp is None and cp is None else (dp, cp)
    if not _is_traced(params, key):
        check_models(decode, classify, dim, params=params, noisy=noisy)
    est, bad = _mutual_information(decode, classify, key, dim=dim, factors=factors, n_outer=n_outer,
                                   n_inner=n_inner, conditional=conditional, params=params,
                                   noisy=noisy, chunk=chunk, sampler=sampler)
    if not _is_traced(params, key):
        _require_finite_grid(est, int(bad), n_outer * n_inner, "mutual_information")
    return est


def _mutual_information(decode, classify, key, *, dim, factors, n_outer, n_inner, conditional=False,
                        params=None, noisy=False, chunk=None, sampler="mc"):
    """``(estimate, bad)``: :func:`mutual_information` and the number of latents of its grid whose
    class probabilities are not all finite (an int32 scalar; unused outputs cost nothing under jit)."""
    mask = np.zeros(dim, bool)
    mask[list(factors)] = True
    dparams, cparams = split_params(params)
    P = _grid_probs(decode, classify, key, dim, mask, n_outer, n_inner, dparams, cparams, noisy, chunk,
                    sampler=sampler, per_outer=not conditional)
    bad = jnp.sum(~jnp.all(jnp.isfinite(P), axis=-1))
    return (_conditional(P) if conditional else _unconditional(P)), bad


def _require_finite_grid(est, bad: int, total: int, who: str, detail: str = "") -> None:
    """The ValueError for NaN/inf probabilities on ``bad`` of ``total`` latents (or a NaN estimate)."""
    if bad == 0 and bool(np.all(np.isfinite(np.asarray(est)))):
        return
    raise ValueError(
        f"{who}: the classifier or the decoder produced non-finite class probabilities on {bad} of "
        f"the {total} latents of the grid{detail} (the probe at z = 0 was finite), so the estimate is "
        "NaN; check the models away from z = 0 (e.g. exp overflow: return jax.nn.softmax of the "
        "logits, keep the decoder's output in the classifier's range)")


def information_flow(decode: Callable, classify: Callable, key: jax.Array, *, K: int, L: int,
                     n_alpha: int, n_beta: int, params=None, variant: str = "joint",
                     noisy: bool = False, chunk: int | None = None,
                     sampler: str = "sobol") -> jax.Array:
    """The causal influence ``C`` of the ``K`` causal factors ``alpha`` on the classifier output.

    GCE paper eqn (2) and Algorithm 2 (appendix D), with the variants of appendix A:

    - ``"joint"`` (the paper's objective): :math:`\\mathcal{C} = I(\\alpha; Y)`.
    - ``"independent"``: :math:`\\mathcal{C}_{iu} = \\frac1K \\sum_i I(\\alpha_i; Y)`.
    - ``"joint_conditional"``: :math:`\\mathcal{C}_{jc} = I(\\alpha; Y \\mid \\beta)`.
    - ``"independent_conditional"``:
      :math:`\\mathcal{C}_{ic} = \\frac1K \\sum_i I(\\alpha_i; Y \\mid \\alpha_{\\neg i}, \\beta)`.

    In the paper's DAG information flow equals mutual information (Propositions 2 and 6). The
    estimate uses ``n_alpha * n_beta`` decodes (times ``K`` for the independent variants), all in
    one ``vmap``-ed batch; it is biased upwards by ``O(1 / n_beta)`` (the plug-in entropy of
    ``p(y | alpha)``), less with the variance-reduced samplers, whose conditional means vary less.

    Samplers (:data:`SAMPLERS`): all draw alpha as a Latin hypercube (one draw per
    equal-probability stratum of ``N(0, 1)``: exact stratification for ``K = 1``, each coordinate
    stratified separately for ``K > 1``, where the gain shrinks as ``K`` grows) except ``"mc"``.
    ``"sobol"`` (default) sorts the alphas and gives them consecutive blocks of ONE scrambled
    Sobol sequence of betas, so neighbouring alphas' betas together form a finer net;
    ``"stratified"`` gives every alpha a fresh Latin hypercube of betas; ``"mc"`` is Algorithm
    2's plain Monte Carlo. Measured (``docs/gce_estimator.rst``): on linear-Gaussian maps with
    ``K <= 2``, both at 25 x 25 have a lower RMSE than plain Monte Carlo at 100 x 25; on a
    trained MNIST explainer, ``"sobol"`` at 128 x 4 has a lower error of ``C`` and no larger an
    error of its gradient than 100 x 25 plain, with a fifth of the decodes.

    Args:
      decode: ``decode(z) -> x`` for ONE latent ``z`` of shape ``(K + L,)`` (causal factors first),
        or ``decode(params[0], z)``; with ``noisy=True`` it is called with ``key=`` and draws
        ``x ~ p(x | z)``.
      classify: ``classify(x) -> (M,)`` class probabilities for ONE input, or
        ``classify(params[1], x)``, or a :func:`jcausal.wrap` model (any framework; logits are
        softmaxed, probabilities used as they are).
      key: PRNG key.
      K, L: numbers of causal (``>= 1``) and noncausal (``>= 0``) factors, Python ints.
      n_alpha, n_beta: samples of the measured factors and of the others (``>= 1``).
      params: ``None`` or a pair ``(decode_params, classify_params)`` (either may be ``None``);
        pass parameters here rather than closing over them, so they are arguments of ``jit``.
      variant: one of :data:`VARIANTS`.
      noisy: the decoder takes ``key=`` and samples.
      chunk: latents per decode/classify batch (see :func:`mutual_information`).
      sampler: ``"sobol"`` (default), ``"stratified"`` or ``"mc"`` (see above).

    Returns:
      Scalar, nats.

    Outside ``jit`` (when neither ``params`` nor ``key`` is traced) the call probes the models once
    at ``z = 0`` and refuses NaN/inf probabilities anywhere on the grid; traced calls (every
    training step) skip both and return the estimate.

    Raises:
      ValueError: ``K < 1``, ``L < 0``, ``n_alpha`` or ``n_beta < 1``, an unknown variant or
        sampler, fewer than 2 draws under a sampler other than ``"mc"`` (of alpha, or of beta
        when ``L > 0``), more than ``2**30`` latents under ``"sobol"``, (on
        the probe) a classifier that rejects the decoder's output or returns invalid probabilities,
        or (not traced) NaN/inf probabilities on some latents of the grid (the message says how
        many).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jcausal.gce import information_flow
      >>> def probit(x):  # p(Y = 1 | x) = Phi(2 x_0): only the first latent matters
      ...     p = jax.scipy.stats.norm.cdf(2.0 * x[0])
      ...     return jnp.stack([1 - p, p])
      >>> C = information_flow(lambda z: z, probit, jax.random.key(0), K=1, L=1, n_alpha=25, n_beta=10)
      >>> round(float(C), 3)  # exact (quadrature): 0.3733 nats; plain Monte Carlo here gives 0.263
      0.374
    """
    check_sizes(K, L, n_alpha, n_beta)
    check_sampler(sampler, n_alpha, n_beta,
                  inner_dims=L + (K - 1 if variant == "independent_conditional" else 0))
    decode, classify, (dp, cp) = unwrap_models(decode, classify, params)
    params = None if dp is None and cp is None else (dp, cp)  # jcausal.wrap models carry their params
    if variant not in VARIANTS:
        raise ValueError(f"variant = {variant!r}: choose one of {VARIANTS}")
    dim = K + L
    check = not _is_traced(params, key)
    if check:  # bound (what the models read enters as params) for one compiled program per setting
        check_models(decode, classify, dim, params=params, noisy=noisy)
        _, decode, classify, params = bind_models(decode, classify, params, dim=dim, noisy=noisy)
    mi = _compiled_mutual_information if check else _mutual_information  # traced: inline in the caller
    kw = dict(dim=dim, n_outer=n_alpha, n_inner=n_beta, params=params, noisy=noisy,
              conditional=variant.endswith("conditional"), chunk=chunk, sampler=sampler)
    if variant in ("joint", "joint_conditional"):
        est, bad = mi(decode, classify, key, factors=range(K), **kw)
        grids = 1
    else:
        keys = jax.random.split(key, K)
        parts = [mi(decode, classify, keys[i], factors=[i], **kw) for i in range(K)]
        est, bad, grids = sum(p[0] for p in parts) / K, sum(p[1] for p in parts), K
    if check:
        _require_finite_grid(est, int(bad), grids * n_alpha * n_beta, "information_flow",
                             f" ({grids} grids of {n_alpha} x {n_beta})" if grids > 1 else "")
    return est


def factor_flows(decode: Callable, classify: Callable, key: jax.Array, *, K: int, L: int,
                 n_outer: int = 100, n_inner: int = 100, params=None, noisy: bool = False,
                 check: bool = True, chunk: int | None = 2048, sampler: str = "sobol") -> jax.Array:
    """The information flow ``I(z_j; Y)`` from every single latent factor (GCE Figure 5a).

    Each factor is measured with :func:`mutual_information` (``n_outer`` draws of ``z_j`` times
    ``n_inner`` draws of the other ``K + L - 1`` factors); a factor the classifier ignores gives
    ``~0`` (plus the ``O(1 / n_inner)`` upward bias). Factors are computed one compiled call each,
    decoding at most ``chunk`` latents at once, so memory stays bounded (every factor of an MNIST
    explainer in one program would need tens of GB); the one program, compiled once, takes the factor as
    an argument. ``sampler``: as in :func:`information_flow`
    (``"sobol"`` and ``"stratified"`` stratify ``z_j``, one coordinate: exact stratification).

    Returns:
      ``(K + L,)`` nats, causal factors first.

    Raises:
      ValueError: bad sizes, a bad probe, or (``check``, not under tracing) NaN/inf probabilities
        on some latents of a factor's grid (the message names the factors and how many latents).
    """
    check_sizes(K, L, n_outer, n_inner, names=("n_outer", "n_inner"))
    dim = K + L
    check_sampler(sampler, n_outer, n_inner, inner_dims=dim - 1, names=("n_outer", "n_inner"))
    decode, classify, (dp, cp) = unwrap_models(decode, classify, params)
    params = None if dp is None and cp is None else (dp, cp)
    check = check and not _is_traced(params, key)
    if check:
        check_models(decode, classify, dim, params=params, noisy=noisy)
    keys = jax.random.split(key, dim)
    _, decode, classify, params = bind_models(decode, classify, params, dim=dim, noisy=noisy)
    parts = [_factor_flow_program(decode, classify, keys[j], params, jnp.int32(j), dim, n_outer, n_inner,
                                  noisy, chunk, sampler)
             for j in range(dim)]
    flows = jnp.stack([p[0] for p in parts])
    if check:
        bad = np.asarray([int(p[1]) for p in parts])
        factors = np.flatnonzero(bad).tolist()
        _require_finite_grid(flows, int(bad.sum()), dim * n_outer * n_inner, "factor_flows",
                             f" ({dim} grids of {n_outer} x {n_inner}; factors {factors[:10]})")
    return flows


def _compiled_mutual_information(decode, classify, key, *, factors, dim, n_outer, n_inner, params,
                                 noisy, conditional, chunk, sampler):
    """:func:`_mutual_information` of models bound by :func:`bind_models` (what they read enters
    as ``params``), as one compiled program per setting: outside ``jit`` the estimate would
    otherwise dispatch and compile each operation of the grid, the decoder and the classifier."""
    return _mi_program(decode, classify, key, params, dim, tuple(int(f) for f in factors), n_outer, n_inner,
                       noisy, conditional, chunk, sampler)


@partial(jit, static_argnums=(0, 1, 5, 6, 7, 8, 9, 10))
def _factor_flow_program(decode, classify, key, params, factor, dim, n_outer, n_inner, noisy, chunk, sampler):
    """``(I(z_factor; Y), bad)`` with ``factor`` a traced index: ONE compiled program serves every
    factor. Its grid is factor 0's (the same draws for every factor: one outer coordinate, ``dim - 1``
    inner ones) with the coordinates reordered, so ``z[factor]`` is the outer draw and the inner
    draws fill the other coordinates in order, exactly as :func:`grid_latents` places them for
    ``outer_mask = e_factor``."""
    mask = np.zeros(dim, bool)
    mask[0] = True
    p = jnp.arange(dim)
    order = jnp.where(p == factor, 0, jnp.where(p < factor, p + 1, p))
    dparams, cparams = split_params(params)
    P = _grid_probs(decode, classify, key, dim, mask, n_outer, n_inner, dparams, cparams, noisy, chunk,
                    sampler=sampler, per_outer=True, order=order)
    return _unconditional(P), jnp.sum(~jnp.all(jnp.isfinite(P), axis=-1))


@partial(jit, static_argnums=(0, 1, 4, 5, 6, 7, 8, 9, 10, 11))
def _mi_program(decode, classify, key, params, dim, factors, n_outer, n_inner, noisy, conditional, chunk,
                sampler):
    return _mutual_information(decode, classify, key, dim=dim, factors=list(factors), n_outer=n_outer,
                               n_inner=n_inner, params=params, noisy=noisy, conditional=conditional,
                               chunk=chunk, sampler=sampler)
