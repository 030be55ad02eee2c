r"""Phase II of the ACE paper: Bayesian polynomial causal regressors with evidence-based order
selection (Chattopadhyay et al. 2019, sections 4.1 and 4.3, appendix A.4.3, Algorithm 3).

Each curve ``t_n = E[y | do(x_i = a_n)]`` is fitted by Bayesian linear regression on the basis
``phi(u) = [1, u, ..., u^d]`` of the intervention value rescaled to ``u in [-1, 1]``, with weight
prior ``N(0, alpha^{-1} I)`` and noise ``N(0, beta^{-1})`` (Bishop, PRML, ch. 3). For each order
``d = 0..max_order`` the log evidence

.. math::
    \ln p(\mathbf t \mid \alpha, \beta) = \ln \mathcal N(\mathbf t \mid 0,\;
    \beta^{-1} I + \alpha^{-1} \Phi_d \Phi_d^\top)

(a NumPyro ``MultivariateNormal`` over the data) is maximised over ``(alpha, beta)`` (type-II
maximum likelihood by MacKay's fixed-point updates, Bishop eqns 3.91-3.95). The chosen order is
the LOWEST whose evidence is within ``ln(bayes_factor)`` nats of the best (Occam's razor with a
stated margin): a higher order must win by a Bayes factor of at least ``bayes_factor`` (default 3,
"positive" evidence on Kass & Raftery's scale). Without the margin, flat curves -- whose
evidences agree to ~1e-4 nats across orders -- had their order picked by round-off (orders 0..6
over 20 seeds of a noisy constant). Everything is vmapped
over curves and orders: one compiled program for all of them. Fits run in float64 (the evidence of
near-interpolating polynomials is ill-conditioned in float32); results come back in the curves'
dtype. Curves are centred and scaled before fitting; evidence is reported in the original units.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer.util import log_density

from jcausal._src.xla import jit

__all__ = [
    "Regressor",
    "marginal_model",
    "log_evidence",
    "bishop_log_evidence",
    "fit_regressors",
    "predict_regressor",
    "reference_level",
    "value_at",
    "raw_coefficients",
    "to_unit",
]

_LOG_ALPHA = (-12.0, 12.0)  # prior precision range in standardised units
_LOG_BETA = (-8.0, 2.0 * np.log(1e6))  # noise std >= 1e-6 of the curve's std


class Regressor(NamedTuple):
    """Fitted causal regressors, one per curve, with batch shape ``B`` (e.g. ``(F, m)``).

    Fields (``D = max_order``):
      coef: ``B + (D+1,)`` posterior mean ``m_N`` of the weights on ``[1, u, ..., u^D]``
        (standardised units; entries above ``order`` are 0).
      post_cov: ``B + (D+1, D+1)`` posterior covariance ``S_N`` (standardised units).
      noise_var: ``B`` ``1/beta`` (standardised units).
      prior_precision: ``B`` ``alpha`` (standardised units).
      order: ``B`` int32, the selected polynomial order.
      log_evidence: ``B + (D+1,)`` maximised log evidence of every order, original units.
      offset, scale: ``B`` the curve's mean and standard deviation (``t = offset + scale * y``).
      low, high: ``B`` the intervention domain mapped to ``u = -1, 1``.
    """

    coef: jax.Array
    post_cov: jax.Array
    noise_var: jax.Array
    prior_precision: jax.Array
    order: jax.Array
    log_evidence: jax.Array
    offset: jax.Array
    scale: jax.Array
    low: jax.Array
    high: jax.Array


# ----------------------------------------------------------------------------- NumPyro models


def marginal_model(Phi, t=None, *, alpha, beta):
    """NumPyro model of ``t`` with the weights integrated out:
    ``t ~ MultivariateNormal(0, I/beta + Phi Phi^T / alpha)``. ``Phi``: ``(N, M)``."""
    N = Phi.shape[0]
    cov = jnp.eye(N, dtype=Phi.dtype) / beta + (Phi @ Phi.T) / alpha
    numpyro.sample("t", dist.MultivariateNormal(jnp.zeros(N, Phi.dtype), covariance_matrix=cov), obs=t)


def log_evidence(Phi, t, alpha, beta):
    """``ln p(t | alpha, beta)`` from :func:`marginal_model` via ``numpyro.infer.util.log_density``."""
    with jax.numpy_dtype_promotion("standard"):
        ld, _ = log_density(marginal_model, (Phi, t), {"alpha": alpha, "beta": beta}, {})
    return ld


def bishop_log_evidence(Phi, t, alpha, beta):
    """The closed form of Bishop's PRML eqn (3.86), an independent check of :func:`log_evidence`."""
    N, M = Phi.shape
    A = alpha * jnp.eye(M, dtype=Phi.dtype) + beta * Phi.T @ Phi
    m = beta * jnp.linalg.solve(A, Phi.T @ t)
    E = 0.5 * beta * jnp.sum((t - Phi @ m) ** 2) + 0.5 * alpha * jnp.dot(m, m)
    return (0.5 * M * jnp.log(alpha) + 0.5 * N * jnp.log(beta) - E
            - 0.5 * jnp.linalg.slogdet(A)[1] - 0.5 * N * jnp.log(2 * jnp.pi))


