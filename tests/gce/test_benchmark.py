"""benchmarks/gce_step.py runs with small settings (no timing asserts)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_script, require_mnist

pytestmark = pytest.mark.slow


def test_gce_step_quick(tmp_path):
    mnist = require_mnist()
    mod = load_script("benchmarks/gce_step.py")
    mod.main(["--quick", "--data", str(mnist), "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    r = json.loads((tmp_path / "gce_step_quick.json").read_text())
    rows = {row["impl"]: row for row in r["rows"]}
    a, b = rows["jcausal"], rows["jcausal_mc"]
    assert (a["sampler"], b["sampler"], b["n_alpha"], b["n_beta"]) == ("sobol", "mc", 100, 25)
    for row in (a, b):
        assert row["seconds_per_step"] > 0 and row["C_rmse"] >= 0 and row["grad_rel_rmse"] >= 0
    if "torch_vs_jax_max_abs" in r:  # the peer computes the same networks from the same weights
        assert r["torch_vs_jax_max_abs"]["decoder"] <= 1e-5
        assert r["torch_vs_jax_max_abs"]["classifier"] <= 1e-5
        assert {"torch_authors", "torch_authors_default"} <= set(rows)
        assert set(r["targets"]) == {"a_speedup_over_c", "a_rmse_over_c_rmse",
                                     "a_speedup_over_d_same_algorithm", "a_grad_rmse_over_b_grad_rmse"}
    assert (tmp_path / "gce_step_quick.png").stat().st_size > 0
