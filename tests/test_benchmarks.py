"""Benchmark scripts run in the suite with small settings so they never rot (no timing asserts)."""

import json

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_ace_estimators_quick(mnist_dir, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("ace_bench", REPO / "benchmarks" / "ace_estimators.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--quick", "--repeats", "1", "--data", str(mnist_dir), "--out", str(tmp_path)])
    result = json.loads((tmp_path / "ace_estimators_quick.json").read_text())
    methods = {r["method"] for r in result["rows"]}
    assert methods == {"exact", "directional", "hutchinson", "finite_difference", "monte_carlo",
                       "gauss_newton"}
    by = {r["label"]: r for r in result["rows"]}
    # accuracy (not speed) is asserted: the exact estimators agree with the float64 reference
    assert by["directional full (softplus)"]["rel_error"] <= 1e-4
    assert by["gauss_newton (relu)"]["rel_error"] <= 1e-4
    assert (tmp_path / "ace_estimators_quick.png").stat().st_size > 0
