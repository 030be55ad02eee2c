"""Session-scoped MNIST experiments for the slow GCE tests: the classifier and the explainer are
trained once per session, exactly as ``jcausal gce mnist`` does with seed 0: with no options (3/8)
and with ``--classes 1 4 9 --K 2 --L 2 --lam 0.1`` (the paper's second explainer)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import require_mnist

SEED = 0


def _run(classes, **config):
    """``(data, classifier, explanation, seconds)``: the command's seed-0 run (the same keys, splits
    and settings); skips without the IDX files."""
    mnist = require_mnist()
    import jax

    from jcausal.experiments.gce_mnist import (
        GCEMnistConfig,
        explain_digits,
        fit_classifier,
        load_mnist_classes,
    )

    t0 = time.perf_counter()
    data = load_mnist_classes(mnist, classes, seed=SEED)
    k_clf, k_exp = jax.random.split(jax.random.key(SEED))
    clf = fit_classifier(data, key=k_clf, epochs=3, progress=False)
    exp = explain_digits(data, clf, key=k_exp, config=GCEMnistConfig(**config), progress=False)
    return data, clf, exp, time.perf_counter() - t0


@pytest.fixture(scope="session")
def gce_mnist():
    """MNIST 3/8 with the defaults (``jcausal gce mnist --seed 0``)."""
    return _run((3, 8))


@pytest.fixture(scope="session")
def gce_mnist_149():
    """MNIST 1/4/9, K = 2, L = 2, lambda = 0.1, the defaults otherwise (``jcausal gce mnist
    --classes 1 4 9 --K 2 --L 2 --lam 0.1 --seed 0``)."""
    return _run((1, 4, 9), K=2, L=2, lam=0.1)
