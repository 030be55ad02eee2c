"""Benchmark scripts, run as modules from the repository root: ``python -m benchmarks.hessian``.

Each writes JSON and PNG results under ``benchmarks/results/``; the test suite runs each with small
settings (``--quick``). Nothing here edits ``sys.path``."""
