"""Algorithm 1 of the GCE paper: choosing the numbers of factors ``K``, ``L`` and the weight ``lambda``.

1. With ``K = 0`` and ``lambda = 0`` (only ``D`` optimised), increase ``L`` until ``D`` plateaus.
2. Repeat: increment ``K`` and decrement ``L``; increase ``lambda`` until ``D`` approaches its
   step-1 value.
3. Until ``C`` plateaus; use ``(K, L, lambda)`` from just before the plateau.

:func:`select_parameters` is the search itself, driven by any ``measure(K, L, lam) -> (C, D)``;
:func:`make_measure` builds that callable from :func:`jcausal.gce.fit_explainer` (a fresh model per
trial).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from jcausal.gce.models import generative
from jcausal.gce.objectives import information_flow
from jcausal.gce.train import ExplainerSettings, fit_explainer
from jcausal.models import Loop

__all__ = ["SelectionPath", "select_parameters", "make_measure"]


class SelectionPath(NamedTuple):
    """The chosen ``K``, ``L``, ``lam``; ``D_target`` (step 1's plateau value of ``D``); and every
    trial as a dict ``{stage, K, L, lam, C, D, accepted}`` in the order run (stage 1: step 1,
    stage 2: steps 2-3; ``accepted`` marks the lambda kept for each K)."""

    K: int
    L: int
    lam: float
    D_target: float
    trials: list[dict]


def _plateaued(prev: float, new: float, tol: float) -> bool:
    return (new - prev) <= tol * max(abs(prev), 1e-12)


def select_parameters(measure: Callable[[int, int, float], tuple[float, float]], *, max_latents: int,
                      lambdas: Sequence[float], d_tol: float = 0.05, c_tol: float = 0.05,
                      progress: bool = True) -> SelectionPath:
    """Run Algorithm 1 with a user-supplied trainer.

    Args:
      measure: ``measure(K, L, lam) -> (C, D)``: train a fresh explainer with ``K`` causal and
        ``L`` noncausal factors and weight ``lam`` and return its measured ``C`` and ``D``. It is
        called with ``K = 0, lam = 0`` in step 1 (optimise ``D`` only; ``C`` is ignored).
      max_latents: the largest ``K + L`` tried in step 1.
      lambdas: increasing candidate values of ``lambda`` for steps 2-3.
      d_tol: step 1 stops when ``D`` improves by less than ``d_tol * |D|``; in step 2 ``D`` is
        close enough when ``D >= D_target - d_tol * |D_target|``.
      c_tol: ``C`` has plateaued when it improves by less than ``c_tol * C``.
      progress: show a progress bar over trials.

    Returns:
      :class:`SelectionPath`.

    Raises:
      ValueError: ``max_latents < 1``, empty, negative or unsorted ``lambdas``, negative tolerances.
    """
    lambdas = [float(v) for v in lambdas]
    if max_latents < 1:
        raise ValueError(f"max_latents = {max_latents}: need at least 1")
    if not lambdas or any(v < 0 for v in lambdas) or lambdas != sorted(lambdas):
        raise ValueError(f"lambdas = {lambdas}: need a non-empty increasing list of values >= 0")
    if d_tol < 0 or c_tol < 0:
        raise ValueError(f"d_tol = {d_tol}, c_tol = {c_tol}: tolerances must be >= 0")
    trials: list[dict] = []
    bar = tqdm(desc="Algorithm 1", disable=not progress, leave=False)

    def run(stage, K, L, lam):
        C, D = measure(K, L, lam)
        t = {"stage": stage, "K": K, "L": L, "lam": lam, "C": float(C), "D": float(D), "accepted": False}
        trials.append(t)
        bar.update()
        bar.set_postfix(K=K, L=L, lam=lam, C=f"{float(C):.3f}", D=f"{float(D):.4g}")
        return t

    # step 1: grow L with K = 0, lambda = 0
    total, best = 1, run(1, 0, 1, 0.0)
    for n in range(2, max_latents + 1):
        t = run(1, 0, n, 0.0)
        if _plateaued(best["D"], t["D"], d_tol):
            break
        total, best = n, t
    best["accepted"] = True
    D_target = best["D"]
    # steps 2-3: convert noncausal factors to causal ones, raising lambda to hold D
    chosen: dict | None = None
    lam_start = 0
    for K in range(1, total + 1):
        L = total - K
        kept = None
        for i in range(lam_start, len(lambdas)):
            kept = run(2, K, L, lambdas[i])
            lam_start = i
            if kept["D"] >= D_target - d_tol * abs(D_target):
                break
        kept["accepted"] = True
        if chosen is not None and _plateaued(chosen["C"], kept["C"], c_tol):
            break
        chosen = kept
    bar.close()
    return SelectionPath(chosen["K"], chosen["L"], chosen["lam"], D_target, trials)


def make_measure(model_factory: Callable[[int, int], Any], classify: Callable, data=None, *,
                 key: jax.Array, steps: int, classify_params=None, n_alpha: int = 100, n_beta: int = 25,
                 n_eval: tuple[int, int] = (200, 100), tail: float = 0.1, **train_kw) -> Callable:
    """``measure(K, L, lam) -> (C, D)`` for :func:`select_parameters`, from :func:`jcausal.gce.fit_explainer`.

    Each call trains ``model_factory(K, L)`` (a fresh :class:`~jcausal.gce.LinearGaussian` or VAE)
    for ``steps`` steps with the same key, then reports ``C`` re-estimated with ``n_eval =
    (n_alpha, n_beta)`` samples (0 when ``K = 0``) and ``D`` averaged over the last ``tail``
    fraction of the logged steps. Extra keywords are :class:`~jcausal.gce.ExplainerSettings` fields.
    """
    k_train, k_eval = jax.random.split(key)

    def measure(K: int, L: int, lam: float) -> tuple[float, float]:
        model = model_factory(K, L)
        settings = ExplainerSettings(n_alpha=n_alpha, n_beta=n_beta, fidelity_only=K == 0, **train_kw)
        res = fit_explainer(model, classify, data, key=k_train, K=K, L=L, lam=lam, steps=steps,
                            classify_params=classify_params, settings=settings, loop=Loop(progress=False))
        Ds = res.history["D"]
        D = float(np.mean(Ds[-max(1, int(len(Ds) * tail)):]))
        if K == 0:
            return 0.0, D
        gen = generative(model)
        C = information_flow(gen.decode, classify, k_eval, K=K, L=L, n_alpha=n_eval[0], n_beta=n_eval[1],
                             params=(res.params, classify_params), noisy=gen.noisy)
        return float(C), D

    return measure
