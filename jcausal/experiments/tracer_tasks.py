"""The reference tasks of TRACER's runs: data and a fresh classifier for MNIST or tabular data.

ImageNet/ResNet-50 and CIC-IDS 2017 are not available offline; they are replaced by a small AlexNet
on MNIST (trained on 80% of the MNIST test set) and an MLP on scikit-learn's breast cancer data.
:func:`local_run` is the local analysis both runs share (:mod:`.tracer_mnist`,
:mod:`.tracer_tabular`).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

__all__ = ["MNIST_SIDE", "Task", "TracerRun", "mnist_task", "tabular_task", "local_run"]

MNIST_SIDE = 28


class Task(NamedTuple):
    """The data and reference model of a TRACER run.

    Fields:
      x_tr, y_tr, x_val, y_val: training and test inputs ``(n, ...)`` and labels ``(n,)``.
      make: ``() -> model``, a fresh reference classifier.
      tag: the checkpoint name; epochs, lr: its training settings.
      data: the tabular data set (feature names, scaler), or ``None`` for MNIST.
    """

    x_tr: Any
    y_tr: Any
    x_val: Any
    y_val: Any
    make: Any
    tag: str
    epochs: int
    lr: float
    data: Any


class TracerRun(NamedTuple):
    """A TRACER run: ``summary`` (JSON-ready), ``figures`` (file name -> Figure), and the local
    ``result`` (:class:`jcausal.tracer.TracerResult`) and ``view`` (:class:`jcausal.tracer.GlobalView`
    or ``None``)."""

    summary: dict
    figures: dict
    result: Any
    view: Any


def mnist_task(data_dir: str | os.PathLike | None, *, seed: int, epochs: int | None = None) -> Task:
    """MNIST ``(n, 28, 28, 1)`` split 80/20 with ``seed``, and the AlexNet (default 2 epochs).

    Raises:
      FileNotFoundError, ValueError: the IDX files are missing or unreadable.
    """
    from flax import nnx

    from jcausal.data import load_mnist
    from jcausal.models import AlexNetSmall

    d = load_mnist(data_dir, val_fraction=0.2, seed=seed)
    return Task(d.x_train[..., None], d.y_train, d.x_val[..., None], d.y_val,
                lambda: AlexNetSmall(10, rngs=nnx.Rngs(seed)), "mnist_alexnet", epochs or 2, 1e-3, None)


def tabular_task(*, seed: int, epochs: int | None = None) -> Task:
    """Breast cancer data split 75/25 with ``seed``, and a 30-64-32-2 MLP (default 200 epochs)."""
    from flax import nnx

    from jcausal.data import train_test_split
    from jcausal.models import MLP
    from jcausal.tracer.datasets import load_breast_cancer

    data = load_breast_cancer()
    tr, te = train_test_split(len(data.y), test_size=0.25, seed=seed)
    return Task(data.X[tr], data.y[tr], data.X[te], data.y[te],
                lambda: MLP((30, 64, 32, 2), rngs=nnx.Rngs(seed)), "breast_cancer_mlp", epochs or 200,
                3e-3, data)


def local_run(lo, task: Task, index: int, *, eps: float, tag: str, image: bool, **interventions) -> TracerRun:
    """TRACER's local analysis of test input ``index`` with its CKA, graph and contribution figures.

    Args:
      lo: the model's :class:`jcausal.tracer.LayerOutputs`; task: the :class:`Task`.
      index: the test input; eps: the merge threshold; tag: the figures' name prefix.
      image: the inputs are images (drawn under the contributions); interventions: passed to
        :func:`jcausal.tracer.trace` (``patch``, ``stride``, ``baseline_kind``, ``value``).

    Returns:
      :class:`TracerRun` with ``view=None``.
    """
    from jcausal.plot.tracer import plot_causal_graph, plot_cka, plot_contributions
    from jcausal.tracer import trace

    names = None if task.data is None else list(task.data.feature_names)
    ex = trace(lo, task.x_val[index], eps=eps, **interventions)
    img = np.asarray(task.x_val[index]) if image else None
    figs = {f"{tag}_cka.png": plot_cka(ex.graph), f"{tag}_graph.png": plot_causal_graph(ex.graph),
            f"{tag}_contributions.png": plot_contributions(ex, img, feature_names=names)}
    summary = {"index": index, "label": int(task.y_val[index]), "eps": eps, "local": ex.to_dict()}
    return TracerRun(summary, figs, ex, None)
