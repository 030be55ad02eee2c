"""TRACER on MNIST (the offline stand-in for the paper's ImageNet runs): the local analysis of one
test digit and the global view over a per-class sample (``jcausal tracer mnist``)."""

from __future__ import annotations

from jcausal.experiments.tracer_tasks import TracerRun, local_run, mnist_task

__all__ = ["LAYERS", "mnist_task", "run_tracer_mnist"]

LAYERS = ["convs.*", "fcs.*"]  # AlexNetSmall's convolutions and dense layers


def run_tracer_mnist(model, task, *, index: int = 0, patch: int = 4, stride: int = 2, eps: float = 0.05,
                     per_class: int = 20, progress: bool = True) -> TracerRun:
    """The local analysis of test digit ``index`` and the global view of ``per_class`` digits per class.

    Args:
      model: the trained ``nnx.Module`` (logits of ONE ``(28, 28, 1)`` image); task: from
        :func:`mnist_task`.
      index: the digit explained; patch, stride: the intervened patches; eps: the merge threshold.
      per_class: test digits per class in the global view; progress: progress bars.

    Returns:
      :class:`jcausal.experiments.tracer_tasks.TracerRun` (summary keys ``index``, ``label``, ``eps``,
      ``local``, ``global``; figures ``tracer_mnist_*.png`` with the coverage).
    """
    from tqdm.auto import tqdm

    from jcausal.plot.tracer import plot_coverage
    from jcausal.tracer import global_view, layer_outputs

    steps = tqdm(total=3, desc="jcausal tracer mnist", disable=not progress, leave=False)
    steps.set_postfix_str("local analysis")
    lo = layer_outputs(model, task.x_val[0], layers=LAYERS)
    run = local_run(lo, task, index, eps=eps, tag="tracer_mnist", image=True, patch=patch, stride=stride)
    steps.update()
    steps.set_postfix_str("global view")
    gv = global_view(lo, task.x_val, task.y_val, per_class=per_class, patch=patch, stride=stride, eps=eps,
                     progress=progress)
    run.figures["tracer_mnist_coverage.png"] = plot_coverage(gv)
    run.summary["global"] = gv.to_dict()
    steps.update(2)
    steps.close()
    return run._replace(view=gv)
