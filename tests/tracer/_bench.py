"""The benchmark script benchmarks/tracer_mnist.py, imported as a module (it is not a package)."""

import importlib.util

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("tracer_mnist_bench", REPO / "benchmarks" / "tracer_mnist.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
