"""Counterfactuals from a trained TRACER GAN (section 3.3, section 4.2): generation, the
classifier's checks, distances to the input and to its nearest training instance of the target
class, and actionable decoding (sparse, within constraints, several per input). The GAN itself
(networks, losses, training) is :mod:`jcausal.tracer.gan`; the exact nearest-neighbour index is
:mod:`jcausal.tracer.neighbours`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jcausal._src.batching import map_chunks
from jcausal._src.calling import Classifier
from jcausal._src.checks import class_indices
from jcausal._src.wrap import bind_classifier, wrap
from jcausal._src.xla import jit
from jcausal.tracer.constraints import (
    Decoding,
    actionable,
    check_immutable_in_range,
    make_constraints,
    out_of_range,
    pairwise_diversity,
)
from jcausal.tracer.gan import CounterfactualGAN, check_inputs
from jcausal.tracer.neighbours import NNIndex, nearest

__all__ = ["CounterfactualResult", "counterfactuals", "distinct_valid", "generate", "model_labels"]


# ----------------------------------------------------------------------------- generation and evaluation


def _batched(fn: Callable, params: Any, arrays: tuple, batch_size: int) -> np.ndarray:
    """``fn(params, *chunk)`` over fixed-size padded chunks (one compilation per function)."""
    if arrays[0].shape[0] == 0:
        return np.zeros((0,))
    return map_chunks(lambda *part: fn(params, *part), arrays, batch_size)


@jit(static_argnums=0)
def _gen_apply(g_def, params, x, onehot, noise=None):
    if noise is None:
        return jax.vmap(lambda xi, oi: nnx.merge(g_def, params)(xi, oi))(x, onehot)
    return jax.vmap(lambda xi, oi, ni: nnx.merge(g_def, params)(xi, oi, ni))(x, onehot, noise)


@jit(static_argnums=0)
def _prob_apply(clf: Classifier, params, x):
    return jax.vmap(lambda xi: clf.probs(params, xi))(x)


def generate(gan: CounterfactualGAN, x, targets, *, noise=None, batch_size: int = 256) -> np.ndarray:
    """Counterfactuals ``x*`` ``(n, *input_shape)`` of inputs ``x`` ``(n, ...)`` for ``targets`` ``(n,)``
    (no checks against a classifier; see :func:`counterfactuals`). ``noise``: ``None`` or
    ``(n, latent)`` added to the encoder's ``z_x`` (other counterfactuals of the same input)."""
    x = check_inputs(gan, x)
    t = class_indices(targets, gan.num_classes)
    if len(t) != x.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {len(t)} targets")
    if len(t) and (t.min() < 0 or t.max() >= gan.num_classes):
        raise ValueError(f"target classes must lie in [0, {gan.num_classes}), got [{t.min()}, {t.max()}]")
    g_def, g_params = nnx.split(gan.generator)
    fn = partial(_gen_apply, g_def)
    onehot = jnp.asarray(np.eye(gan.num_classes, dtype=np.float32)[t])
    if noise is None:
        return _batched(fn, g_params, (x, onehot), batch_size)
    noise = jnp.asarray(noise, jnp.float32)
    if noise.shape != (len(t), gan.latent):
        raise ValueError(f"noise must have shape ({len(t)}, {gan.latent}), got {tuple(noise.shape)}")
    return _batched(fn, g_params, (x, onehot, noise), batch_size)


