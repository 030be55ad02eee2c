"""TRACER on tabular data (the offline stand-in for the paper's CIC-IDS 2017 run): the local analysis
of one test row of the breast cancer MLP (``jcausal tracer tabular``)."""

from __future__ import annotations

import numpy as np

from jcausal.experiments.tracer_tasks import TracerRun, local_run, tabular_task

__all__ = ["LAYERS", "tabular_task", "run_tracer_tabular"]

LAYERS = ["layers.*"]  # the MLP's dense layers


def run_tracer_tabular(model, task, *, index: int = 0, eps: float = 0.05, progress: bool = True) -> TracerRun:
    """The local analysis of test row ``index``, each feature intervened on alone.

    The neutral point of min-max scaled data is the training mean, not 0 (TRACER section 3.2.1), so
    the interventions write the training mean.

    Args:
      model: the trained ``nnx.Module`` (logits of ONE row); task: from :func:`tabular_task`.
      index: the row explained; eps: the merge threshold; progress: a progress bar.

    Returns:
      :class:`jcausal.experiments.tracer_tasks.TracerRun` (summary keys ``index``, ``label``, ``eps``,
      ``local`` with the five ``top_features`` of every node; figures ``tracer_tabular_*.png``).
    """
    from tqdm.auto import tqdm

    from jcausal.tracer import layer_outputs

    steps = tqdm(total=1, desc="jcausal tracer tabular", disable=not progress, leave=False)
    steps.set_postfix_str("local analysis")
    lo = layer_outputs(model, task.x_val[0], layers=LAYERS)
    run = local_run(lo, task, index, eps=eps, tag="tracer_tabular", image=False, baseline_kind="mean",
                    value=np.asarray(task.x_tr.mean(0), np.float32))
    names = list(task.data.feature_names)
    run.summary["local"]["top_features"] = [
        [names[j] for j in np.argsort(-np.abs(c.features))[:5]] for c in run.result.contributions]
    steps.update()
    steps.close()
    return run
