"""Session-scoped MNIST 3/8 experiment for the slow GCE tests: the classifier and the explainer
are trained once per session."""

from __future__ import annotations

import time

import pytest

from tests.conftest import require_mnist

# Reduced from the paper's 8000 steps of N_alpha = 100, N_beta = 25 (hours on a 2-core CPU):
# 300 cheap steps of D alone (VAE pretraining, sharp initial posteriors), then 400 steps of
# C + lambda D with N_alpha = 16, N_beta = 8, and a Bernoulli likelihood. Measured with keys 1 and 2:
# resampling alpha drops the accuracy 40-43 points, any beta at most 2.2; alpha carries 0.53-0.54
# nats against <= 0.0015 for any beta. After 250 joint steps (keys 1-3) a beta's drop reached 4.8
# points, too near the 5-point bar. With the authors' SSE likelihood the VAE sat on the plateau
# where the decoder ignores z (D about -100) for a key-dependent number of steps: C stayed 0 for
# all 250 steps with keys 2 and 3 (key 1 passed), so which key passed hung on round-off.
MNIST_SETTINGS = dict(K=1, L=7, lam=0.05, steps=400, pretrain_steps=300, init_log_var=-4.0, n_alpha=16,
                      n_beta=8, likelihood="bernoulli", batch_size=64, learning_rate=1e-3, n_flow=(64, 16))


@pytest.fixture(scope="session")
def gce_mnist():
    """``(data, classifier, explanation, seconds)`` for MNIST 3/8; skips without the IDX files."""
    mnist = require_mnist()
    import jax

    from jcausal.experiments.gce_mnist import (
        GCEMnistConfig,
        explain_digits,
        fit_classifier,
        load_mnist_classes,
    )

    t0 = time.perf_counter()
    data = load_mnist_classes(mnist, (3, 8))
    clf = fit_classifier(data, key=jax.random.key(0), epochs=3, progress=False)
    exp = explain_digits(data, clf, key=jax.random.key(1), config=GCEMnistConfig(**MNIST_SETTINGS),
                         progress=False)
    return data, clf, exp, time.perf_counter() - t0