# ----------------------------------------------------------------------------- fitting


def to_unit(a, low, high):
    """Map ``a`` on ``[low, high]`` to ``u`` on ``[-1, 1]`` (broadcasting)."""
    return (2.0 * a - (low + high)) / (high - low)


def _basis(u, D):
    powers = jnp.arange(D + 1, dtype=u.dtype).reshape((1,) * u.ndim + (D + 1,))
    return u[..., None] ** powers


def _type2(Phi, y, iters: int = 300):
    """Type-II maximum likelihood of ``(alpha, beta)`` by MacKay's fixed-point updates (Bishop,
    PRML eqns 3.91-3.95), in the eigenbasis of ``Phi^T Phi`` so each update is O(M); a fixed number
    of iterations (vmappable, no data-dependent loops), hyperparameters kept in a bounded range.
    Zeroed (masked-out) basis columns have zero eigenvalues and drop out of the parameter count."""
    N = y.shape[0]
    lam, Q = jnp.linalg.eigh(Phi.T @ Phi)
    lam = jnp.clip(lam, 0.0)
    b = Q.T @ (Phi.T @ y)
    yy = jnp.dot(y, y)
    lo_a, hi_a = np.exp(_LOG_ALPHA[0]), np.exp(_LOG_ALPHA[1])
    lo_b, hi_b = np.exp(_LOG_BETA[0]), np.exp(_LOG_BETA[1])
    active = lam > 1e-10 * jnp.maximum(jnp.max(lam), 1.0)  # directions spanned by unmasked columns

    def step(_, ab):
        alpha, beta = ab
        denom = alpha + beta * lam
        mq = jnp.where(active, beta * b / denom, 0.0)
        gamma = jnp.sum(jnp.where(active, beta * lam / denom, 0.0))
        mm = jnp.dot(mq, mq)
        resid = jnp.maximum(yy - 2.0 * jnp.dot(mq, b) + jnp.dot(lam * mq, mq), 0.0)
        alpha = jnp.clip(gamma / jnp.maximum(mm, 1e-300), lo_a, hi_a)
        beta = jnp.clip((N - gamma) / jnp.maximum(resid, 1e-300), lo_b, hi_b)
        return alpha, beta

    init = (jnp.ones((), y.dtype), jnp.asarray(100.0, y.dtype))
    return jax.lax.fori_loop(0, iters, step, init)


def _fit_one(u, t, log_margin, D):
    """Fit one curve: ``u``, ``t`` of shape ``(N,)``."""
    N = t.shape[0]
    offset = jnp.mean(t)
    scale = jnp.std(t)
    const = scale <= 1e-12 * (1.0 + jnp.abs(offset))
    scale = jnp.where(const, 1.0, scale)
    y = (t - offset) / scale
    Phi = _basis(u, D)

    def per_order(d):
        mask = (jnp.arange(D + 1) <= d).astype(t.dtype)
        Phid = Phi * mask[None, :]
        alpha, beta = _type2(Phid, y)
        A = alpha * jnp.eye(D + 1, dtype=t.dtype) + beta * Phid.T @ Phid
        S = jnp.linalg.inv(A) * mask[:, None] * mask[None, :]
        m = beta * S @ (Phid.T @ y)
        return log_evidence(Phid, y, alpha, beta), m, S, alpha, beta

    le, m, S, alpha, beta = jax.vmap(per_order)(jnp.arange(D + 1))
    le_ok = jnp.where(jnp.isfinite(le), le, -jnp.inf)
    # the lowest order within log_margin nats of the best: ties (flat curves) go to the simpler one
    within = le_ok >= jnp.max(le_ok) - log_margin
    order = jnp.where(const, 0, jnp.argmax(within))
    zero = jnp.zeros(())
    m_sel = jnp.where(const, jnp.zeros_like(m[0]), m[order])
    S_sel = jnp.where(const, jnp.zeros_like(S[0]), S[order])
    noise = jnp.where(const, zero, 1.0 / beta[order])
    le_orig = le - N * jnp.log(scale)
    return m_sel, S_sel, noise, alpha[order], order.astype(jnp.int32), le_orig, offset, scale


