"""GCE's second MNIST explainer (appendix E.1, Figures 13-14) with the defaults of ``jcausal gce mnist
--classes 1 4 9 --K 2 --L 2 --lam 0.1`` and its seed 0 (the paper: N_alpha = 75 plain Monte Carlo,
thousands of steps). The committed run with its figures is ``benchmarks/results/gce_mnist_149.json``."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_both_alphas_carry_the_information_flow(gce_mnist_149):
    _, clf, exp, seconds = gce_mnist_149
    flows = np.asarray(exp.flows)
    print(f"\nMNIST 1/4/9: classifier val accuracy {clf.val_accuracy:.4f}; flows (nats) alphas "
          f"{np.round(flows[:2], 4).tolist()}, betas {np.round(flows[2:], 4).tolist()}; "
          f"{seconds:.0f} s in all")
    assert clf.val_accuracy >= 0.95 and exp.plateau is None and exp.K == 2
    assert flows[:2].min() > 0.1
    assert flows[:2].min() >= 5 * flows[2:].max()  # issue 24, item 4


def test_fine_sweep_of_the_first_alpha(gce_mnist_149):
    _, _, exp, _ = gce_mnist_149
    probs = np.asarray(exp.fine.probs)  # (n, V, 3)
    assert probs.shape[-1] == 3 and np.allclose(probs.sum(-1), 1, atol=1e-4)
    pred = probs.argmax(-1)
    crossed = pred[:, 0] != pred[:, -1]
    print(f"\nfine sweep: decision changes inside the window for {crossed.sum()} of {crossed.size} inputs")
    assert crossed.mean() >= 0.5
