"""Training a generative map to explain a frozen classifier: maximise ``C + lambda D``.

GCE paper eqn (3) and section 3.4: Adam on ``-(C + lambda D)``, a fresh sample estimate of ``C``
(Algorithm 2) at every step, ``D`` the batch ELBO (VAE) or ``-KL`` (linear-Gaussian map). One
jitted step per batch; the classifier's parameters enter as an argument under
``stop_gradient`` (frozen, never compiled in as constants); ``lambda`` is an argument too, so
Algorithm 1 can change it without recompiling.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jcausal._src.calling import unwrap_model
from jcausal._src.checks import require_finite, require_int
from jcausal._src.fit import FitResult, Loop, fit
from jcausal._src.io import atomic_write_bytes
from jcausal._src.xla import jit
from jcausal.gce.models import Generative, LinearGaussian, generative
from jcausal.gce.objectives import VARIANTS, check_models, check_sampler, check_sizes, information_flow
from jcausal.models.checkpoint import save

__all__ = ["ExplainerSettings", "Plateau", "PlateauWarning", "StepInfo", "build_step", "find_plateau",
           "fit_explainer"]


class StepInfo(NamedTuple):
    """Per-step measurements (scalars): ``loss = -(C + lam * D)``, ``C`` (nats), ``D``."""

    loss: jax.Array
    C: jax.Array
    D: jax.Array


@dataclasses.dataclass(frozen=True)
class ExplainerSettings:
    """Optimisation and estimator settings of :func:`fit_explainer` (validated when built).

    The paper's, except the estimator of ``C``: the defaults ``sampler="sobol"``,
    ``n_alpha = 128``, ``n_beta = 4`` (512 decodes per step) measured a lower error of ``C`` and
    a gradient error no larger than the paper's plain Monte Carlo at 100 x 25 (2500 decodes) on a
    trained MNIST explainer (``docs/gce_estimator.rst``). The paper's: ``sampler="mc"``,
    ``n_alpha=100``, ``n_beta=25``.

    Fields:
      batch_size: data rows per step (64).
      n_alpha, n_beta: samples of the causal factors, and of the noncausal ones per causal draw,
        per estimate of ``C`` (128, 4; the paper: 100, 25).
      learning_rate: Adam's step (5e-4), unless ``optimizer`` is given.
      optimizer: an optax transformation, or ``None`` for ``optax.adam(learning_rate)``.
      variant: causal objective, one of :data:`~jcausal.gce.VARIANTS`.
      fidelity_only: maximise ``D`` only (Algorithm 1 step 1; ``K = 0`` allowed).
      chunk: latents decoded and classified per batch (see :func:`build_step`; ``None``: all).
      sampler: latent sampler of the estimate of ``C``: ``"sobol"`` (randomized quasi-Monte
        Carlo, the default), ``"stratified"`` (Latin hypercubes) or ``"mc"`` (the paper's
        Algorithm 2); see :func:`~jcausal.gce.information_flow`.
    """

    batch_size: int = 64
    n_alpha: int = 128
    n_beta: int = 4
    learning_rate: float = 5e-4
    optimizer: optax.GradientTransformation | None = None
    variant: str = "joint"
    fidelity_only: bool = False
    chunk: int | None = None
    sampler: str = "sobol"

    def __post_init__(self):
        require_int(self.batch_size, "batch_size")
        for name in ("n_alpha", "n_beta"):  # shapes; the sampler's own minimum is checked with K, L
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} = {v!r}: need an int >= 1 (samples per estimate of C)")
        require_int(self.chunk, "chunk", none_ok=True)
        if self.optimizer is None and not (np.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate = {self.learning_rate}: must be a finite number > 0")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant = {self.variant!r}: choose one of {VARIANTS}")
        check_sampler(self.sampler, 2, 2, inner_dims=0)  # its name; its sizes are checked with K and L


class PlateauWarning(UserWarning):
    """Training ended with ``C`` near 0: the generative map carries no information to the
    classifier (often a VAE whose decoder ignores ``z``)."""


class Plateau(NamedTuple):
    """Where ``C`` stayed near 0: from ``since`` (step) to the end, at most ``C_max`` nats, while
    ``D`` went from ``D_start`` to ``D_end``."""

    since: int
    C_max: float
    D_start: float
    D_end: float


def find_plateau(history: dict, *, c_tol: float = 0.01, window: float = 0.25) -> Plateau | None:
    """The plateau of a :func:`fit_explainer` history: ``C`` below ``c_tol`` nats over its last
    ``window`` fraction of records (at least 2), or ``None`` when ``C`` rose above it there.

    On this plateau the causal term has no gradient to follow (a decoder that ignores ``z`` makes
    every latent useless to the classifier), so more steps of the same run rarely leave it;
    what measurably helps is pretraining ``D`` alone and a Bernoulli likelihood
    (``docs/gce_estimator.rst``).
    """
    C, D, steps = (np.asarray(history.get(k, []), float) for k in ("C", "D", "step"))
    n = C.size
    if n < 2 or D.size != n:
        return None
    tail = max(2, int(np.ceil(window * n)))
    c_max = float(np.nanmax(C[-tail:])) if np.any(np.isfinite(C[-tail:])) else float("nan")
    if not c_max < c_tol:
        return None
    since = int(steps[-tail]) if steps.size == n else n - tail
    return Plateau(since, c_max, float(D[-tail]), float(D[-1]))


def build_step(gen: Generative, classify: Callable, optimizer: optax.GradientTransformation, *, K: int,
               L: int, n_alpha: int, n_beta: int, variant: str = "joint", fidelity_only: bool = False,
               classify_has_params: bool = True, chunk: int | None = None,
               sampler: str = "sobol") -> Callable:
    """One jitted optimisation step of ``-(C + lam D)``.

    Returns ``step(params, opt_state, clf_params, data, idx, lam, key) -> (params, opt_state,
    StepInfo)``: ``data`` ``(n, ...)`` stays on the device, ``idx`` ``(batch,)`` picks the batch,
    ``lam`` is a scalar array, ``key`` a PRNG key. ``clf_params`` is wrapped in
    ``stop_gradient``: the classifier is frozen. With ``fidelity_only`` the objective is ``D``
    alone (Algorithm 1, step 1; ``K`` may be 0). ``chunk``: decode and classify at most this
    many of the ``n_alpha * n_beta`` latents per batch (the same objective; see
    :func:`~jcausal.gce.information_flow`): smaller working sets stay in cache, while compile
    time grows with the chunk count (timings: ``benchmarks/gce_step.py``). ``sampler``: the
    latent sampler of ``C`` (``"sobol"``, ``"stratified"`` or ``"mc"``, see
    :func:`~jcausal.gce.information_flow`).
    """
    if hasattr(classify, "__jcausal_model__"):
        raise TypeError("build_step takes the pure classify(params, x) (the low-level layer): pass a "
                        "jcausal.wrap model to fit_explainer, or its w.apply with clf_params=w.params")
    if not fidelity_only:
        check_sampler(sampler, n_alpha, n_beta,
                      inner_dims=L + (K - 1 if variant == "independent_conditional" else 0))

    def objective(params, clf_params, batch, lam, key):
        k_c, k_d = jax.random.split(key)
        D = gen.fidelity(params, batch, k_d)
        if fidelity_only:
            C = jnp.zeros((), D.dtype)
            return -D, StepInfo(-D, C, D)
        cp = jax.lax.stop_gradient(clf_params) if classify_has_params else None
        C = information_flow(gen.decode, classify, k_c, K=K, L=L, n_alpha=n_alpha, n_beta=n_beta,
                             params=(params, cp), variant=variant,
                             noisy=gen.noisy, chunk=chunk, sampler=sampler)
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


def _check_request(K: int, L: int, lam: float, steps: int, settings: ExplainerSettings, loop: Loop) -> None:
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam = {lam}: the weight of the data term must be a finite number >= 0")
    require_int(steps, "steps")  # the settings and the loop were validated when built
    if settings.fidelity_only:
        if K < 0 or L < 0 or K + L < 1:
            raise ValueError(f"K = {K}, L = {L}: need K, L >= 0 and K + L >= 1")
    else:
        check_sizes(K, L, settings.n_alpha, settings.n_beta)
        inner = L + (K - 1 if settings.variant == "independent_conditional" else 0)
        check_sampler(settings.sampler, settings.n_alpha, settings.n_beta, inner_dims=inner)
        if settings.sampler != "mc" and K > 2 and settings.variant in ("joint", "joint_conditional"):
            warnings.warn(
                f"sampler={settings.sampler!r} with K = {K}: alpha is a Latin hypercube (each of the {K} "
                "coordinates stratified on its own, not the joint), so its error is nearer plain Monte "
                "Carlo's than for K <= 2; it stays unbiased. Raise n_alpha (measured on the linear-"
                "Gaussian map at K = 4: 25 x 25 stratified has a larger error than 100 x 25 plain Monte "
                "Carlo), or use variant='independent', whose single factors are stratified exactly",
                UserWarning, stacklevel=3)


def _training_rows(gen: Generative, data, batch_size: int):
    """The data term's rows on the device and the batch size (one dummy row for a map without
    an encoder, whose data term needs no data)."""
    if data is None:
        if gen.encode is not None:
            raise ValueError("data is None but the generative map is a VAE: pass training inputs")
        return jnp.zeros((1, 1), jnp.float32), 1
    data = jnp.asarray(data)
    if data.ndim < 1 or data.shape[0] < 1:
        raise ValueError(f"data must be a non-empty batch (n, ...), got shape {data.shape}")
    require_finite(data, "data", rows="inputs", fix="the data term D would be NaN from the first step")
    return data, min(int(batch_size), data.shape[0])


def fit_explainer(model: nnx.Module | Generative, classify: Callable, data=None, *, key: jax.Array, K: int,
                  L: int, lam: float, steps: int, classify_params: Any = None,
                  settings: ExplainerSettings | None = None, loop: Loop | None = None) -> FitResult:
    """Fit a generative map so that its first ``K`` latents explain ``classify`` (GCE eqn 3).

    Args:
      model: a :class:`~jcausal.gce.LinearGaussian`, a :class:`~jcausal.models.vae.VAE` (updated in
        place at the end), or a :class:`~jcausal.gce.Generative`.
      classify: ``classify(x)`` or, with ``classify_params``, ``classify(params, x)`` -> ``(M,)``
        class probabilities of ONE input, or a :func:`jcausal.wrap` model (its parameters are used;
        logits are softmaxed). Frozen: no gradient reaches its parameters.
      data: ``(n, ...)`` training inputs for the data term (``None`` for the linear-Gaussian map).
      key: PRNG key (batches and every Monte Carlo draw); the run is reproducible from it.
      K, L: causal and noncausal factors; lam: ``lambda >= 0``; steps: optimisation steps.
      classify_params: the classifier's parameters (an argument of every step, never a constant).
      settings: :class:`ExplainerSettings` (batch size, ``n_alpha``, ``n_beta``, optimizer, variant,
        ...); default the paper's.
      loop: :class:`~jcausal.models.Loop`: checkpoint (an atomic msgpack of the parameters plus
        ``.json`` with the step, C and D), history resolution, progress bar.

    Returns:
      :class:`~jcausal.models.FitResult` with ``state`` (alias ``params``) the generator's
      parameters and history ``step``, ``C``, ``D``, ``loss``. A NaN/inf loss stops training: the
      last finite parameters are kept (and checkpointed) and the step is reported in
      ``nonfinite_step``.

    Raises:
      ValueError: ``lam < 0``, ``K < 1`` (unless ``fidelity_only``), ``L < 0``, ``n_alpha`` or
        ``n_beta < 1``, ``steps < 1``, ``K + L`` not the map's latent size (both named), bad
        classifier outputs on a probe, or missing data for a VAE.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jcausal.gce import ExplainerSettings, LinearGaussian, fit_explainer
      >>> from jcausal.models import Loop
      >>> def probit(a, x):
      ...     p = jax.scipy.stats.norm.cdf(a @ x)
      ...     return jnp.stack([1 - p, p])
      >>> g = LinearGaussian(2, 1, 1, rngs=nnx.Rngs(0))
      >>> res = fit_explainer(g, probit, key=jax.random.key(0), K=1, L=1, lam=0.1, steps=3,
      ...                     classify_params=jnp.array([2.0, -1.0]),
      ...                     settings=ExplainerSettings(n_alpha=8, n_beta=4), loop=Loop(progress=False))
      >>> res.steps, len(res.history["C"])
      (3, 3)
    """
    settings = ExplainerSettings() if settings is None else settings
    loop = Loop() if loop is None else loop
    _check_request(K, L, lam, steps, settings, loop)
    gen = model if isinstance(model, Generative) else generative(model)
    _check_latent_size(model, gen, data, K, L)
    # a jcausal.wrap classifier: its apply (softmaxed when its output is logits) and its parameters,
    # which enter every step as arguments
    classify, classify_params = unwrap_model(classify, classify_params, split=False, probabilities=True)
    if not settings.fidelity_only:
        check_models(gen.decode, classify, K + L, params=(gen.params, classify_params), noisy=gen.noisy)
    data, bs = _training_rows(gen, data, settings.batch_size)
    tx = settings.optimizer or optax.adam(settings.learning_rate)
    step = build_step(gen, classify, tx, K=K, L=L, n_alpha=settings.n_alpha, n_beta=settings.n_beta,
                      variant=settings.variant, fidelity_only=settings.fidelity_only,
                      classify_has_params=classify_params is not None, chunk=settings.chunk,
                      sampler=settings.sampler)
    with jax.numpy_dtype_promotion("standard"):
        opt_state = tx.init(gen.params)
    lam_arr = jnp.asarray(lam, jnp.float32)

    def fit_step(state, rows, idx, k):
        new_params, new_opt, info = step(state[0], state[1], classify_params, rows, idx, lam_arr, k)
        return (new_params, new_opt), info._asdict()

    res = fit(fit_step, (gen.params, opt_state), data, key=key, steps=steps, batch_size=bs, loop=loop,
              save=lambda path, state, meta: _save_checkpoint(path, state[0], meta), desc=f"gce K={K} L={L}")
    params = res.state[0]
    found = None if settings.fidelity_only else find_plateau(res.history)
    if found is not None and res.steps >= 20:
        warnings.warn(
            f"C stayed below {found.C_max:.2g} nats from step {found.since} to the end "
            f"(D {found.D_start:.4g} -> {found.D_end:.4g}): the map carries no information to the "
            "classifier (a VAE decoder that ignores z sits on this plateau). Pretrain D alone first "
            "(settings.fidelity_only), use a Bernoulli likelihood for [0, 1] data, or lower lam",
            PlateauWarning, stacklevel=2)
    if isinstance(model, nnx.Module):
        nnx.update(model, params)
    return res._replace(state=params)
