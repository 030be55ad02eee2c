"""``jcausal gce`` commands with small settings (the MNIST one on a tiny synthetic IDX set)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jcausal.cli import main


def test_gce_linear(tmp_path, capsys):
    assert main(["gce", "linear", "--dim", "2", "--steps", "120", "--out", str(tmp_path), "--quiet"]) == 0
    s = json.loads((tmp_path / "linear.json").read_text())
    assert s["cos_w_alpha_a"] >= 0.99 and max(s["cos_w_beta_a"]) <= 0.05
    assert (tmp_path / "linear.png").stat().st_size > 0
    assert "cos(w_alpha, a)" in capsys.readouterr().out


def test_gce_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["gce", "mnist", "--help"])
    assert e.value.code == 0
    assert "--classes" in capsys.readouterr().out


def test_gce_linear_bad_lambda(tmp_path, capsys):
    assert main(["gce", "linear", "--lam", "-1", "--out", str(tmp_path), "--quiet"]) == 2
    assert "--lam: must be >= 0, got -1" in capsys.readouterr().err


def test_gce_linear_one_draw_names_the_commands_flags(tmp_path, capsys):
    """Issue 32: ``gce linear --n-beta 1`` suggested "pass sampler='mc'", an option the command lacks."""
    assert main(["gce", "linear", "--n-beta", "1", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--n-beta 1: gce linear draws alpha and beta from a randomized Sobol sequence" in err
    assert "sampler=" not in err and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_gce_mnist_on_synthetic_idx(tmp_path, capsys):
    from jcausal.data import write_idx

    rng = np.random.default_rng(0)
    n = 48
    labels = np.array([3, 8] * (n // 2), np.uint8)
    images = (rng.uniform(size=(n, 28, 28)) * 255).astype(np.uint8)
    images[labels == 8, 10:18, 10:18] = 255  # a learnable difference
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    out = tmp_path / "out"
    assert main(["gce", "mnist", "--classes", "3", "8", "--data", str(tmp_path), "--steps", "3",
                 "--n-alpha", "3", "--n-beta", "2", "--pretrain-steps", "2", "--batch-size", "8",
                 "--classifier-epochs", "1", "--flow-samples", "16", "8", "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 3 and len(s["flow_nats"]) == 8 and s["config"]["n_flow"] == [16, 8]
    assert s["config"]["sampler"] == "sobol" and s["preset"] == "default"
    # 3 steps on noise: C stays near 0, which the summary and the warning report
    assert s["plateau"] is not None and "the decoder ignores z" in capsys.readouterr().err
    for name in ("flow.png", "accuracy.png", "sweeps_0.png", "fine_sweep.png", "training.png",
                 "classifier.msgpack", "explainer.msgpack"):
        assert (out / name).stat().st_size > 0
    # issue 32: the explainer is published with the summary, which records its hash (no mixed folder)
    from jcausal._src.io import file_sha256

    assert s["files"]["explainer.msgpack"]["sha256"] == file_sha256(out / "explainer.msgpack")
    assert not list(out.glob("*.partial.msgpack"))
    fine = s["fine_sweep"]  # what benchmarks/gce_mnist_runs.py --check reads of the fine sweep
    assert (fine["factor"], fine["classes"]) == (0, 2) and 0 <= fine["decision_changes"] <= fine["inputs"]
    assert fine["max_probability_sum_error"] <= 1e-4
    from tests.conftest import load_script

    found = load_script("benchmarks/gce_mnist_runs.py").findings(s, "seeds")
    assert found["no plateau"] is False and "fine sweep changes the decision for >= half its inputs" in found


def test_mnist_help_states_the_configs_defaults():
    from jcausal.cli.gce import MNIST_OPTIONS
    from jcausal.experiments.gce_mnist import GCEMnistConfig

    d, p = GCEMnistConfig(), GCEMnistConfig.paper()
    field = {"--lr": "learning_rate"}
    for flag, _, default, paper, _ in MNIST_OPTIONS:
        name = field.get(flag, flag[2:].replace("-", "_"))
        assert getattr(d, name) == default and getattr(p, name) == paper, flag
    assert (p.steps, p.n_alpha, p.n_beta, p.learning_rate, p.sampler, p.likelihood) == \
        (8000, 100, 25, 5e-4, "mc", "sse")


def test_mnist_config_takes_the_preset_then_the_options():
    import argparse

    from jcausal.cli.gce import _mnist_config
    from jcausal.experiments.gce_mnist import GCEMnistConfig

    base = dict(K=1, L=7, lam=0.05, batch_size=64, checkpoint_every=200, steps=None, n_alpha=None,
                n_beta=None, lr=None, likelihood=None, sampler=None, pretrain_steps=None, init_log_var=None,
                flow_samples=[100, 50])
    c = _mnist_config(argparse.Namespace(paper=True, **base | dict(steps=40)))
    assert (c.steps, c.sampler, c.n_alpha, c.likelihood, c.pretrain_steps) == (40, "mc", 100, "sse", 0)
    assert c.n_flow == (100, 50) == GCEMnistConfig().n_flow  # --flow-samples' default is the config's
    assert _mnist_config(argparse.Namespace(paper=False, **base | dict(flow_samples=[8, 4]))).n_flow == (8, 4)
    c = _mnist_config(argparse.Namespace(paper=False, **base | dict(sampler="mc")))
    assert (c.sampler, c.n_alpha, c.likelihood, c.pretrain_steps) == ("mc", 128, "bernoulli", 300)


@pytest.mark.parametrize("args, match", [
    (["--n-alpha", "1"], "needs at least 2 draws to stratify, got --n-alpha = 1"),
    (["--sampler", "qmc"], "invalid choice: 'qmc'"),
    (["--init-log-var", "nan"], "must be a finite number"),
    # issue 32: 1.6e9 decodes per step were accepted under --sampler mc and ran for minutes
    (["--sampler", "mc", "--n-alpha", "40000", "--n-beta", "40000"],
     "--n-alpha 40000 x --n-beta 40000 = 1,600,000,000 decodes per step need about"),
])
def test_mnist_bad_sampler_options_are_refused_before_any_work(tmp_path, capsys, args, match):
    out = tmp_path / "o"
    assert main(["gce", "mnist", "--data", str(tmp_path), "--out", str(out), "--quiet", *args]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o" / "classifier.msgpack").exists()
