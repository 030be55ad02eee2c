"""The papers' experiments, built on the method packages (which keep method code only).

What the ``jcausal`` command, the benchmarks and the notebooks run:

- :mod:`jcausal.experiments.ace_mlp`: the ACE paper's Iris experiment (section 5.1) -- ACE of a saved
  MLP classifier's probabilities on tabular rows, its figure, checks and table (``jcausal ace iris``,
  ``jcausal ace file``).
- :mod:`jcausal.experiments.gce_mnist`: GCE section 5 -- the Table 1 CNN on MNIST digit classes and
  the Table 2 VAE explainer, with flows, resampled accuracies and sweeps (``jcausal gce mnist``).
- :mod:`jcausal.experiments.tracer_compression`: TRACER's compression study (Table 1) -- plain CNNs
  described by a spec, the spec of a compressed AlexNet, and the table's measurements.
- :mod:`jcausal.experiments.tracer_tasks`: the reference data and models of TRACER's MNIST and tabular
  runs (an AlexNet on MNIST, an MLP on breast cancer data).
- :mod:`jcausal.experiments.tracer_mnist` / :mod:`jcausal.experiments.tracer_tabular`: TRACER's
  local analysis (and, for MNIST, the global view) of a reference model (``jcausal tracer mnist``,
  ``jcausal tracer tabular``).
- :mod:`jcausal.experiments.counterfactuals`: the counterfactual GAN experiment -- validity,
  distances and the contrastive analysis of a misclassified input (``jcausal tracer counterfactual``).

Import each module directly; this package imports nothing.
"""
