"""Benchmark scripts run in the suite with small settings so they never rot (no timing asserts)."""

import json

import pytest

from tests.conftest import REPO, load_script


@pytest.mark.slow
def test_ace_estimators_quick(mnist_dir, tmp_path):
    mod = load_script("benchmarks/ace_estimators.py")
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


@pytest.mark.slow
def test_hessian_quick_writes_valid_json(tmp_path):
    import subprocess
    import sys

    from tests.conftest import SHARED_MNIST, mnist_available

    cmd = [sys.executable, "-m", "benchmarks.hessian", "--quick", "--repeats", "1", "--out", str(tmp_path)]
    have_mnist = mnist_available()
    cmd += ["--data", str(SHARED_MNIST)] if have_mnist else ["--no-mnist"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "hessian_quick.json").read_text())
    assert result["quick"] is True and result["rows"]
    for row in result["rows"]:
        assert row["seconds_per_point"] > 0 and row["peak_bytes"] >= 0
        if row["method"] in ("exact", "directional") and "%" not in row["label"]:
            assert row["rel_error"] <= 1e-4, row  # exact methods agree with the float64 reference
    assert set(result["scaling"]) == {"k", "alphas", "rank"}
    for name in ("pareto", "scaling"):
        assert (tmp_path / f"hessian_quick_{name}.png").stat().st_size > 0
    if have_mnist and "torch_func" in result["peers"]:
        assert result["peers"]["torch_func"]["rel_error_vs_f64_exact"] <= 1e-4


@pytest.mark.slow
def test_synthetic_sequence_study_quick(tmp_path):
    mod = load_script("benchmarks/synthetic_sequences.py")
    mod.main(["--quick", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "synthetic_sequences_quick.json").read_text())
    for label, m in r["models"].items():
        assert m["train"]["val_accuracy"] >= 0.9, label
        pos = m["saliency"]["mean_positive_ace_by_position"]
        assert pos[0] > 0 and pos[1] > 0, label  # ACE saliency is positive on positions 0 and 1
        assert m["imputation"]["test_sequences"] >= 100_000
        for name in ("saliency", "lag"):
            assert (tmp_path / f"synthetic_sequences_quick_{label}_{name}.png").stat().st_size > 0
    rev = r["models"]["reversed"]
    changes = [rev["imputation"][f"x{p}"]["prediction_changes"] for p in range(3)]
    ace = rev["saliency"]["mean_abs_ace_by_position"]
    assert changes[0] > 10 * changes[2]  # position 0 changes far more predictions than position 2
    assert ace[2] < 0.5 * ace[0]  # and ACE tells the same story


@pytest.mark.slow
def test_definition_benchmark_quick(mnist_dir, tmp_path):
    """`benchmarks/definition.py --quick`: every method against eqn 2 over all rows. Asserts
    accuracy, not speed: the split eqn 2 equals the plain one, and eqn 4 is far from both."""
    mod = load_script("benchmarks/definition.py")
    # the MLPs only: what is asserted (the CNN's split eqn 2 is held to plain eqn 2 in float64 by
    # tests/ace/test_definition.py::test_split_cnn_equals_plain_definition_float64)
    mod.main(["--quick", "--repeats", "1", "--models", "mlp", "--data", str(mnist_dir),
              "--out", str(tmp_path)])
    result = json.loads((tmp_path / "definition_quick.json").read_text())
    by = {(r["model"], r["label"]): r for r in result["rows"]}
    for model in ("MLP relu", "MLP softplus"):
        assert by[(model, "eqn 2, plain f (old monte_carlo), all rows")]["E_error_rel"] <= 1e-5
        assert by[(model, "eqn 4 directional")]["ACE_error_rel"] > 0.1  # the expansion is another quantity
    assert (tmp_path / "definition_quick.png").stat().st_size > 0


@pytest.mark.slow
def test_wrap_split_benchmark_quick(tmp_path):
    """`benchmarks/wrap_split.py --quick`: the GCE CNN in five frameworks, wrapped. Asserts that the
    automatic split is found and equals plain eqn 2 (and the hand-written split), not speed."""
    for name in ("torch", "keras", "equinox"):
        pytest.importorskip(name)
    from benchmarks import wrap_split

    wrap_split.main(["--quick", "--repeats", "1", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "wrap_split_quick.json").read_text())
    assert [r["framework"] for r in result["results"]] == ["nnx", "torch", "keras", "linen", "equinox"]
    for r in result["results"]:
        assert r["split_found"] and r["max_abs_diff_split_vs_plain"] <= 1e-5, r
    assert result["results"][0]["max_abs_diff_hand_vs_split"] <= 1e-5
    if "skipped" not in result["captum"]:
        # max-pool ties at the all-zeros baseline node are broken differently by torch and XLA
        assert result["captum"]["rel_error_captum_scaled_vs_jcausal"] <= 1e-2
    assert (tmp_path / "wrap_split_quick.png").stat().st_size > 0


def test_benchmarks_are_a_package_without_path_hacks():
    """`python -m benchmarks.<name>` from the repository root; no script edits sys.path."""
    import importlib

    for path in sorted((REPO / "benchmarks").glob("*.py")):
        assert "sys.path.insert" not in path.read_text(), path.name
    mod = importlib.import_module("benchmarks.common")
    assert mod.RESULTS == REPO / "benchmarks" / "results"


@pytest.mark.slow
def test_counterfactual_dice_quick(tmp_path):
    """`benchmarks/counterfactual_dice.py --quick` (DiCE rows only when dice-ml is installed). Asserts
    what must hold whatever the timing: jcausal's constraints hold in every counterfactual, and the
    benchmark's independent count of valid distinct triples equals the library's."""
    import importlib.util

    mod = load_script("benchmarks/counterfactual_dice.py")
    have_dice = importlib.util.find_spec("dice_ml") is not None
    mod.main(["--quick", "--out", str(tmp_path)] + ([] if have_dice else ["--no-dice"]))
    r = json.loads((tmp_path / "counterfactual_dice_quick.json").read_text())
    rows = {row["label"]: row for row in r["rows"]}
    assert r["quick"] is True and r["gan_training_seconds"] > 0
    for label, row in rows.items():
        assert 0 <= row["validity_percent"] <= 100, label
        if row["method"] == "jcausal" and "immutable" in label:
            assert row["immutable_bitwise_percent"] == 100.0 and row["ranges_respected_percent"] == 100.0
        if row["method"] == "jcausal" and row["num"] == 3:
            assert row["all_valid_distinct_percent"] == row["library_all_valid_distinct_percent"]
    assert rows["jcausal, the paper's decoding (dense)"]["features_changed"] > rows[
        "jcausal (defaults: sparse)"]["features_changed"]
    assert any(label.startswith("DiCE") for label in rows) == have_dice
    assert (tmp_path / "counterfactual_dice_quick.png").stat().st_size > 0


@pytest.mark.slow
def test_repeat_call_quick(tmp_path):
    """`benchmarks/repeat_call.py --quick`: a closed-over model changed between calls gives the new
    answer (error 0 against params=), and the JSON and figure are written."""
    from benchmarks import repeat_call

    res = repeat_call.main(["--quick", "--repeats", "1", "--out", str(tmp_path)])
    r = res["results"]["jcausal"]
    assert r["changed_max_abs_error"] == 0.0
    assert (tmp_path / "repeat_call_quick.json").is_file() and (tmp_path / "repeat_call_quick.png").is_file()
