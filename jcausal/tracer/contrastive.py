"""Contrastive analysis of a misclassification (TRACER section 4.2, appendix A, Figures 5-6), and the
per-feature changes of tabular counterfactuals in original units.

For a misclassified input ``x`` (true class ``y``, predicted ``y_hat != y``) the counterfactual GAN
gives ``x*`` for the target ``y``; TRACER's local analysis is run on both (``x`` explained for
``y_hat``, ``x*`` for the class the classifier assigns it), so their causal graphs and signed
per-node contributions can be compared side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from jcausal._src.checks import require_finite
from jcausal._src.wrap import wrap
from jcausal.tracer.activations import layer_outputs
from jcausal.tracer.counterfactual import CounterfactualGAN, CounterfactualResult, NNIndex, counterfactuals
from jcausal.tracer.explain import TracerResult, trace
from jcausal.tracer.gan import check_inputs

__all__ = ["Contrastive", "contrastive", "FeatureChange", "feature_changes"]


class Contrastive(NamedTuple):
    """A misclassified input, its counterfactual for the true class, and both TRACER analyses.

    Fields:
      x, counterfactual, difference: ``input_shape`` arrays (``difference = counterfactual - x``).
      label: the true class (the counterfactual's target); prediction: the classifier's class of
        ``x``; cf_prediction: its class of the counterfactual; valid: ``cf_prediction == label``.
      dist_input, dist_nn: ``||x* - x||`` and ``||x* - x_nn||``.
      original, counterfactual_explanation: TRACER's :class:`~jcausal.tracer.TracerResult` of ``x`` (for
        ``prediction``) and of ``x*`` (for ``cf_prediction``).
    """

    x: np.ndarray
    counterfactual: np.ndarray
    difference: np.ndarray
    label: int
    prediction: int
    cf_prediction: int
    valid: bool
    dist_input: float
    dist_nn: float
    original: TracerResult
    counterfactual_explanation: TracerResult

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "prediction": self.prediction, "cf_prediction": self.cf_prediction,
                "valid": self.valid, "dist_input": self.dist_input, "dist_nn": self.dist_nn,
                "same_graph": self.original.graph.groups == self.counterfactual_explanation.graph.groups,
                "original": self.original.to_dict(),
                "counterfactual": self.counterfactual_explanation.to_dict()}


def contrastive(model, gan: CounterfactualGAN, x, label: int, index: NNIndex, *,
                x_train=None, layers=None, **explain_kwargs) -> Contrastive:
    """Counterfactual of a misclassified ``x`` for its true ``label`` and the TRACER analysis of both.

    Args:
      model: the classifier of ONE input (anything :func:`jcausal.wrap` takes; wrapped once here);
        gan: a trained
        :class:`CounterfactualGAN`; x: ONE input (``gan.input_shape`` or flattened); label: its
        true class; index, x_train: as for :func:`~jcausal.tracer.counterfactuals`.
      layers: TRACER layer filter; explain_kwargs: passed to :func:`~jcausal.tracer.trace`
        (``patch``, ``stride``, ``eps``, ``baseline_kind``, ``value`` ...).

    Raises:
      ValueError: ``x`` is classified correctly (nothing to contrast), or as for
        :func:`~jcausal.tracer.counterfactuals` (shape, label range, class without instances).
    """
    x = np.asarray(check_inputs(gan, np.asarray(x)[None])[0])
    model = wrap(model, x, split=False)
    res: CounterfactualResult = counterfactuals(gan, model, x[None], [int(label)], index, x_train=x_train)
    if res.unchanged[0]:
        raise ValueError(f"the input is classified correctly as {int(label)}: nothing to contrast "
                         "(pass a misclassified input)")
    xs, cf = res.inputs[0], res.counterfactuals[0]
    lo = layer_outputs(model, xs, layers=layers)
    ex_x = trace(lo, xs, target=int(res.predictions[0]), **explain_kwargs)
    ex_cf = trace(lo, cf, target=int(res.cf_predictions[0]), **explain_kwargs)
    return Contrastive(xs, cf, cf - xs, int(label), int(res.predictions[0]), int(res.cf_predictions[0]),
                       bool(res.valid[0]), float(res.dist_input[0]), float(res.dist_nn[0]), ex_x, ex_cf)


class FeatureChange(NamedTuple):
    """One feature changed by a tabular counterfactual, in original units (``delta = after - before``)
    and as a fraction of the feature's range (``scaled_delta``)."""

    feature: str
    before: float
    after: float
    delta: float
    scaled_delta: float


def feature_changes(x, counterfactual, scaler=None, feature_names: Sequence[str] | None = None, *,
                    threshold: float = 0.02, top: int | None = None) -> list[FeatureChange]:
    """The features a tabular counterfactual changes, largest first.

    Args:
      x, counterfactual: ONE example each, ``(d,)`` in the model's (min-max scaled) units.
      scaler: a :class:`jcausal.data.MinMaxScaler` (``inverse_transform`` to original units) or
        ``None`` (units as given).
      feature_names: ``d`` names (default ``x0 ..``).
      threshold: report features with ``|scaled change| >= threshold``; top: at most this many.

    Returns:
      A list of :class:`FeatureChange`, sorted by ``|scaled_delta|`` descending.
    """
    a = np.asarray(x, np.float64).reshape(-1)
    b = np.asarray(counterfactual, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"x {a.shape} and counterfactual {b.shape} differ in shape")
    require_finite(a, "x", rows=None)
    require_finite(b, "counterfactual", rows=None)
    names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(a.size)]
    if len(names) != a.size:
        raise ValueError(f"{len(names)} feature names for {a.size} features")
    ra, rb = (a, b) if scaler is None else (scaler.inverse_transform(a[None])[0],
                                            scaler.inverse_transform(b[None])[0])
    d = b - a
    order = [i for i in np.argsort(-np.abs(d), kind="stable") if abs(d[i]) >= threshold]
    order = order[:top] if top is not None else order
    return [FeatureChange(names[i], float(ra[i]), float(rb[i]), float(rb[i] - ra[i]), float(d[i]))
            for i in order]
