"""Session-scoped MNIST 3/8 experiment for the slow GCE tests: the classifier and the explainer
are trained once per session, exactly as ``jcausal gce mnist`` does with no options and seed 0."""

from __future__ import annotations

import time

import pytest

from tests.conftest import require_mnist

SEED = 0


@pytest.fixture(scope="session")
def gce_mnist():
    """``(data, classifier, explanation, seconds)`` for MNIST 3/8 with the defaults (the command's
    seed 0: the same keys, splits and settings); skips without the IDX files."""
    mnist = require_mnist()
    import jax

    from jcausal.experiments.gce_mnist import (
        GCEMnistConfig,
        explain_digits,
        fit_classifier,
        load_mnist_classes,
    )

    t0 = time.perf_counter()
    data = load_mnist_classes(mnist, (3, 8), seed=SEED)
    k_clf, k_exp = jax.random.split(jax.random.key(SEED))
    clf = fit_classifier(data, key=k_clf, epochs=3, progress=False)
    exp = explain_digits(data, clf, key=k_exp, config=GCEMnistConfig(), progress=False)
    return data, clf, exp, time.perf_counter() - t0