@partial(jit, static_argnames=("D",))
def _fit_all(u, t, log_margin, D):
    with jax.numpy_dtype_promotion("standard"):
        return jax.vmap(partial(_fit_one, D=D), in_axes=(0, 0, None))(u, t, log_margin)


def _nuts_model(Phi, y=None):
    """All curves at once: ``Phi`` ``(B, N, M)`` (masked to each curve's order), ``y`` ``(B, N)``.
    Weakly informative log-normal hyperpriors on ``alpha`` and ``beta`` (standardised units)."""
    B, N, M = Phi.shape
    with numpyro.plate("curves", B):
        log_alpha = numpyro.sample("log_alpha", dist.Normal(0.0, 3.0))
        log_beta = numpyro.sample("log_beta", dist.Normal(np.log(100.0), 3.0))
        w = numpyro.sample("w", dist.Normal(jnp.zeros((B, M)), jnp.exp(-0.5 * log_alpha)[:, None])
                           .to_event(1))
        mean = jnp.einsum("bnm,bm->bn", Phi, w)
        numpyro.sample("t", dist.Normal(mean, jnp.exp(-0.5 * log_beta)[:, None]).to_event(1), obs=y)


def _nuts(u, t, order, offset, scale, const, D, key, num_warmup, num_samples, progress):
    """Posterior moments of (alpha, beta, w) by NUTS for the given orders (one joint run), on the
    curves standardised exactly as the type-II fit did (``offset``, ``scale``)."""
    from numpyro.infer import MCMC, NUTS

    y = (t - offset[:, None]) / scale[:, None]
    mask = (np.arange(D + 1)[None, :] <= order[:, None]).astype(np.float64)
    Phi = (u[..., None] ** np.arange(D + 1)) * mask[:, None, :]
    with jax.numpy_dtype_promotion("standard"):
        mcmc = MCMC(NUTS(_nuts_model), num_warmup=num_warmup, num_samples=num_samples,
                    progress_bar=progress)
        mcmc.run(key, jnp.asarray(Phi), jnp.asarray(y))
    s = mcmc.get_samples()
    w = np.asarray(s["w"]) * mask[None]  # (S, B, M)
    coef = w.mean(0)
    dev = w - coef[None]
    cov = np.einsum("sbi,sbj->bij", dev, dev) / max(w.shape[0] - 1, 1)
    noise = np.exp(-np.asarray(s["log_beta"])).mean(0)
    alpha = np.exp(np.asarray(s["log_alpha"])).mean(0)
    zero = const.astype(bool)
    coef[zero], cov[zero], noise[zero] = 0.0, 0.0, 0.0
    return coef, cov, noise, alpha


