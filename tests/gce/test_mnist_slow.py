"""GCE on MNIST 3/8 (section 5), reduced (paper: 8000 steps of N_alpha = 100, N_beta = 25): 300
steps of D alone, then 400 steps of C + 0.05 D with N_alpha = 16, N_beta = 8, learning rate 1e-3,
Bernoulli likelihood (see ``MNIST_SETTINGS``); CNN classifier 3 epochs on the 80% training split of
the 3s and 8s of the MNIST test files."""

from __future__ import annotations

import numpy as np
import pytest

from jcausal.plot.gce import plot_accuracy_drop, plot_factor_flow, plot_sweeps, plot_training
from tests.gce.conftest import MNIST_SETTINGS

pytestmark = pytest.mark.slow


def test_classifier_and_training_ran(gce_mnist):
    data, clf, exp, seconds = gce_mnist
    print(f"\nMNIST 3/8: classifier val accuracy {clf.val_accuracy:.4f}; explainer {exp.fit.steps} steps "
          f"({MNIST_SETTINGS}); final C {exp.fit.history['C'][-1]:.3f}, D {exp.fit.history['D'][-1]:.1f}; "
          f"{seconds:.0f} s in all")
    assert clf.val_accuracy >= 0.95
    assert exp.fit.nonfinite_step is None and exp.fit.steps == MNIST_SETTINGS["steps"]


def test_alpha_carries_the_information_flow(gce_mnist):
    _, _, exp, _ = gce_mnist
    flows = exp.flows
    print(f"\nflows (nats): alpha {flows[0]:.4f}, betas {np.round(flows[1:], 4).tolist()}")
    assert flows[0] > 0.1
    assert flows[0] >= 5 * flows[1:].max()


def test_resampling_alpha_not_beta_changes_accuracy(gce_mnist):
    _, _, exp, _ = gce_mnist
    acc = exp.accuracy
    re = float(acc.reencoded)
    drops = re - np.asarray(acc.resampled)
    print(f"\naccuracy: original {float(acc.original):.3f}, re-encoded {re:.3f}, resampled "
          f"{np.round(np.asarray(acc.resampled), 3).tolist()}")
    # drops are measured from the re-encoded accuracy: every resampled image is a reconstruction
    assert drops[0] >= 0.20
    assert np.all(drops[1:] <= 0.05)


def test_figures_are_written(gce_mnist, tmp_path):
    _, _, exp, _ = gce_mnist
    acc = exp.accuracy
    figs = {
        "flow": plot_factor_flow(exp.flows, exp.K),
        "accuracy": plot_accuracy_drop(float(acc.original), float(acc.reencoded), acc.resampled, exp.K),
        "sweeps": plot_sweeps(exp.sweep.images, exp.sweep.probs, exp.sweep.offsets, exp.K,
                              class_names=["3", "8"]),
        "training": plot_training(exp.fit.history, lam=MNIST_SETTINGS["lam"]),
    }
    for name, fig in figs.items():
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
