"""The GCE paper's MNIST experiment (section 5, appendix E.1).

Train (or load) the Table 1 CNN on a subset of digit classes, train the Table 2 VAE explainer on
``C + lambda D`` with the CNN frozen, and evaluate: per-factor information flow (Figure 5a),
accuracy when each factor is resampled (Figure 5b) and latent sweeps (Figure 3). Used by the
``jcausal gce mnist`` command, the GCE notebook, the step benchmarks and the slow test. The
defaults of :class:`GCEMnistConfig` are chosen by measurement to answer in minutes on a small CPU
(``benchmarks/results/gce_mnist_seeds.json``); :meth:`GCEMnistConfig.paper` gives the authors'
settings (8000 steps of plain Monte Carlo: hours on a small CPU).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from flax import nnx

from jcausal._src.checks import require_int
from jcausal.data import load_mnist
from jcausal.gce.evaluate import AccuracyDrop, FineSweep, Sweep, fine_sweeps, latent_sweeps, resample_accuracy
from jcausal.gce.models import Generative, conv_vae, generative
from jcausal.gce.objectives import factor_flows
from jcausal.gce.train import ExplainerSettings, Plateau, find_plateau, fit_explainer
from jcausal.models import GCECNN, FitResult, Loop, accuracy, functional, load, save
from jcausal.models import train as train_model
from jcausal.models.checkpoint import CheckpointMismatchError

__all__ = ["Classifier", "DigitExplanation", "GCEMnistConfig", "load_mnist_classes", "fit_classifier",
           "classifier_probs", "explain_digits", "summary"]


class Classifier(NamedTuple):
    """The frozen classifier: ``apply(params, x)`` logits of ONE image, its ``params``, and its
    validation accuracy."""

    apply: Any
    params: nnx.State
    val_accuracy: float


class DigitExplanation(NamedTuple):
    """Everything the MNIST experiment produces (arrays are numpy)."""

    generative: Generative
    params: nnx.State
    fit: FitResult
    flows: np.ndarray  # (K + L,) nats
    accuracy: AccuracyDrop
    sweep: Sweep
    K: int
    L: int
    fine: FineSweep | None = None  # the first causal factor across each decision change (Figure 14)
    plateau: Plateau | None = None  # C stayed near 0 at the end of training (see find_plateau)


@dataclasses.dataclass(frozen=True)
class GCEMnistConfig:
    """Settings of the explainer and its evaluation (validated when built).

    The defaults answer on MNIST 3/8 in minutes on a 2-core CPU (measured on three seeds:
    ``benchmarks/results/gce_mnist_seeds.json``): pretraining ``D`` alone, a Bernoulli likelihood,
    a sharp initial posterior and the randomized quasi-Monte Carlo estimator with a fifth of the
    paper's decodes.
    :meth:`paper` gives the authors' settings.

    Fields:
      K, L, lam, steps, batch_size, n_alpha, n_beta, learning_rate: the objective and its
        optimisation (paper: 1, 7, 0.05, 8000, 64, 100, 25, 5e-4).
      n_flow: ``(n_outer, n_inner)`` samples of each per-factor flow.
      n_sweep: validation images swept: coarse sweeps of every factor, and the fine sweep of the
        first causal factor (Figure 14) on images whose decision it changes, the classes taking
        turns.
      pretrain_steps: steps of ``D`` alone before the joint objective (0 in the paper). ``D``
        steps are cheap, and a VAE that already uses its latents lets ``C`` act at once.
      init_log_var: initial bias of the encoder's log-variance head (see
        :class:`jcausal.models.vae.ConvEncoder`; 0 in the paper).
      likelihood: the VAE's ``log p(x | z)`` (:func:`jcausal.models.vae.log_likelihood`):
        ``"sse"`` as in the authors' code, or ``"bernoulli"``, which left the plateau where the
        decoder ignores ``z`` sooner and for more keys.
      chunk: latents decoded and classified per batch in each step (the same objective; see
        :func:`jcausal.gce.build_step`).
      checkpoint_every: steps between checkpoints of the explainer.
      sampler: latent sampler of the estimate of ``C`` (``"sobol"``, ``"stratified"`` or the
        paper's ``"mc"``; see :func:`jcausal.gce.information_flow`).
    """

    K: int = 1
    L: int = 7
    lam: float = 0.05
    steps: int = 500
    batch_size: int = 64
    n_alpha: int = 128
    n_beta: int = 4
    learning_rate: float = 1e-3
    n_flow: tuple[int, int] = (100, 50)
    n_sweep: int = 4
    pretrain_steps: int = 300
    init_log_var: float = -4.0
    likelihood: str = "bernoulli"
    chunk: int | None = 256
    checkpoint_every: int = 500
    sampler: str = "sobol"

    def __post_init__(self):
        for name in ("K", "steps", "batch_size", "n_alpha", "n_beta", "n_sweep", "checkpoint_every"):
            require_int(getattr(self, name), name)
        require_int(self.L, "L", minimum=0)
        require_int(self.pretrain_steps, "pretrain_steps", minimum=0)
        require_int(self.chunk, "chunk", none_ok=True)
        if len(self.n_flow) != 2:
            raise ValueError(f"n_flow = {self.n_flow!r}: need (n_outer, n_inner)")
        for name, v in zip(("n_flow[0]", "n_flow[1]"), self.n_flow):
            require_int(v, name)
        if not (np.isfinite(self.lam) and self.lam >= 0 and np.isfinite(self.learning_rate)
                and self.learning_rate > 0):
            raise ValueError(f"need lam >= 0 and learning_rate > 0, got {self.lam}, {self.learning_rate}")

    @classmethod
    def paper(cls, **changes) -> GCEMnistConfig:
        """The authors' settings (appendix E.1 and their code): 8000 steps of plain Monte Carlo at
        ``N_alpha = 100``, ``N_beta = 25``, Adam 5e-4, SSE likelihood, no pretraining; ``changes``
        override fields."""
        paper = dict(steps=8000, n_alpha=100, n_beta=25, learning_rate=5e-4, pretrain_steps=0,
                     init_log_var=0.0, likelihood="sse", sampler="mc")
        return cls(**{**paper, **changes})


def load_mnist_classes(data_dir: str | os.PathLike | None, classes=(3, 8), *, seed: int = 0,
                val_fraction: float = 0.2):
    """MNIST images of ``classes`` as ``(n, 28, 28, 1)`` float32 in [0, 1], labels ``0..M-1``,
    split into train/validation (see :func:`jcausal.data.load_mnist`)."""
    d = load_mnist(data_dir, classes=tuple(classes), val_fraction=val_fraction, seed=seed)
    return d._replace(x_train=d.x_train[..., None], x_val=d.x_val[..., None])


def classifier_probs(apply):
    """``classify(params, x) = softmax(apply(params, x))``: class probabilities of ONE input."""

    def classify(params, x):
        return jax.nn.softmax(apply(params, x))

    return classify


def fit_classifier(data, *, key: jax.Array, epochs: int = 3, checkpoint: str | Path | None = None,
                   progress: bool = True, metadata: dict | None = None) -> Classifier:
    """The Table 1 CNN trained with SGD (momentum 0.5, learning rate 0.1, batch 64; appendix E.1),
    or loaded from ``checkpoint`` when that file exists (it is written after training, recording
    ``metadata``)."""
    M = len(data.classes)
    model = GCECNN(M, rngs=nnx.Rngs(int(jax.random.randint(key, (), 0, 2**30))))
    ck = Path(checkpoint) if checkpoint is not None else None
    loaded = False
    if ck is not None and ck.is_file():
        try:
            load(ck, model)
            loaded = True
        except CheckpointMismatchError:
            loaded = False
    if not loaded:
        train_model(model, data.x_train, data.y_train, key=key, epochs=epochs, batch_size=64,
                    optimizer=optax.sgd(0.1, momentum=0.5), progress=progress)
        if ck is not None:
            save(ck, model, metadata=metadata)
    apply, params = functional(model)
    return Classifier(apply, params, accuracy(apply, params, data.x_val, data.y_val))


def explain_digits(data, classifier: Classifier, *, key: jax.Array,
                   config: GCEMnistConfig | None = None, checkpoint: str | Path | None = None,
                   progress: bool = True) -> DigitExplanation:
    """Train the Table 2 VAE explainer of ``classifier`` and evaluate it on the validation set.

    Args:
      data: from :func:`load_mnist_classes`; classifier: from :func:`fit_classifier`.
      key: PRNG key (initialisation, training, evaluation).
      config: the settings (default: ``GCEMnistConfig()``, the paper's).
      checkpoint, progress: see :func:`jcausal.gce.fit_explainer` (``checkpoint_every`` is in ``config``).

    Returns:
      :class:`DigitExplanation` of the ``config.K + config.L`` latent factors.
    """
    c = GCEMnistConfig() if config is None else config
    K, L = c.K, c.L
    k_init, k_fit, k_flow, k_acc = jax.random.split(key, 4)
    vae = conv_vae(K + L, rngs=nnx.Rngs(int(jax.random.randint(k_init, (), 0, 2**30))),
                   init_log_var=c.init_log_var, likelihood=c.likelihood)
    classify = classifier_probs(classifier.apply)
    if c.pretrain_steps:
        fit_explainer(vae, classify, data.x_train, key=jax.random.fold_in(k_fit, 1), K=K, L=L, lam=1.0,
                      steps=c.pretrain_steps, loop=Loop(progress=progress),
                      settings=ExplainerSettings(batch_size=c.batch_size, learning_rate=c.learning_rate,
                                                 fidelity_only=True))
    settings = ExplainerSettings(batch_size=c.batch_size, n_alpha=c.n_alpha, n_beta=c.n_beta,
                                 learning_rate=c.learning_rate, chunk=c.chunk, sampler=c.sampler)
    fit = fit_explainer(vae, classify, data.x_train, key=k_fit, K=K, L=L, lam=c.lam, steps=c.steps,
                        classify_params=classifier.params, settings=settings,
                        loop=Loop(checkpoint=checkpoint, checkpoint_every=c.checkpoint_every,
                                  progress=progress))
    gen = generative(vae)
    params = (fit.params, classifier.params)
    flows = factor_flows(gen.decode, classify, k_flow, K=K, L=L, n_outer=c.n_flow[0], n_inner=c.n_flow[1],
                         params=params)
    acc = resample_accuracy(gen.encode, gen.decode, classify, k_acc, data.x_val, data.y_val,
                            params=params)
    sweep = latent_sweeps(gen.encode, gen.decode, classify, data.x_val[:c.n_sweep], params=params)
    fine = _crossing(fine_sweeps(gen.encode, gen.decode, classify, _one_per_class(data, FINE_POOL),
                                 params=params), c.n_sweep)
    to_np = lambda t: jax.tree.map(np.asarray, t)  # noqa: E731
    return DigitExplanation(gen, fit.params, fit, np.asarray(flows), to_np(acc), to_np(sweep), K, L,
                            to_np(fine), find_plateau(fit.history))


FINE_POOL = 64  # validation images searched for decision changes along the first causal factor


def _crossing(fine: FineSweep, n: int) -> FineSweep:
    """The first ``n`` rows of ``fine`` whose window changes the classifier's decision (Figure 14
    shows transitions), topped up with the others when fewer than ``n`` do."""
    pred = np.asarray(fine.probs).argmax(-1)
    crossed = pred[:, 0] != pred[:, -1]
    rows = np.concatenate([np.flatnonzero(crossed), np.flatnonzero(~crossed)])[:n]
    return fine._replace(images=fine.images[rows], probs=fine.probs[rows], offsets=fine.offsets[rows])


def _one_per_class(data, n: int) -> np.ndarray:
    """``n`` validation images, the classes taking turns (so each class's transitions appear)."""
    y = np.asarray(data.y_val)
    order = np.concatenate([np.flatnonzero(y == m) for m in range(len(data.classes))])
    rank = np.concatenate([np.arange((y == m).sum()) for m in range(len(data.classes))])
    pick = order[np.lexsort((y[order], rank))][:n]
    return np.asarray(data.x_val)[pick]


def summary(exp: DigitExplanation, classifier: Classifier) -> dict:
    """A JSON-ready summary: flows, accuracies, training curve ends, settings."""
    acc = exp.accuracy
    names = [f"alpha{i + 1}" for i in range(exp.K)] + [f"beta{i + 1}" for i in range(exp.L)]
    return {
        "K": exp.K, "L": exp.L,
        "steps": exp.fit.steps, "nonfinite_step": exp.fit.nonfinite_step,
        "plateau": exp.plateau._asdict() if exp.plateau is not None else None,
        "classifier_val_accuracy": float(classifier.val_accuracy),
        "final_C": exp.fit.history["C"][-1] if exp.fit.history["C"] else None,
        "final_D": exp.fit.history["D"][-1] if exp.fit.history["D"] else None,
        "flow_nats": dict(zip(names, map(float, exp.flows))),
        "accuracy": {"original": float(acc.original), "reencoded": float(acc.reencoded),
                     "resampled": dict(zip(names, map(float, acc.resampled)))},
        "fine_sweep": fine_sweep_record(exp.fine) if exp.fine is not None else None,
    }


def fine_sweep_record(fine: FineSweep) -> dict:
    """What the fine sweep shows, in numbers: its factor, the inputs swept, the classes, and how many
    of the inputs' windows change the classifier's decision (first against last image)."""
    probs = np.asarray(fine.probs)  # (n, V, M)
    pred = probs.argmax(-1)
    return {"factor": int(fine.factor), "inputs": int(probs.shape[0]), "classes": int(probs.shape[-1]),
            "decision_changes": int((pred[:, 0] != pred[:, -1]).sum()),
            "max_probability_sum_error": float(np.abs(probs.sum(-1) - 1).max()) if probs.size else 0.0}
