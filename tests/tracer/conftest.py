"""A session-scoped MNIST AlexNet for the slow TRACER tests (trained once, skipped without data)."""

import pytest

from tests.conftest import SHARED_MNIST


@pytest.fixture(scope="session")
def mnist_alexnet():
    """``(model, (x_train, y_train, x_test, y_test))``: AlexNetSmall trained 2 epochs on 80% of the
    MNIST test set with ``jcausal.models.train`` (about a minute on 2 CPU cores)."""
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file() and not (
            SHARED_MNIST / "t10k-images-idx3-ubyte").is_file():
        pytest.skip(f"MNIST IDX files not found in {SHARED_MNIST} (set JCAUSAL_DATA to their folder)")
    from tests.tracer._bench import bench

    data = bench.load_data(SHARED_MNIST)
    return bench.train_alexnet(data[0], data[1], epochs=2), data
