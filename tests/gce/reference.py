"""Float64 quadrature references for the linear-Gaussian map with a probit classifier.

With ``p(Y = 1 | x) = Phi(a^T x)`` and ``x = W z + eps``, ``Y`` depends on the latents only
through projections: for a split of the coordinates into ``S`` and the rest ``R``,
``u_S = a^T W_S z_S ~ N(0, s_S^2)`` and ``u_R ~ N(0, s_R^2)`` are independent (the noise adds
``gamma |a|^2`` to ``s_R^2``), and ``E_u Phi(u + c) = Phi(c / sqrt(1 + var u))`` (GCE appendix
C.2). Every information quantity is then a 1-D or 2-D Gauss-Hermite integral (scipy, float64).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(161)
WEIGHTS = WEIGHTS / WEIGHTS.sum()  # E over N(0, 1)


def hb(p):
    """Binary entropy in nats."""
    p = np.clip(p, 1e-300, 1.0)
    q = np.clip(1.0 - p, 1e-300, 1.0)
    return -(p * np.log(p) + q * np.log(q))


def projections(a, W, S, gamma=0.0):
    """``(s_S, s_R)`` standard deviations of the projections of the ``S`` and other latents."""
    mask = np.zeros(W.shape[1], bool)
    mask[list(S)] = True
    s_S = np.linalg.norm(W[:, mask].T @ a)
    s_R = np.sqrt(np.sum((W[:, ~mask].T @ a) ** 2) + gamma * a @ a)
    return s_S, s_R


def mi_unconditional(a, W, S, gamma=0.0):
    """``I(z_S; Y) = log 2 - E_u h_b(Phi(u / sqrt(1 + s_R^2)))``, ``u ~ N(0, s_S^2)``."""
    s_S, s_R = projections(a, W, S, gamma)
    return np.log(2.0) - WEIGHTS @ hb(ndtr(s_S * NODES / np.sqrt(1.0 + s_R**2)))


def mi_conditional(a, W, S, gamma=0.0):
    """``I(z_S; Y | z_R) = E_c [h_b(Phi(c / sqrt(1 + s_S^2))) - E_u h_b(Phi(u + c))]``, noise-free."""
    assert gamma == 0.0, "the conditional reference is for a noise-free decoder"
    s_S, s_R = projections(a, W, S)
    c = s_R * NODES
    outer = hb(ndtr(c / np.sqrt(1.0 + s_S**2)))
    inner = hb(ndtr(s_S * NODES[:, None] + c[None, :]))  # (u nodes, c nodes)
    return WEIGHTS @ (outer - WEIGHTS @ inner)


def variants(a, W, K):
    """Exact ``C, C_iu, C_jc, C_ic`` for a noise-free linear map ``W`` ``(N, K + L)``."""
    alpha = range(K)
    return {
        "joint": mi_unconditional(a, W, alpha),
        "independent": np.mean([mi_unconditional(a, W, [i]) for i in alpha]),
        "joint_conditional": mi_conditional(a, W, alpha),
        "independent_conditional": np.mean([mi_conditional(a, W, [i]) for i in alpha]),
    }
