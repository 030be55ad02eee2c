"""benchmarks/gce_step.py runs with small settings (no timing asserts)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_script

pytestmark = pytest.mark.slow


def test_gce_step_quick(tmp_path):
    mod = load_script("benchmarks/gce_step.py")
    mod.main(["--quick", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "gce_step_quick.json").read_text())
    assert r["rows"][0]["impl"] == "jcausal" and r["rows"][0]["seconds_per_step"] > 0
    if "torch_vs_jax_max_abs" in r:  # the peer computes the same networks from the same weights
        assert r["torch_vs_jax_max_abs"]["decoder"] <= 1e-5
        assert r["torch_vs_jax_max_abs"]["classifier"] <= 1e-5
    assert (tmp_path / "gce_step_quick.png").stat().st_size > 0
