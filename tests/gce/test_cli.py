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


@pytest.mark.slow
def test_gce_mnist_on_synthetic_idx(tmp_path):
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
                 "--n-alpha", "3", "--n-beta", "2", "--batch-size", "8", "--classifier-epochs", "1",
                 "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 3 and len(s["flow_nats"]) == 8
    for name in ("flow.png", "accuracy.png", "sweeps_0.png", "training.png", "classifier.msgpack",
                 "explainer.msgpack"):
        assert (out / name).stat().st_size > 0
