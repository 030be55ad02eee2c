"""The MNIST AlexNet experiments (slow; skipped without the MNIST files). Timings are recorded in the
JSON, never asserted."""

import json
import time

import numpy as np
import pytest

from jcausal.tracer import layer_outputs, trace


@pytest.mark.slow
def test_local_analysis_signed_contributions(mnist_alexnet):
    model, (_, _, x_te, y_te) = mnist_alexnet
    lo = layer_outputs(model, x_te[0], layers=["convs.*", "fcs.*"])
    assert len(lo.names) == 8  # the paper's eight activation outputs
    t0 = time.perf_counter()
    ex = trace(lo, x_te[3], patch=4, stride=2)
    print(f"\nlocal analysis of one digit (incl. compile): {time.perf_counter() - t0:.2f} s")
    assert ex.graph.num_nodes >= 2
    assert [i for g in ex.graph.groups for i in g] == list(range(8))  # a partition in order
    for c in ex.contributions:
        f = c.features
        assert f.shape == (784,) and np.all(np.isfinite(f)) and np.abs(f).max() > 0
    # the decision node explains the output: its contributions correlate with the occlusion drop
    last = ex.contributions[-1]
    r = np.corrcoef(last.per_intervention, ex.delta_out)[0, 1]
    assert r > 0.5
    assert any((c.features > 0).any() and (c.features < 0).any() for c in ex.contributions)


@pytest.mark.slow
def test_global_view_and_tables(mnist_alexnet, tmp_path):
    from tests.tracer._bench import bench

    model, (x_tr, y_tr, x_te, y_te) = mnist_alexnet
    # small data (the test checks the tables' structure; benchmarks/tracer_mnist.py is the
    # paper-scale run and its committed results): the compressed models retrain one epoch on 2,000 digits
    res = bench.run(model, (x_tr[:2000], y_tr[:2000], x_te, y_te), tmp_path, name="tracer_mnist_test",
                    per_class=10, n_faith=4, epochs=1, max_models=2)
    written = json.loads((tmp_path / "tracer_mnist_test.json").read_text())
    # the global view the benchmark computed (10 digits per class, 4x4 patches, the AlexNet's layers)
    gv = written["global"]
    assert gv["n"] >= 100
    assert sum(m["coverage"] for m in gv["mechanisms"]) == pytest.approx(100.0)
    assert max(gv["coverage_by_nodes"].values()) == pytest.approx(100.0)
    assert sum(m["count"] for m in gv["mechanisms"]) == gv["n"]
    comp = written["compression"]
    assert len(comp) >= 3 and all(0 < r["accuracy"] <= 100 for r in comp)
    assert all(r["params"] < comp[0]["params"] for r in comp[1:])
    assert all(r["flops_M"] > 0 for r in comp)
    methods = {r["method"] for r in written["faithfulness"]["rows"]}
    assert {"Integrated Gradients", "Gradient saliency", "ACE local saliency (4x4 patches)"} <= methods
    assert all(0 <= r["deletion_auc"] <= 1 and 0 <= r["insertion_auc"] <= 1
               for r in written["faithfulness"]["rows"])
    assert (tmp_path / "tracer_mnist_test_coverage.png").stat().st_size > 0
    assert res["global"]["total_coverage"] == pytest.approx(100.0)
