r"""Centered Kernel Alignment (CKA) between layer representations (TRACER section 3.2.2).

.. math::
    \mathrm{CKA}(X, Y) = \frac{\mathrm{HSIC}(K_X, K_Y)}
                              {\sqrt{\mathrm{HSIC}(K_X, K_X)\,\mathrm{HSIC}(K_Y, K_Y)}},
    \qquad \mathrm{HSIC}_0(K, L) = \frac{\mathrm{Tr}(K H L H)}{(n - 1)^2}

with ``H = I - 11^T/n`` (the biased estimator of Gretton et al. 2005 used by Kornblith et al. 2019
and by the paper) or the unbiased estimator of Song et al. (2012),

.. math::
    \mathrm{HSIC}_1(K, L) = \frac{1}{n(n-3)}\Big[\mathrm{Tr}(\tilde K \tilde L)
      + \frac{1^T\tilde K 1\, 1^T \tilde L 1}{(n-1)(n-2)} - \frac{2}{n-2} 1^T \tilde K \tilde L 1\Big],

``\tilde K`` = ``K`` with its diagonal set to zero. Kernels: linear ``K = X X^T`` on column-centred
features, or RBF ``K_ij = exp(-|x_i - x_j|^2 / (2 sigma^2))`` with ``sigma`` a fraction of the median
pairwise distance. Inputs of any rank ``(n, ...)`` are flattened per example to ``(n, p)``.

Degenerate inputs: when one side does not vary over the examples (``HSIC(K, K) = 0``) CKA is 0/0.
The defined value is **1 when both sides are constant** (their centred Gram matrices are both zero,
hence equal: identical up to CKA's invariances) and **0 when only one is** (HSIC = 0: no shared
variation); :func:`cka` warns when it returns such a value. The unbiased self-HSIC can be negative
for tiny ``n`` or near-constant data: it is then treated as degenerate the same way, never as NaN.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcausal._src.checks import require_finite
from jcausal._src.xla import jit

__all__ = [
    "KERNELS",
    "CKAAccumulator",
    "CKAState",
    "cka",
    "cka_from_grams",
    "cka_matrix",
    "cka_accumulator",
    "feature_space_linear_cka",
    "gram",
    "hsic",
    "linear_gram",
    "rbf_gram",
]

KERNELS = ("linear", "rbf")
_TINY = 1e-12


def _flatten(X: jax.Array) -> jax.Array:
    X = jnp.asarray(X)
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(jnp.float32)
    return X.reshape(X.shape[0], -1)


def _centre(X: jax.Array) -> jax.Array:
    """Column-centred ``(n, p)`` features; constant columns become exact zeros (the float mean of
    equal numbers need not equal them), so constant data gives exactly zero self-HSIC."""
    X = _flatten(X)
    const = jnp.max(X, axis=0) == jnp.min(X, axis=0)
    return jnp.where(const[None, :], 0.0, X - jnp.mean(X, axis=0, keepdims=True))


def linear_gram(X: jax.Array) -> jax.Array:
    """Linear kernel of column-centred features: ``(n, ...) -> (n, n)``, ``K = Xc Xc^T``.

    Centring does not change the biased HSIC (``H K H`` removes it) and keeps the unbiased estimator
    well conditioned; both estimators of the linear kernel are translation invariant."""
    Xc = _centre(X)
    return Xc @ Xc.T


def rbf_gram(X: jax.Array, sigma: float = 0.8) -> jax.Array:
    """RBF kernel ``(n, ...) -> (n, n)`` with bandwidth ``sigma * median pairwise distance``
    (Kornblith et al. 2019, section 4: 0.2-0.8 of the median; 0.8 is our default, the closest to
    linear CKA and the least sensitive to the sample). A zero median (constant data) gives ``K = 1``
    (every point the same), not NaN. Distances are translation invariant: computed on centred data."""
    X = _centre(X)
    sq = jnp.sum(X * X, axis=1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * (X @ X.T), 0.0)
    n = X.shape[0]
    off = d2[~np.eye(n, dtype=bool)] if n > 1 else d2.reshape(-1)
    med = jnp.median(off)  # median squared distance = squared median distance
    bw2 = jnp.maximum(2.0 * sigma**2 * med, _TINY)
    return jnp.where(med > 0, jnp.exp(-d2 / bw2), jnp.ones_like(d2))


def gram(X: jax.Array, kernel: str = "linear", sigma: float = 0.8) -> jax.Array:
    """The ``(n, n)`` Gram matrix of ``X`` ``(n, ...)`` for ``kernel`` in :data:`KERNELS`."""
    if kernel == "linear":
        return linear_gram(X)
    if kernel == "rbf":
        return rbf_gram(X, sigma)
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def hsic(K: jax.Array, L: jax.Array, unbiased: bool = False) -> jax.Array:
    """HSIC between two ``(n, n)`` Gram matrices: biased ``Tr(KHLH)/(n-1)^2`` or unbiased (Song et al.
    2012; needs ``n >= 4``). Returns a scalar; the unbiased value may be negative."""
    n = K.shape[0]
    if unbiased:
        Kt = K * (1.0 - jnp.eye(n, dtype=K.dtype))
        Lt = L * (1.0 - jnp.eye(n, dtype=L.dtype))
        k1, l1 = jnp.sum(Kt, axis=1), jnp.sum(Lt, axis=1)
        t = jnp.sum(Kt * Lt) + jnp.sum(k1) * jnp.sum(l1) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k1 @ l1)
        return t / (n * (n - 3))
    Kc = K - jnp.mean(K, axis=0, keepdims=True)
    Kc = Kc - jnp.mean(Kc, axis=1, keepdims=True)
    Lc = L - jnp.mean(L, axis=0, keepdims=True)
    Lc = Lc - jnp.mean(Lc, axis=1, keepdims=True)
    return jnp.sum(Kc * Lc) / (n - 1) ** 2


def _ratio(xy, xx, yy, dx=False, dy=False):
    """CKA from the three HSIC values, with the documented degenerate values (never NaN).
    A side is degenerate when flagged (``dx``/``dy``) or its self-HSIC is not positive."""
    dx, dy = (xx <= 0) | dx, (yy <= 0) | dy
    scale = jnp.sqrt(jnp.where(dx | dy, 1.0, xx * yy))
    value = jnp.where(dx | dy, 0.0, xy / jnp.where(scale > 0, scale, 1.0))
    return jnp.where(dx & dy, 1.0, value)


def _flat_kernel(K):
    """True when the centred Gram ``H K H`` is exactly zero (no variation over the examples)."""
    Kc = K - jnp.mean(K, axis=0, keepdims=True)
    return jnp.all(Kc - jnp.mean(Kc, axis=1, keepdims=True) == 0)


def cka_from_grams(K: jax.Array, L: jax.Array, unbiased: bool = False) -> jax.Array:
    """CKA of two ``(n, n)`` Gram matrices (scalar), degenerate sides as in the module docstring."""
    return _ratio(hsic(K, L, unbiased), hsic(K, K, unbiased), hsic(L, L, unbiased),
                  _flat_kernel(K), _flat_kernel(L))


def feature_space_linear_cka(X: jax.Array, Y: jax.Array, unbiased: bool = False) -> jax.Array:
    r"""Linear CKA without the ``(n, n)`` Gram matrices: ``O(n p q)`` instead of ``O(n^2 (p + q))``,
    the cheaper form when ``n`` exceeds the widths (Kornblith et al. 2019, section 3):

    .. math::
        \mathrm{HSIC}_0 \propto \lVert Y_c^T X_c \rVert_F^2,

    and for the unbiased estimator the three terms of ``HSIC_1`` rewritten with ``X_c^T Y_c``,
    ``X_c^T 1`` and the row norms (``Tr(K~L~) = |X^T Y|_F^2 - sum_i |x_i|^2 |y_i|^2``, ...).
    Returns the same scalar as ``cka_from_grams(linear_gram(X), linear_gram(Y))``."""
    X, Y = _centre(X), _centre(Y)
    stats = _suff_stats(X, Y)
    return _cka_from_stats(stats, X.shape[0], unbiased)


class _Stats(NamedTuple):
    xy: jax.Array  # |X^T Y|_F^2 (with the sums below, enough for both estimators)
    xx: jax.Array
    yy: jax.Array


def _suff_stats(X, Y):
    def parts(A, B):
        n = A.shape[0]
        cross = jnp.sum((A.T @ B) ** 2)                  # Tr(K L)
        a, b = jnp.sum(A * A, 1), jnp.sum(B * B, 1)      # diag K, diag L
        sa, sb = jnp.sum(A, 0), jnp.sum(B, 0)
        ka, lb = A @ sa - a, B @ sb - b                  # K~ 1, L~ 1
        return jnp.stack([cross, jnp.sum(a * b), jnp.sum(sa * sa) - jnp.sum(a),
                          jnp.sum(sb * sb) - jnp.sum(b), ka @ lb, jnp.asarray(n, A.dtype)])

    return _Stats(parts(X, Y), parts(X, X), parts(Y, Y))


def _hsic_from_parts(p, unbiased):
    cross, diag, k1, l1, kl1, n = (p[i] for i in range(6))
    if unbiased:
        t = (cross - diag) + k1 * l1 / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * kl1
        return t / (n * (n - 3))
    return cross / (n - 1) ** 2  # centred features: H K H = K


def _cka_from_stats(stats, n, unbiased):
    xy, xx, yy = (_hsic_from_parts(p, unbiased) for p in stats)
    return _ratio(xy, xx, yy, stats.xx[0] == 0, stats.yy[0] == 0)


def _check_pair(X, Y, unbiased):
    X, Y = jnp.asarray(X), jnp.asarray(Y)
    if X.ndim < 1 or Y.ndim < 1 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y need the same number of examples on axis 0, got {X.shape} and {Y.shape}")
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"CKA needs at least 2 examples, got {n}")
    if unbiased and n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 examples, got {n}")
    return X, Y


def _unit_scale(A):
    """``A`` times the power of two that brings ``max |A|`` near 1: CKA does not depend on a
    representation's scale, and a power of two changes no bit of the result, while HSIC of
    activations of size 1e4 overflows float32 (``|A|^4 n^2``)."""
    m = jnp.max(jnp.abs(A))
    e = jnp.where(m > 0, jnp.round(jnp.log2(jnp.where(m > 0, m, 1.0))), 0.0).astype(jnp.int32)
    return jnp.ldexp(A, -e)


@partial(jit, static_argnames=("kernel", "unbiased", "method"))
def _cka_impl(X, Y, sigma, *, kernel, unbiased, method):
    X, Y = _unit_scale(X), _unit_scale(Y)
    if method == "features":
        return feature_space_linear_cka(X, Y, unbiased)
    return cka_from_grams(gram(X, kernel, sigma), gram(Y, kernel, sigma), unbiased)


def _constant(X) -> bool:
    A = np.asarray(X, np.float64).reshape(X.shape[0], -1)
    return bool(np.all(np.ptp(A, axis=0) <= 1e-12 * max(1.0, float(np.max(np.abs(A))))))


_FIX = "CKA needs finite activations: drop those examples or find where the model overflows"


def cka(X, Y, *, kernel: str = "linear", unbiased: bool = False, sigma: float = 0.8,
        method: str = "auto") -> jax.Array:
    """CKA between two representations of the same ``n`` examples.

    Args:
      X: ``(n, ...)`` array (flattened per example to ``(n, p)``).
      Y: ``(n, ...)`` array (``(n, q)`` after flattening).
      kernel: ``"linear"`` or ``"rbf"``.
      unbiased: use the unbiased HSIC (Song et al. 2012, needs ``n >= 4``) instead of the biased one
        (Kornblith et al. 2019, the default and the paper's equation).
      sigma: RBF bandwidth as a fraction of the median pairwise distance.
      method: ``"gram"`` (``(n, n)`` kernels), ``"features"`` (linear only, ``O(n p q)``) or
        ``"auto"``: features when ``n > p + q`` for the linear kernel.

    Returns:
      A scalar in [0, 1] for the biased estimator (the unbiased one can leave it slightly).

    Raises:
      ValueError: fewer than 2 examples (4 for ``unbiased``), mismatched ``n``, unknown kernel or
        method, ``sigma <= 0``, NaN/inf in ``X`` or ``Y`` (the message names which and how many
        examples; CKA of such data is NaN or a misleading 0).
    """
    X, Y = _check_pair(X, Y, unbiased)
    for name, A in (("X", X), ("Y", Y)):
        require_finite(A, name, rows="examples", fix=_FIX)
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if method not in ("auto", "gram", "features"):
        raise ValueError(f"method must be 'auto', 'gram' or 'features', got {method!r}")
    if method == "features" and kernel != "linear":
        raise ValueError("the feature-space form exists only for the linear kernel")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    n, p, q = X.shape[0], int(np.prod(X.shape[1:])), int(np.prod(Y.shape[1:]))
    if method == "auto":
        method = "features" if kernel == "linear" and n > p + q else "gram"
    out = _cka_impl(X, Y, jnp.asarray(sigma, jnp.float32), kernel=kernel, unbiased=unbiased, method=method)
    if not isinstance(X, jax.core.Tracer) and not isinstance(Y, jax.core.Tracer):
        cx, cy = _constant(X), _constant(Y)
        if cx or cy:
            warnings.warn(
                f"CKA undefined: {'both representations are' if cx and cy else 'one representation is'} "
                f"constant over the {n} examples; returning {1.0 if cx and cy else 0.0} "
                "(see jcausal.tracer.cka)", RuntimeWarning, stacklevel=2)
    return out


@partial(jit, static_argnames=("kernel", "unbiased"))
def cka_matrix_unchecked(acts, sigma, *, kernel, unbiased):
    """:func:`cka_matrix` without its checks, for use inside traced code (the inputs are trusted).

    Args:
      acts: ``L`` arrays ``(n, ...)``; sigma: RBF bandwidth (a scalar array).
      kernel: ``"linear"`` or ``"rbf"``; unbiased: debiased HSIC.

    Returns:
      ``(L, L)`` CKA matrix with a unit diagonal.
    """
    grams = [gram(a, kernel, sigma) for a in acts]
    hs = jnp.stack([jnp.stack([hsic(K, L, unbiased) for L in grams]) for K in grams])
    flat = jnp.stack([_flat_kernel(K) for K in grams])
    d = jnp.diag(hs)
    m = _ratio(hs, d[:, None], d[None, :], flat[:, None], flat[None, :])
    return jnp.where(jnp.eye(len(acts), dtype=bool), 1.0, m)


def cka_matrix(acts, *, kernel: str = "linear", unbiased: bool = False, sigma: float = 0.8,
               names=None) -> jax.Array:
    """``(L, L)`` CKA between every pair of ``L`` representations of the same ``n`` examples.

    Args:
      acts: a sequence of ``L`` arrays ``(n, ...)`` (e.g. the layer outputs of
        :func:`jcausal.tracer.activations`).
      names: optional ``L`` layer names, used in error messages (default ``acts[i]``).

    Returns:
      ``(L, L)`` symmetric matrix with an exact unit diagonal (a representation is identical to
      itself even when it is constant); degenerate pairs as in the module docstring.

    Raises:
      ValueError: no representation, mismatched ``n``, too few examples, unknown kernel, or NaN/inf
        in a representation (the message names the layer and how many examples).
    """
    acts = [jnp.asarray(a) for a in acts]
    if not acts:
        raise ValueError("cka_matrix needs at least one representation")
    names = [f"acts[{i}]" for i in range(len(acts))] if names is None else [str(s) for s in names]
    if len(names) != len(acts):
        raise ValueError(f"{len(names)} names for {len(acts)} representations")
    n = acts[0].shape[0]
    for a, name in zip(acts, names):
        _check_pair(acts[0], a, unbiased)
        require_finite(a, f"layer {name!r}", rows="examples", fix=_FIX)
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    del n
    return cka_matrix_unchecked(acts, jnp.asarray(sigma, jnp.float32), kernel=kernel, unbiased=unbiased)


class CKAState(NamedTuple):
    """Running sums of :func:`cka_accumulator` over examples (all float32).

    Fields:
      shift: tuple of ``L`` arrays ``(p_l,)``: a reference point subtracted from every example (the
        first minibatch's mean) so that the final algebraic centring loses no precision.
      sums: tuple of ``L`` arrays ``(p_l,)``: ``sum_n (x - shift)``.
      cross: tuple over pairs ``i <= j`` (row-major) of ``(p_i, p_j)``: ``sum_n x_i x_j^T``.
      count: ``()``: examples seen.
    """

    shift: tuple
    sums: tuple
    cross: tuple
    count: jax.Array


class CKAAccumulator(NamedTuple):
    """``init(acts) -> state`` from a first minibatch (widths and shift only: pass it to ``update``
    too); ``update(state, acts) -> state`` for a minibatch ``acts`` (a sequence of ``L`` arrays
    ``(b, ...)``); ``finalize(state) -> (L, L)`` biased linear CKA. Pure and jittable."""

    init: object
    update: object
    finalize: object


def _pairs(L):
    return [(i, j) for i in range(L) for j in range(i, L)]


def cka_accumulator() -> CKAAccumulator:
    """Exact minibatch accumulation of biased linear CKA over examples, all ``(layers x layers)`` pairs.

    The biased linear HSIC is ``|Xc_i^T Xc_j|_F^2 / (n-1)^2`` and the centred cross product is a
    function of running sums: ``Xc_i^T Xc_j = sum x_i x_j^T - n mu_i mu_j^T``. Accumulating
    ``sum x`` and ``sum x_i x_j^T`` over minibatches and finishing once gives the **full-batch value**
    (to float rounding; examples are shifted by the first minibatch's mean so the subtraction does
    not cancel), unlike averaging per-minibatch CKA (Nguyen et al. 2021), which estimates another
    quantity. Memory is ``sum_{i<=j} p_i p_j`` floats: meant for dense or pooled representations; for
    wide conv maps use :func:`cka_matrix` on a subsample. The unbiased estimator needs fourth-order
    sums and is only offered in the one-shot forms (:func:`cka`, :func:`cka_matrix`).

    The result has an exact unit diagonal; constant layers (self-HSIC below float rounding of the
    accumulated second moments) get the documented defined values, never NaN.
    """

    def init(acts):
        A = [_flatten(a).astype(jnp.float32) for a in acts]
        return CKAState(
            shift=tuple(jnp.mean(a, axis=0) for a in A),
            sums=tuple(jnp.zeros(a.shape[1:], jnp.float32) for a in A),
            cross=tuple(jnp.zeros((A[i].shape[1], A[j].shape[1]), jnp.float32) for i, j in _pairs(len(A))),
            count=jnp.zeros((), jnp.float32),
        )

    def update(state, acts):
        A = [_flatten(a).astype(jnp.float32) - s[None, :] for a, s in zip(acts, state.shift)]
        return CKAState(
            shift=state.shift,
            sums=tuple(s + jnp.sum(a, axis=0) for s, a in zip(state.sums, A)),
            cross=tuple(c + A[i].T @ A[j] for c, (i, j) in zip(state.cross, _pairs(len(A)))),
            count=state.count + A[0].shape[0],
        )

    def finalize(state):
        L, n = len(state.sums), state.count
        mu = [s / n for s in state.sums]
        cross = dict(zip(_pairs(L), state.cross))
        hs, tol = [], []
        for i in range(L):
            row = []
            for j in range(L):
                a, b = min(i, j), max(i, j)
                M = cross[(a, b)] - n * jnp.outer(mu[a], mu[b])
                row.append(jnp.sum(M * M) / (n - 1) ** 2)
            hs.append(jnp.stack(row))
            raw = jnp.sum(cross[(i, i)] ** 2) / (n - 1) ** 2  # uncentred scale of the same sum
            tol.append(1e-10 * raw)
        hs, tol = jnp.stack(hs), jnp.stack(tol)
        d = jnp.diag(hs)
        flat = d <= tol
        m = _ratio(hs, d[:, None], d[None, :], flat[:, None], flat[None, :])
        return jnp.where(jnp.eye(L, dtype=bool), 1.0, m)

    return CKAAccumulator(init, update, finalize)
