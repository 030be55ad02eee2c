"""TRACER's counterfactual experiment (section 3.4, appendix A): a counterfactual GAN for the MNIST
AlexNet or the breast cancer MLP, the validity and distances of its counterfactuals, and the
contrastive analysis of the first misclassified test input (``jcausal tracer counterfactual``).

``y*`` is a model output: ``x_nn`` is drawn from the training inputs the classifier assigns to ``y*``
and, with ``min_confidence``, assigns with at least that probability (further from the boundary).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from jcausal.experiments.tracer_tasks import MNIST_SIDE, Task

__all__ = ["GANSetup", "NoConfidentInputs", "confident_inputs", "gan_setup", "fit_gan", "training_summary",
           "evaluate", "describe"]


class GANSetup(NamedTuple):
    """The counterfactual GAN of one task and its training settings.

    Fields:
      gan: the untrained :class:`jcausal.tracer.CounterfactualGAN`; index: the nearest-neighbour index
        of the kept training inputs; x_train, y_model: those inputs and their model labels.
      steps, lam, batch_size: GAN training; distance: ``"squared"`` (images: the Euclidean distance
        collapsed digits to blank images) or ``"euclidean"``; mnist: the task is MNIST; k: classes.
    """

    gan: Any
    index: Any
    x_train: Any
    y_model: Any
    steps: int
    lam: float
    batch_size: int
    distance: str
    mnist: bool
    k: int


class NoConfidentInputs(ValueError):
    """No training input reaches the confidence asked for; ``top`` is the largest probability."""

    def __init__(self, min_confidence: float, top: float):
        super().__init__(f"no training input reaches min_confidence {min_confidence} (the most confident "
                         f"is {top:.3f})")
        self.top = top


def confident_inputs(model, x_train, min_confidence: float):
    """The training inputs the classifier assigns with probability ``>= min_confidence``.

    Returns:
      ``(keep, y_model, p_max)``: ``(n,)`` bool mask, ``(n,)`` model labels and the largest probability.
    """
    from jcausal.tracer import model_labels

    y_model, p_tr = model_labels(model, x_train)
    return p_tr.max(1) >= min_confidence, y_model, float(p_tr.max())


def gan_setup(model, task: Task, *, mnist: bool, seed: int, min_confidence: float, steps: int | None = None,
              lam: float | None = None) -> GANSetup:
    """The GAN of ``task`` over the training inputs kept by :func:`confident_inputs`.

    Raises:
      NoConfidentInputs: no training input reaches ``min_confidence``.
    """
    from flax import nnx

    from jcausal.tracer import CounterfactualGAN, nn_index

    k = 10 if mnist else 2
    keep, y_model, top = confident_inputs(model, task.x_tr, min_confidence)
    if not keep.any():
        raise NoConfidentInputs(min_confidence, top)
    x_tr, y_model = task.x_tr[keep], y_model[keep]
    shape = (MNIST_SIDE, MNIST_SIDE, 1) if mnist else (x_tr.shape[1],)
    gan = CounterfactualGAN(k, input_shape=shape, kind="image" if mnist else "tabular",
                            latent=16 if mnist else 8, channels=16, rngs=nnx.Rngs(seed))
    return GANSetup(gan, nn_index(x_tr, y_model, k), x_tr, y_model, steps or (3000 if mnist else 1500),
                    0.9 if lam is None else lam, 32 if mnist else 64, "squared" if mnist else "euclidean",
                    mnist, k)


def fit_gan(setup: GANSetup, *, seed: int, checkpoint=None, progress: bool = True):
    """Train ``setup.gan`` in place (:func:`jcausal.tracer.train_gan`); returns its training result."""
    import jax

    from jcausal.models import Loop
    from jcausal.tracer import GANObjective, train_gan

    s = setup
    return train_gan(s.gan, s.x_train, s.y_model, key=jax.random.key(seed), steps=s.steps, lam=s.lam,
                     index=s.index, batch_size=s.batch_size, objective=GANObjective(distance=s.distance),
                     loop=Loop(checkpoint=checkpoint, log_every=10, progress=progress))


def training_summary(setup: GANSetup, res) -> dict:
    """JSON-ready summary of a GAN training run ``res`` (from :func:`fit_gan`)."""
    h = res.history
    return {"steps": res.steps, "training_inputs": int(len(setup.x_train)),
            "nonfinite_step": res.nonfinite_step, "lam": setup.lam, "distance": setup.distance,
            "final_g_loss": h["g_loss"][-1] if h["g_loss"] else None,
            "final_dist": h["dist"][-1] if h["dist"] else None}


def evaluate(model, setup: GANSetup, task: Task, *, seed: int, count: int = 200, target: int | None = None,
             num: int = 1, constraints: dict | None = None, contrastive_kw: dict | None = None,
             on_unreachable: str = "raise"):
    """Counterfactuals of the first ``count`` test inputs and the contrastive analysis of the first
    misclassified one.

    Args:
      model: the classifier; setup: from :func:`gan_setup` (its GAN trained).
      task: the :class:`~jcausal.experiments.tracer_tasks.Task`.
      seed: targets and sampling; count: test inputs; target: one target class for all (default: a
        random class other than the prediction); num: counterfactuals per input.
      constraints: keyword arguments of :func:`jcausal.tracer.counterfactuals` (tabular).
      contrastive_kw: keyword arguments of :func:`jcausal.tracer.contrastive` (``eps``, ``patch`` ...).
      on_unreachable: as :func:`jcausal.tracer.counterfactuals` (``"keep"``: an unreachable input
        comes back invalid with a message; ``"raise"``: the run stops naming it).

    Returns:
      ``(result, summary, figures)``: the :class:`jcausal.tracer.CounterfactualResult`, a JSON-ready
      summary and the figures (file name -> Figure).
    """
    import jax

    from jcausal.plot.counterfactual import plot_counterfactuals
    from jcausal.tracer import counterfactuals, model_labels

    s, kw = setup, constraints or {}
    n = min(count, len(task.x_val))
    xs = task.x_val[:n]
    pred, _ = model_labels(model, xs)
    rng = np.random.default_rng(seed)
    targets = np.full(n, target) if target is not None else (pred + rng.integers(1, s.k, n)) % s.k
    r = counterfactuals(s.gan, model, xs, targets, s.index, x_train=s.x_train, num=num,
                        key=jax.random.key(seed), on_unreachable=on_unreachable, **kw)
    pfx = f"counterfactual_{'mnist' if s.mnist else 'tabular'}"
    summary = {"immutable": kw.get("immutable"), "ranges": kw.get("ranges"), "num": num,
               **r.to_dict(limit=20)}
    if s.mnist:
        figs = {f"{pfx}_grid.png": plot_counterfactuals(r, n=10)}
    else:
        figs = _changes(r, task, n, summary, pfx)
    summary["contrastive"] = _contrastive(model, s, task, contrastive_kw or {}, figs, pfx)
    return r, summary, figs


def _changes(r, task: Task, n: int, summary: dict, pfx: str) -> dict:
    """Tabular: the changed features of the first 20 counterfactuals (into ``summary``) and a figure."""
    from jcausal.plot.counterfactual import plot_feature_changes
    from jcausal.tracer import feature_changes

    names, scaler = list(task.data.feature_names), task.data.scaler
    summary["changed_features"] = [
        [c._asdict() for c in feature_changes(r.inputs[i], r.counterfactuals[i], scaler, names, top=8)]
        for i in range(min(n, 20))]
    return {f"{pfx}_changes.png": plot_feature_changes(
        feature_changes(r.inputs[0], r.counterfactuals[0], scaler, names, top=12))}


def _contrastive(model, s: GANSetup, task: Task, kw: dict, figs: dict, pfx: str) -> dict | None:
    """The contrastive analysis of the first misclassified test input (its figure into ``figs``)."""
    from jcausal.plot.counterfactual import plot_contrastive
    from jcausal.tracer import contrastive, model_labels

    all_pred, _ = model_labels(model, task.x_val)
    wrong = np.flatnonzero(all_pred != np.asarray(task.y_val))
    if not len(wrong):
        return None
    i = int(wrong[0])
    if s.mnist:
        kw = {"layers": ["convs.*", "fcs.*"], **kw}
    else:
        kw = {"layers": ["layers.*"], "baseline_kind": "mean",
              "value": np.asarray(task.x_tr.mean(0), np.float32), **kw}
    c = contrastive(model, s.gan, task.x_val[i], int(task.y_val[i]), s.index, x_train=s.x_train, **kw)
    names = list(task.data.feature_names) if task.data is not None else None
    figs[f"{pfx}_contrastive.png"] = plot_contrastive(c, feature_names=names)
    return {"index": i, **c.to_dict()}


def describe(result, summary: dict, num: int) -> list[str]:
    """The lines a run prints: how many counterfactuals, validity and distances, the contrastive case."""
    s = result.summary()
    lines = [f"{s['changed']} counterfactuals ({s['unchanged']} inputs already of the target returned "
             "unchanged)"]
    if s["changed"]:
        lines.append(f"validity {s['validity_percent']:.1f}%; mean ||x* - x|| {s['mean_dist_input']:.3f}, "
                     f"||x* - x_nn|| {s['mean_dist_nn']:.3f} (||x - x_nn|| {s['mean_dist_input_nn']:.3f}); "
                     f"features changed {s.get('mean_features_changed', float('nan')):.2f} on average")
        if num > 1:
            lines.append(f"{num} counterfactuals per input: all valid and distinct for "
                         f"{s.get('all_valid_distinct_percent', float('nan')):.1f}% of inputs, mean pairwise "
                         f"distance {s.get('mean_diversity', float('nan')):.3f}")
    if summary["contrastive"]:
        cd = summary["contrastive"]
        lines.append(f"contrastive: test input {cd['index']} (label {cd['label']}, predicted "
                     f"{cd['prediction']}) -> counterfactual predicted {cd['cf_prediction']}")
    return lines
