"""The benchmark script benchmarks/tracer_mnist.py, imported as a module."""

from tests.conftest import load_script

bench = load_script("benchmarks/tracer_mnist.py")
