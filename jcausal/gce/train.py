"""Training a generative map to explain a frozen classifier: maximise ``C + lambda D``.

GCE paper eqn (3) and section 3.4: Adam on ``-(C + lambda D)``, a fresh sample estimate of ``C``
(Algorithm 2) at every step, ``D`` the batch ELBO (VAE) or ``-KL`` (linear-Gaussian map). One
jitted step per batch; the classifier's parameters enter as an argument under
``stop_gradient`` (frozen, never compiled in as constants); ``lambda`` is an argument too, so
Algorithm 1 can change it without recompiling.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from jcausal._src.checks import require_finite
from jcausal._src.io import atomic_write_bytes
from jcausal._src.xla import jit
from jcausal.gce.models import Generative, LinearGaussian, generative
from jcausal.gce.objectives import VARIANTS, _check_sizes, check_models, information_flow
from jcausal.models.checkpoint import save

__all__ = ["StepInfo", "TrainResult", "build_step", "train"]


class StepInfo(NamedTuple):
    """Per-step measurements (scalars): ``loss = -(C + lam * D)``, ``C`` (nats), ``D``."""

    loss: jax.Array
    C: jax.Array
    D: jax.Array


class TrainResult(NamedTuple):
    """``params``: the generator's parameters after ``steps`` updates; ``history``: lists
    ``step``, ``C``, ``D``, ``loss`` (every ``log_every`` steps); ``nonfinite_step``: the 1-based
    step whose loss was NaN/inf, or ``None``. Training stops there and ``params`` are the last
    parameters whose loss was measured finite (``steps < nonfinite_step``); ``checkpoint``: path
    of the last checkpoint written (it holds those parameters), or ``None``."""

    params: nnx.State
    history: dict[str, list[float]]
    steps: int
    nonfinite_step: int | None
    checkpoint: Path | None


def build_step(gen: Generative, classify: Callable, optimizer: optax.GradientTransformation, *, K: int,
               L: int, n_alpha: int, n_beta: int, variant: str = "joint", fidelity_only: bool = False,
               classify_has_params: bool = True, chunk: int | None = None) -> Callable:
    """One jitted optimisation step of ``-(C + lam D)``.

    Returns ``step(params, opt_state, clf_params, data, idx, lam, key) -> (params, opt_state,
    StepInfo)``: ``data`` ``(n, ...)`` stays on the device, ``idx`` ``(batch,)`` picks the batch,
    ``lam`` is a scalar array, ``key`` a PRNG key. ``clf_params`` is wrapped in
    ``stop_gradient``: the classifier is frozen. With ``fidelity_only`` the objective is ``D``
    alone (Algorithm 1, step 1; ``K`` may be 0). ``chunk``: decode and classify at most this
    many of the ``n_alpha * n_beta`` latents per batch (the same objective; see
    :func:`~jcausal.gce.information_flow`). Measured on the MNIST step (Table 2 VAE, Table 1
    CNN, 100 x 25 latents, 2-core CPU): one batch 2.61 s, chunks of 625 2.39 s, 250 2.27 s,
    100 2.38 s (smaller working sets stay in cache); compile time grows with the chunk count.
    """
    def objective(params, clf_params, batch, lam, key):
        k_c, k_d = jax.random.split(key)
        D = gen.fidelity(params, batch, k_d)
        if fidelity_only:
            C = jnp.zeros((), D.dtype)
            return -D, StepInfo(-D, C, D)
        cp = jax.lax.stop_gradient(clf_params) if classify_has_params else None
        C = information_flow(gen.decode, classify, k_c, K=K, L=L, n_alpha=n_alpha, n_beta=n_beta,
                             params=(params, cp), variant=variant,
                             noisy=gen.noisy, check=False, chunk=chunk)
        loss = -(C + lam * D)
        return loss, StepInfo(loss, C, D)

    @jit
    def step(params, opt_state, clf_params, data, idx, lam, key):
        (_, info), grads = jax.value_and_grad(objective, has_aux=True)(
            params, clf_params, data[idx], lam, key)
        with jax.numpy_dtype_promotion("standard"):  # optax is not strict-promotion clean
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, info

    return step


def _save_checkpoint(path: Path, params, meta: dict) -> None:
    save(path, params)
    atomic_write_bytes(path.with_suffix(path.suffix + ".json"), json.dumps(meta, indent=2).encode())


def _check_latent_size(model, gen: Generative, data, K: int, L: int) -> None:
    """``K + L`` must be the map's latent size: read from a linear-Gaussian map's ``W``, from the
    encoder's output on one data row, or else probed by decoding a latent of ``K + L`` zeros
    (shapes only: nothing runs). Raises ValueError naming both sizes."""
    size = None
    if isinstance(model, LinearGaussian):
        size = int(model.W[...].shape[1])
    elif gen.encode is not None and data is not None and np.ndim(data) >= 1 and np.shape(data)[0] >= 1:
        try:
            mean = jax.eval_shape(lambda p, x: gen.encode(p, x)[0], gen.params, jnp.asarray(data[0]))
            size = int(np.prod(mean.shape))
        except (TypeError, ValueError) as err:
            raise ValueError(f"the generative map's encoder rejects one data row of shape "
                             f"{tuple(np.shape(data)[1:])}: {type(err).__name__}: {err}") from None
    if size is not None:
        if size != K + L:
            raise ValueError(f"K + L = {K} + {L} = {K + L}, but the generative map's latent has {size} "
                             f"factors: pass K and L with K + L = {size}, or build the map with "
                             f"latent = {K + L}")
        return
    try:
        jax.eval_shape(lambda p, z: gen.decode(p, z), gen.params, jax.ShapeDtypeStruct((K + L,), jnp.float32))
    except (TypeError, ValueError) as err:
        raise ValueError(f"the generative map's decoder rejects a latent of K + L = {K} + {L} = {K + L} "
                         f"factors (is its latent size another?): {type(err).__name__}: {err}") from None


def train(model: nnx.Module | Generative, classify: Callable, data=None, *, key: jax.Array, K: int,
          L: int, lam: float, steps: int, classify_params: Any = None, batch_size: int = 64,
          n_alpha: int = 100, n_beta: int = 25, learning_rate: float = 5e-4,
          optimizer: optax.GradientTransformation | None = None, variant: str = "joint",
          fidelity_only: bool = False, checkpoint: str | Path | None = None, checkpoint_every: int = 500,
          log_every: int = 1, progress: bool = True, chunk: int | None = None) -> TrainResult:
    """Fit a generative map so that its first ``K`` latents explain ``classify`` (GCE eqn 3).

    Args:
      model: a :class:`~jcausal.gce.LinearGaussian`, a :class:`~jcausal.models.vae.VAE` (updated in
        place at the end), or a :class:`~jcausal.gce.Generative`.
      classify: ``classify(x)`` or, with ``classify_params``, ``classify(params, x)`` -> ``(M,)``
        class probabilities of ONE input. Frozen: no gradient reaches its parameters.
      data: ``(n, ...)`` training inputs for the data term (``None`` for the linear-Gaussian map).
      key: PRNG key (batches and every Monte Carlo draw); the run is reproducible from it.
      K, L: causal and noncausal factors; lam: ``lambda >= 0``; steps: optimisation steps.
      batch_size, n_alpha, n_beta, learning_rate: the paper's 64, 100, 25, 5e-4 by default.
      optimizer: optax transformation (default ``optax.adam(learning_rate)``).
      variant: causal objective, one of :data:`~jcausal.gce.VARIANTS`.
      fidelity_only: maximise ``D`` only (Algorithm 1 step 1; ``K = 0`` allowed).
      checkpoint: path of an atomic msgpack checkpoint of the parameters (plus ``.json`` with the
        step, C and D), written every ``checkpoint_every`` steps and at the end.
      log_every: history resolution; progress: tqdm bar showing C and D.
      chunk: latents decoded and classified per batch (see :func:`build_step`; ``None``: all).

    Returns:
      :class:`TrainResult`. A NaN/inf loss stops training: the last finite parameters are kept
      (and checkpointed) and the step is reported in ``nonfinite_step``.

    Raises:
      ValueError: ``lam < 0``, ``K < 1`` (unless ``fidelity_only``), ``L < 0``, ``n_alpha`` or
        ``n_beta < 1``, ``steps < 1``, ``K + L`` not the map's latent size (both named), bad
        classifier outputs on a probe, or missing data for a VAE.
    """
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam = {lam}: the weight of the data term must be a finite number >= 0")
    if steps < 1 or checkpoint_every < 1 or log_every < 1:
        raise ValueError(f"steps, checkpoint_every and log_every must be >= 1, got {steps}, "
                         f"{checkpoint_every}, {log_every}")
    if variant not in VARIANTS:
        raise ValueError(f"variant = {variant!r}: choose one of {VARIANTS}")
    if fidelity_only:
        if K < 0 or L < 0 or K + L < 1:
            raise ValueError(f"K = {K}, L = {L}: need K, L >= 0 and K + L >= 1")
    else:
        _check_sizes(K, L, n_alpha, n_beta)
    gen = model if isinstance(model, Generative) else generative(model)
    _check_latent_size(model, gen, data, K, L)
    has_cp = classify_params is not None
    if not fidelity_only:
        check_models(gen.decode, classify, K + L, params=(gen.params, classify_params), noisy=gen.noisy)
    if data is None:
        if gen.encode is not None:
            raise ValueError("data is None but the generative map is a VAE: pass training inputs")
        data = jnp.zeros((1, 1), jnp.float32)
        bs = 1
    else:
        data = jnp.asarray(data)
        if data.ndim < 1 or data.shape[0] < 1:
            raise ValueError(f"data must be a non-empty batch (n, ...), got shape {data.shape}")
        require_finite(data, "data", rows="inputs", fix="the data term D would be NaN from the first step")
        bs = min(int(batch_size), data.shape[0])
    tx = optimizer or optax.adam(learning_rate)
    step = build_step(gen, classify, tx, K=K, L=L, n_alpha=n_alpha, n_beta=n_beta, variant=variant,
                      fidelity_only=fidelity_only, classify_has_params=has_cp, chunk=chunk)
    params = gen.params
    with jax.numpy_dtype_promotion("standard"):
        opt_state = tx.init(params)
    lam_arr = jnp.asarray(lam, jnp.float32)
    n = data.shape[0]
    k_perm, k_steps = jax.random.split(key)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(k_perm)).ravel())
    order, pos = rng.permutation(n), 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    written: Path | None = None
    history: dict[str, list[float]] = {"step": [], "C": [], "D": [], "loss": []}
    nonfinite: int | None = None
    done = 0
    good, good_done = params, 0
    bar = tqdm(range(steps), desc=f"gce K={K} L={L}", disable=not progress, leave=False)
    for t in bar:
        if pos + bs > n:
            order, pos = rng.permutation(n), 0
        idx = jnp.asarray(order[pos:pos + bs])
        pos += bs
        new_params, new_opt, info = step(params, opt_state, classify_params, data, idx, lam_arr,
                                         jax.random.fold_in(k_steps, t))
        loss = float(info.loss)  # measured on `params` (t updates applied)
        if not np.isfinite(loss):
            nonfinite = t + 1
            params, done = good, good_done  # the last parameters with a finite loss
            bar.set_postfix_str(f"non-finite loss at step {t + 1}; stopped")
            break
        good, good_done = params, t
        params, opt_state, done = new_params, new_opt, t + 1
        if done % log_every == 0 or done == steps:
            c, d = float(info.C), float(info.D)
            for k_, v in (("step", done), ("C", c), ("D", d), ("loss", loss)):
                history[k_].append(v)
            bar.set_postfix(C=f"{c:.4f}", D=f"{d:.4g}")
        if ckpt is not None and done % checkpoint_every == 0:
            _save_checkpoint(ckpt, params, {"step": done, "C": float(info.C), "D": float(info.D)})
            written = ckpt
    if ckpt is not None and (written is None or nonfinite is not None or done % checkpoint_every):
        _save_checkpoint(ckpt, params, {"step": done, "nonfinite_step": nonfinite,
                                        "C": history["C"][-1] if history["C"] else None,
                                        "D": history["D"][-1] if history["D"] else None})
        written = ckpt
    if isinstance(model, nnx.Module):
        nnx.update(model, params)
    return TrainResult(params, history, done, nonfinite, written)
