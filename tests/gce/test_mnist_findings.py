"""GCE on MNIST at full scale, as committed: the findings of ``jcausal gce mnist`` (3/8, K = 1, L = 7)
and of the paper's second explainer (1/4/9, K = 2, L = 2, lambda = 0.1) in
``benchmarks/results/gce_mnist_seeds.json`` and ``gce_mnist_149.json``.

The runs take 6-8 minutes each, too long for the README's test command (issue 30): CI reruns seed 0
of each with ``python -m benchmarks.gce_mnist_runs {seeds,149} --check``, which asserts
:func:`findings`, the slow tests' assertions with their thresholds (the classifier's accuracy, no
plateau, training finished, alpha's flow > 0.1 nats and >= 5x every beta's, the accuracy drops,
the fine sweep, the figures). Here the same function holds the committed runs, and it is shown to
fail on runs that miss a finding."""

from __future__ import annotations

import copy
import json

import pytest

from tests.conftest import REPO, load_script

RESULTS = REPO / "benchmarks" / "results"


@pytest.fixture(scope="module")
def runs_module():
    return load_script("benchmarks/gce_mnist_runs.py")


def _committed(mode: str) -> dict:
    return json.loads((RESULTS / f"gce_mnist_{mode}.json").read_text())


@pytest.mark.parametrize("mode", ["seeds", "149"])
def test_committed_runs_hold_every_finding(runs_module, mode):
    result = _committed(mode)
    assert result["mode"] == mode and result["args"] == runs_module.MODES[mode]
    seeds = [r["summary"]["seed"] for r in result["runs"]]
    assert seeds == [0, 1, 2] and all(r["returncode"] == 0 for r in result["runs"])
    for r in result["runs"]:
        s = r["summary"]
        assert s["config"]["sampler"] == "sobol" and s["preset"] == "default"
        found = runs_module.findings(s, mode)
        assert all(found.values()), (s["seed"], {k: v for k, v in found.items() if not v})
        assert r["verdict"] == runs_module.verdict(s, r["verdict"]["seconds"], mode)  # the saved verdicts
        for name in runs_module.FIGURES:  # each run's figures are committed beside the JSON
            assert (RESULTS / f"gce_mnist_{mode}" / f"seed{s['seed']}" / name).stat().st_size > 1000


def test_findings_fail_on_a_run_that_misses_one(runs_module):
    base = _committed("seeds")["runs"][0]["summary"]
    base = {**base, "fine_sweep": {"factor": 0, "inputs": 4, "classes": 2, "decision_changes": 3,
                                   "max_probability_sum_error": 0.0}}
    assert all(runs_module.findings(base, "seeds").values())

    def broken(edit):
        s = copy.deepcopy(base)
        edit(s)
        return {k for k, v in runs_module.findings(s, "seeds", figures={}).items() if not v}

    assert broken(lambda s: s["flow_nats"].update(alpha1=0.09)) == {
        "alpha's flow > 0.1 nats", "figures written (> 1000 bytes)"}
    assert "alpha's flow >= 5x every beta's" in broken(lambda s: s["flow_nats"].update(beta3=0.2))
    assert "resampling any beta drops accuracy <= 5 points" in broken(
        lambda s: s["accuracy"]["resampled"].update(beta2=s["accuracy"]["reencoded"] - 0.051))
    assert "resampling alpha drops accuracy >= 20 points" in broken(
        lambda s: s["accuracy"]["resampled"].update(alpha1=s["accuracy"]["reencoded"] - 0.19))
    assert "no plateau" in broken(lambda s: s.update(plateau={"since": 3, "C_max": 0.01}))
    assert "classifier validation accuracy >= 0.95" in broken(
        lambda s: s.update(classifier_val_accuracy=0.94))
    assert "training finished: every step, finite" in broken(lambda s: s.update(nonfinite_step=7))
    assert "fine sweep changes the decision for >= half its inputs" in broken(
        lambda s: s["fine_sweep"].update(decision_changes=1))
    s149 = _committed("149")["runs"][0]["summary"]
    s149 = {**s149, "fine_sweep": {"factor": 0, "inputs": 4, "classes": 2, "decision_changes": 4,
                                   "max_probability_sum_error": 0.0}}
    bad = {k for k, v in runs_module.findings(s149, "149").items() if not v}
    assert bad == {"fine sweep: 3 classes, probabilities sum to 1"}