def fit_regressors(alphas, curves, low, high, *, max_order: int = 5, bayes_factor: float = 3.0,
                   inference: str = "type2",
                   key: jax.Array | None = None, num_warmup: int = 500, num_samples: int = 1000,
                   progress: bool = False) -> Regressor:
    """Fit a causal regressor to every (feature, output) curve.

    Args:
      alphas: ``(F, A)`` intervention values (Phase I grid).
      curves: ``(F, A, m)`` interventional expectations ``E[y_m | do(x_f = alphas[f, a])]``.
      low, high: ``(F,)`` intervention domains (mapped to ``u = -1, 1``).
      max_order: highest polynomial order tried.
      bayes_factor: a higher order is chosen only when its evidence beats every lower order's best
        by at least this factor (``>= 1``; 1 means plain maximum evidence, ties to the lower order).
      inference: ``"type2"`` (default): hyperparameters by maximum evidence, closed-form Gaussian
        posterior of the weights. ``"nuts"``: orders still chosen by maximum evidence, then
        ``(alpha, beta, w)`` drawn jointly for all curves with NumPyro's NUTS (log-normal
        hyperpriors); the regressor then holds the posterior mean and covariance of ``w`` and the
        posterior mean noise variance, so :func:`predict_regressor` gives the posterior predictive moments.
      key, num_warmup, num_samples, progress: NUTS settings (``key`` required for ``"nuts"``).

    Returns:
      :class:`Regressor` with batch shape ``(F, m)``.

    Raises:
      ValueError: shapes disagree, NaN/inf in the curves or alphas, ``low >= high`` for a feature,
        or fewer than ``max_order + 2`` intervention values (the noise level would not be
        identifiable at the highest order).

    Examples:
      >>> import numpy as np
      >>> from jcausal.ace import fit_regressors, reference_level
      >>> a = np.linspace(0, 1, 11, dtype=np.float32)
      >>> curves = np.stack([2 * a - 1, (2 * a - 1) ** 2])[:, :, None]   # (F=2, A, m=1)
      >>> reg = fit_regressors(np.stack([a, a]), curves, np.zeros(2), np.ones(2), max_order=3)
      >>> reg.order.tolist()                         # a line and a parabola
      [[1], [2]]
      >>> (np.asarray(reference_level(reg), float).round(2) + 0.0).tolist()   # uniform do(x = a), [0, 1]
      [[0.0], [0.33]]
    """
    curves = jnp.asarray(curves)
    alphas = jnp.asarray(alphas)
    if curves.ndim != 3 or alphas.shape != curves.shape[:2]:
        raise ValueError(f"need alphas (F, A) and curves (F, A, m); got {alphas.shape} and {curves.shape}")
    F, A, m = curves.shape
    if max_order < 0:
        raise ValueError(f"max_order must be >= 0, got {max_order}")
    if A < max_order + 2:
        raise ValueError(
            f"{A} intervention values are too few for max_order={max_order}: need at least "
            f"{max_order + 2} (use more alphas or a lower max_order)")
    bad = ~np.isfinite(np.asarray(curves))
    if bad.any():
        f_i, a_i, o_i = np.argwhere(bad)[0]
        raise ValueError(f"curves contain {int(bad.sum())} NaN/inf values, e.g. at feature row {f_i}, "
                         f"alpha {a_i}, output {o_i}")
    if not np.all(np.isfinite(np.asarray(alphas))):
        raise ValueError("alphas contain NaN/inf")
    low = np.broadcast_to(np.asarray(low, np.float64), (F,))
    high = np.broadcast_to(np.asarray(high, np.float64), (F,))
    degenerate = np.flatnonzero(~(high > low))
    if degenerate.size:
        raise ValueError(
            f"degenerate intervention domain (low >= high) for feature rows {degenerate[:10].tolist()}: "
            "pass explicit low/high bounds (e.g. input_stats(X, low=0.0, high=1.0))")
    if not (np.isfinite(bayes_factor) and bayes_factor >= 1.0):
        raise ValueError(f"bayes_factor must be a finite number >= 1, got {bayes_factor!r}")
    if inference not in ("type2", "nuts"):
        raise ValueError(f"inference must be 'type2' or 'nuts', got {inference!r}")
    if inference == "nuts" and key is None:
        raise ValueError("inference='nuts' needs an explicit key= (PRNG key)")
    dtype = curves.dtype
    with jax.enable_x64(True):
        u = to_unit(np.asarray(alphas, np.float64), low[:, None], high[:, None])  # (F, A)
        u_rep = jnp.asarray(np.repeat(u[:, None, :], m, axis=1).reshape(F * m, A))
        t = jnp.asarray(np.moveaxis(np.asarray(curves, np.float64), 2, 1).reshape(F * m, A))
        out = _fit_all(u_rep, t, jnp.asarray(np.log(bayes_factor), jnp.float64), max_order)
        out = [np.asarray(o) for o in out]
        if inference == "nuts":
            const = out[2] == 0.0  # the type-II fit marks constant curves with zero noise
            out[0], out[1], out[2], out[3] = _nuts(np.asarray(u_rep), np.asarray(t), out[4], out[6],
                                                   out[7], const, max_order, key, num_warmup,
                                                   num_samples, progress)
    D1 = max_order + 1
    shapes = [(D1,), (D1, D1), (), (), (), (D1,), (), ()]
    out = [o.reshape((F, m) + s) for o, s in zip(out, shapes)]
    cast = [jnp.asarray(o, jnp.int32 if i == 4 else dtype) for i, o in enumerate(out)]
    lo = jnp.asarray(np.broadcast_to(low[:, None], (F, m)), dtype)
    hi = jnp.asarray(np.broadcast_to(high[:, None], (F, m)), dtype)
    return Regressor(*cast, lo, hi)