class CounterfactualResult(NamedTuple):
    """Counterfactuals of a batch and how good they are (all numpy, leading axis ``n``).

    Fields:
      inputs, counterfactuals: ``(n, *input_shape)``; ``counterfactuals[i] = inputs[i]`` where
        ``unchanged[i]`` (the target already is the prediction and the input satisfies the
        constraints: the input is returned, as asked; an input of the target class with a feature
        outside its range is searched like any other and comes back within the ranges).
      targets, predictions, cf_predictions: ``(n,)`` ints (classifier on input / counterfactual).
      cf_target_probs: ``(n,)`` classifier probability of the target on the counterfactual.
      valid: ``(n,)`` bool, ``cf_predictions == targets``.
      unchanged: ``(n,)`` bool.
      dist_input: ``(n,)`` ``||x* - x||``; nn_rows: ``(n,)`` training row of ``x_nn`` (nearest
        instance of the target class to ``x``); dist_nn: ``(n,)`` ``||x* - x_nn||``;
        dist_input_nn: ``(n,)`` ``||x - x_nn||`` (what the nearest-neighbour answer would change).
      messages: one string per example ("" or why the input was returned or is invalid).
      features_changed: ``(n,)`` int, features of the counterfactual that differ from the input.
      alternatives: ``(n, num, *input_shape)``, the ``num`` counterfactuals of each input (the first
        is ``counterfactuals``); alternatives_valid: ``(n, num)`` bool (classifier-checked);
        diversity: ``(n,)`` their mean pairwise Euclidean distance (0 for ``num = 1``).
    """

    inputs: np.ndarray
    counterfactuals: np.ndarray
    targets: np.ndarray
    predictions: np.ndarray
    cf_predictions: np.ndarray
    cf_target_probs: np.ndarray
    valid: np.ndarray
    unchanged: np.ndarray
    dist_input: np.ndarray
    nn_rows: np.ndarray
    dist_nn: np.ndarray
    dist_input_nn: np.ndarray
    messages: tuple[str, ...]
    features_changed: np.ndarray | None = None
    alternatives: np.ndarray | None = None
    alternatives_valid: np.ndarray | None = None
    diversity: np.ndarray | None = None

    def summary(self) -> dict[str, Any]:
        """Validity rate (%), mean distances and features changed over the examples that were
        changed; with several counterfactuals per input, their mean diversity and the share of
        inputs whose counterfactuals are all valid and pairwise different."""
        ch = ~self.unchanged
        mean = (lambda a: float(np.mean(a[ch])) if ch.any() and a is not None else None)  # noqa: E731
        out = {"count": int(len(self.targets)), "changed": int(ch.sum()),
               "unchanged": int(self.unchanged.sum()),
               "validity_percent": 100.0 * float(np.mean(self.valid[ch])) if ch.any() else None,
               "mean_dist_input": mean(self.dist_input), "mean_dist_nn": mean(self.dist_nn),
               "mean_dist_input_nn": mean(self.dist_input_nn),
               "mean_features_changed": mean(self.features_changed)}
        if self.alternatives is not None and self.alternatives.shape[1] > 1:
            out.update(num=int(self.alternatives.shape[1]), mean_diversity=mean(self.diversity),
                       all_valid_distinct_percent=100.0 * float(np.mean(distinct_valid(self)[ch]))
                       if ch.any() else None)
        return out

    def to_dict(self, limit: int | None = None) -> dict[str, Any]:
        n = len(self.targets) if limit is None else min(limit, len(self.targets))
        return {"summary": self.summary(), "examples": [
            {"target": int(self.targets[i]), "prediction": int(self.predictions[i]),
             "cf_prediction": int(self.cf_predictions[i]), "valid": bool(self.valid[i]),
             "target_probability": float(self.cf_target_probs[i]), "unchanged": bool(self.unchanged[i]),
             "dist_input": float(self.dist_input[i]), "dist_nn": float(self.dist_nn[i]),
             "nn_row": int(self.nn_rows[i]), "message": self.messages[i],
             **({} if self.features_changed is None else {"features_changed": int(self.features_changed[i])})}
            for i in range(n)]}


def distinct_valid(result: CounterfactualResult) -> np.ndarray:
    """``(n,)`` bool: every counterfactual of the input is valid and no two are equal."""
    a = result.alternatives.reshape(*result.alternatives.shape[:2], -1)
    k = a.shape[1]
    same = np.zeros(len(a), bool)
    for i in range(k):
        for j in range(i + 1, k):
            same |= np.all(a[:, i] == a[:, j], -1)
    return result.alternatives_valid.all(1) & ~same


