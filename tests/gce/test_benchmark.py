"""benchmarks/gce_step.py: its quick run takes minutes, so CI runs it after the test suite
(``python -m benchmarks.gce_step --check``, issue 30), held to ``check_result``: the assertions
this file made on the quick run before. Here the committed full run is held to the same function,
and the function is shown to fail on a run that misses one (no timing asserts)."""

from __future__ import annotations

import copy
import json

import pytest

from tests.conftest import REPO, load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/gce_step.py")


def test_committed_run_holds_every_check(bench):
    r = json.loads((REPO / "benchmarks" / "results" / "gce_step.json").read_text())
    found = bench.check_result(r)
    assert len(found) == 6 and all(found.values()), found
    assert r["quick"] is False and (REPO / "benchmarks" / "results" / "gce_step.png").stat().st_size > 0


def test_check_result_fails_on_a_run_that_misses_one(bench):
    r = json.loads((REPO / "benchmarks" / "results" / "gce_step.json").read_text())

    def failed(edit):
        bad = copy.deepcopy(r)
        edit(bad)
        return {k for k, v in bench.check_result(bad).items() if not v}

    assert failed(lambda b: b["torch_vs_jax_max_abs"].update(decoder=2e-5)) == {
        "the PyTorch peer's decoder and classifier equal jcausal's (<= 1e-5)"}
    assert failed(lambda b: b["rows"][1].update(n_beta=20)) == {"(a) is sobol, (b) is mc at 100 x 25"}
    assert failed(lambda b: b["rows"][0].update(C_rmse=-1.0)) == {
        "(a), (b) timed, with C and gradient errors"}
    assert failed(lambda b: b["targets"].pop("a_speedup_over_c")) == {"the four targets reported"}
    assert failed(lambda b: b.update(rows=[x for x in b["rows"] if x["impl"] != "torch_authors"])) == {
        "rows (c) torch_authors and (d) torch_authors_default present"}