# ----------------------------------------------------------------------------- using a fit


def predict_regressor(reg: Regressor, a):
    """Predictive mean and variance (Bishop 3.58-3.59) at intervention values ``a``.

    ``a``: ``(n,)`` shared by all curves, or ``B + (n,)``. Returns ``(mean, var)``, each ``B + (n,)``;
    ``var`` includes the fitted noise.

    Examples:
      >>> import numpy as np
      >>> from jcausal.ace import fit_regressors, predict_regressor
      >>> a = np.linspace(0, 1, 11, dtype=np.float32)
      >>> reg = fit_regressors(a[None], (3 * a)[None, :, None], np.zeros(1), np.ones(1), max_order=2)
      >>> mean, std = predict_regressor(reg, np.float32([0.5]))
      >>> np.round(mean, 2).ravel().tolist()
      [1.5]
    """
    a = jnp.asarray(a, reg.coef.dtype)
    a = jnp.broadcast_to(a, reg.offset.shape + a.shape[-1:])
    u = to_unit(a, reg.low[..., None], reg.high[..., None])  # B + (n,)
    phi = _basis(u, reg.coef.shape[-1] - 1)  # B + (n, D+1)
    mean_std = jnp.einsum("...nd,...d->...n", phi, reg.coef)
    var_std = reg.noise_var[..., None] + jnp.einsum("...nd,...de,...ne->...n", phi, reg.post_cov, phi)
    return reg.offset[..., None] + reg.scale[..., None] * mean_std, reg.scale[..., None] ** 2 * var_std


def reference_level(reg: Regressor, at=None):
    r"""The reference level ACE is measured from (the paper's "baseline", section 4.1), shape ``B``.

    Default: the average of the predictive mean over a uniform intervention on ``[low, high]``,
    computed analytically from the coefficients:
    :math:`\frac{1}{high-low}\int_{low}^{high} \bar y(a)\,da = \frac12\int_{-1}^{1}\bar y(u)\,du
    = \text{offset} + \text{scale}\sum_{j\ \text{even}} m_j/(j+1)`.
    With ``at`` (``B``-broadcastable values), the mean at that domain-knowledge point instead.
    """
    if at is not None:
        at = jnp.broadcast_to(jnp.asarray(at, reg.coef.dtype), reg.offset.shape)
        return predict_regressor(reg, at[..., None])[0][..., 0]
    weights = np.array([1.0 / (j + 1) if j % 2 == 0 else 0.0 for j in range(reg.coef.shape[-1])])
    return reg.offset + reg.scale * (reg.coef @ jnp.asarray(weights, reg.coef.dtype))


def value_at(reg: Regressor, a, base=None):
    """``ACE(a) = mean(a) - reference level`` (eqn 1), shape ``B + (n,)``; ``base`` defaults to
    :func:`reference_level`."""
    mean, _ = predict_regressor(reg, a)
    base = reference_level(reg) if base is None else base
    return mean - base[..., None]


def raw_coefficients(reg: Regressor):
    """Polynomial coefficients in the original intervention units: ``mean(a) = sum_j c_j a^j``,
    shape ``B + (D+1,)`` (exact binomial re-expansion of the fit in ``u``)."""
    D = reg.coef.shape[-1] - 1
    s = 2.0 / (reg.high - reg.low)  # u = s a + o
    o = -(reg.high + reg.low) / (reg.high - reg.low)
    from math import comb

    c = jnp.zeros_like(reg.coef)
    for mdeg in range(D + 1):
        for j in range(mdeg + 1):
            c = c.at[..., j].add(reg.coef[..., mdeg] * comb(mdeg, j) * s ** j * o ** (mdeg - j))
    c = c * reg.scale[..., None]
    return c.at[..., 0].add(reg.offset)