def _probs(bound: tuple[Classifier, Any], x: jax.Array, batch_size: int) -> np.ndarray:
    """Class probabilities ``(n, k)`` of the classifier bound by :func:`bind_classifier`."""
    clf, params = bound
    return _batched(partial(_prob_apply, clf), params, (x,), batch_size)


def counterfactuals(gan: CounterfactualGAN, model, x, targets, index: NNIndex, *,
                    x_train=None, batch_size: int = 256, num: int = 1, decoding: Decoding | None = None,
                    key: jax.Array | None = None, on_unreachable: str = "raise",
                    **constraints) -> CounterfactualResult:
    """Counterfactuals of ``x`` for ``targets`` with validity and distances (section 3.3), made
    actionable (``jcausal.tracer.constraints``): sparse, within constraints, several per input.

    Args:
      gan: a trained :class:`CounterfactualGAN`; model: the classifier of ONE input (anything
        :func:`jcausal.wrap` takes: Flax NNX or Linen, Equinox, Keras 3, PyTorch, a function, or a
        wrapped model; logits or probabilities, as its ``output`` says); x: ``(n, *input_shape)``;
        targets: ``(n,)`` desired classes.
      index: :class:`NNIndex` of the training data (for ``x_nn``; its per-feature min and max bound
        the changes); x_train: the training inputs (rows of ``index.rows``; default: from the index).
      **constraints: the keywords of :func:`~jcausal.tracer.make_constraints`: ``immutable``
        (features that must keep the input's value, indices or names), ``ranges`` (allowed
        ``{feature: (low, high)}`` in the data's units), ``feature_names``, ``scaler`` (converts the
        ranges). Immutable features equal the input's bitwise; every other feature lies in its range
        (by projection).
      num: counterfactuals per input (``alternatives``; ``counterfactuals`` is the first).
      decoding: :class:`~jcausal.tracer.Decoding`; default: sparse for tabular GANs,
        ``Decoding.dense()`` (the paper's) for images. key: PRNG key for ``num > 1`` with dense
        decoding (latent noise).
      on_unreachable: with constraints, inputs whose target no bounded search reaches raise
        ``"raise"`` (a ValueError naming them) or come back invalid with a message (``"keep"``).

    Raises:
      ValueError: wrong input shape, a target outside ``[0, k)``, a target class with no training
        instances, ``num < 1``, a bad constraint (unknown feature, ``low > high``, an immutable
        feature whose range excludes the input's value), an unreachable target (see above).
    """
    if int(num) != num or num < 1:
        raise ValueError(f"num = {num}: the number of counterfactuals per input must be an integer >= 1")
    if on_unreachable not in ("raise", "keep"):
        raise ValueError(f"on_unreachable = {on_unreachable!r}: choose 'raise' or 'keep'")
    num = int(num)
    x = check_inputs(gan, x)
    t = class_indices(targets, gan.num_classes)
    k = gan.num_classes
    if len(t) != x.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {len(t)} targets")
    if len(t) and (t.min() < 0 or t.max() >= k):
        raise ValueError(f"target classes must lie in [0, {k}), got [{t.min()}, {t.max()}]")
    empty = sorted({int(c) for c in t if index.counts[c] == 0})
    if empty:
        raise ValueError(f"class(es) {empty} have no training instances: the GAN never learnt them")
    xs = np.asarray(x)
    d = xs[0].size
    model = wrap(model, xs[0], split=False)
    cons = make_constraints(d, **constraints)
    check_immutable_in_range(cons, xs)
    decoding = (Decoding() if gan.kind == "tabular" else Decoding.dense()) if decoding is None else decoding
    bound = bind_classifier(model)  # once: both probability passes below use it
    probs = _probs(bound, x, batch_size)
    if probs.shape[1] != k:
        raise ValueError(f"the classifier has {probs.shape[1]} outputs, the GAN {k} classes")
    pred = probs.argmax(1)
    unchanged = (pred == t) & ~out_of_range(cons, xs)  # of the target class AND within the constraints
    alts = np.repeat(xs[:, None], num, 1)
    todo = np.flatnonzero(~unchanged)
    real = np.asarray(index.rows).reshape(-1) >= 0
    # the training inputs (for the data's range in sparse decoding and x_nn without x_train)
    pts = np.asarray(index.points).reshape(-1, d)[real] if decoding.sparse or x_train is None else None
    if len(todo):
        def propose(noise):
            return generate(gan, xs[todo], t[todo], noise=noise, batch_size=batch_size)

        act = actionable(bound, propose, xs[todo].reshape(len(todo), d), t[todo], cons, decoding,
                         input_shape=gan.input_shape, num=num, latent=gan.latent, key=key,
                         domain=(pts.min(0), pts.max(0)) if decoding.sparse else None)
        alts[todo] = act.counterfactuals.reshape(len(todo), num, *xs.shape[1:])
        lost = todo[~act.valid[:, 0]]
        if len(lost) and cons.constrained and decoding.repair_steps > 0 and on_unreachable == "raise":
            fixed = [cons.names[j] for j in cons.immutable]
            raise ValueError(f"no counterfactual reaches the target for input(s) {_rows(lost, t)} with "
                             f"{'features ' + ', '.join(fixed) + ' fixed' if fixed else 'no feature fixed'}"
                             f" and the given ranges ({decoding.repair_steps} projected gradient steps "
                             "found no valid point); relax the constraints or pass on_unreachable='keep'")
    cf = alts[:, 0].copy()
    aprobs = _probs(bound, jnp.asarray(alts.reshape(-1, *xs.shape[1:])), batch_size).reshape(len(t), num, k)
    alt_valid = aprobs.argmax(-1) == t[:, None]
    cprobs, cpred = aprobs[:, 0], aprobs[:, 0].argmax(1)
    rows, d_in_nn = nearest(index, xs, t)
    if x_train is None:
        where = {int(r): i for i, r in enumerate(np.asarray(index.rows).reshape(-1)[real])}
        x_nn = pts[[where[int(r)] for r in rows]]
    else:
        x_nn = np.asarray(x_train, np.float32).reshape(-1, d)[rows]
    flat_cf = cf.reshape(len(cf), -1)
    d_in = np.sqrt(np.sum(np.square(flat_cf - xs.reshape(len(xs), -1)), 1))
    d_nn = np.sqrt(np.sum(np.square(flat_cf - x_nn), 1))
    msgs = [f"target {int(ti)} equals the current prediction: the input is returned unchanged"
            if u else "" for ti, u in zip(t, unchanged)]
    for i in np.flatnonzero(~unchanged & ~(cpred == t)):
        msgs[i] = "no valid counterfactual found" + (" under the constraints" if cons.constrained else "")
    n_changed = np.sum(flat_cf != xs.reshape(len(xs), -1), 1)
    return CounterfactualResult(xs, cf, t, pred, cpred, cprobs[np.arange(len(t)), t], cpred == t, unchanged,
                                d_in, rows, d_nn, d_in_nn, tuple(msgs), n_changed, alts, alt_valid,
                                pairwise_diversity(alts))


def _rows(rows, t, limit: int = 20) -> str:
    shown = ", ".join(f"{int(r)} (target {int(t[r])})" for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def model_labels(model, x, *, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's classes and probabilities ``(n,)``, ``(n, k)`` of inputs ``x`` ``(n, ...)``
    (``model``: anything :func:`jcausal.wrap` takes, of ONE input).

    Pass these classes to :func:`~jcausal.tracer.train_gan` / :func:`~jcausal.tracer.nn_index`:
    ``y*`` is a target *model output* (section 3.3), so ``x_nn`` should be a training instance the
    classifier assigns to ``y*``; a ground-truth label's nearest instance often lies across the
    decision boundary, and validity drops (the README gives the measurements). Keeping only
    confident instances (``probs.max(1) >= 0.99``) moves ``x_nn`` further from the boundary.
    """
    x = jnp.asarray(x, jnp.float32)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch (n, ...) of inputs, got shape {tuple(x.shape)}")
    probs = _probs(bind_classifier(wrap(model, x[0], split=False)), x, batch_size)
    return probs.argmax(1), probs
