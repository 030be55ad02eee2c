"""``jcausal tracer counterfactual tabular`` end to end with tiny settings; bad input exits with a message."""

import json

import numpy as np
import pytest

from jcausal.cli import main


@pytest.mark.slow  # trains a GAN through the CLI (10 s)
def test_counterfactual_tabular_cli(tmp_path):
    argv = ["tracer", "counterfactual", "tabular", "--epochs", "40", "--gan-steps", "300", "--count", "40",
            "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    s = json.loads((tmp_path / "counterfactual_tabular.json").read_text())
    assert s["summary"]["count"] == 40 and s["summary"]["changed"] == 40
    assert 0 <= s["summary"]["validity_percent"] <= 100
    assert s["training"]["steps"] == 300 and s["training"]["nonfinite_step"] is None
    assert len(s["examples"]) == 20 and len(s["changed_features"]) == 20
    assert all(set(c) == {"feature", "before", "after", "delta", "scaled_delta"}
               for ex in s["changed_features"] for c in ex)
    assert (tmp_path / "counterfactual_tabular_changes.png").stat().st_size > 0
    # issue 32: every input and every alternative is written (the JSON shows 20 of them)
    z = np.load(tmp_path / "counterfactual_tabular.npz")
    assert z["alternatives"].shape == (40, 1, 30) and z["valid"].shape == (40,) and len(z["messages"]) == 40
    assert 100 * z["valid"].mean() == pytest.approx(s["summary"]["validity_percent"])
    if s["contrastive"] is not None:
        assert s["contrastive"]["label"] != s["contrastive"]["prediction"]
        assert (tmp_path / "counterfactual_tabular_contrastive.png").stat().st_size > 0
    # the second run loads the GAN; every target equal to class 1 returns the inputs predicted 1
    assert main(["tracer", "counterfactual", "tabular", "--target", "1", "--count", "10", "--epochs", "40",
                 "--gan-steps", "300", "--out", str(tmp_path), "--quiet"]) == 0
    s2 = json.loads((tmp_path / "counterfactual_tabular.json").read_text())
    assert s2["training"] is None
    for ex in s2["examples"]:
        assert ex["unchanged"] == (ex["prediction"] == 1)
        assert (ex["dist_input"] == 0.0) == ex["unchanged"]
    # issue 25 from the shell: immutable features, a range in the data's units, several per input
    fixed = ["mean radius", "mean texture", "worst area"]
    assert main(["tracer", "counterfactual", "tabular", "--count", "20", "--epochs", "40", "--gan-steps",
                 "300", "--immutable", ",".join(fixed[:2]), "--immutable", fixed[2], "--range",
                 "mean area:300:1500", "--num", "2", "--out", str(tmp_path), "--quiet"]) == 0
    s3 = json.loads((tmp_path / "counterfactual_tabular.json").read_text())
    assert s3["immutable"] == fixed and s3["ranges"] == {"mean area": [300.0, 1500.0]} and s3["num"] == 2
    for changes in s3["changed_features"]:
        assert not {c["feature"] for c in changes} & set(fixed)
        for c in changes:
            if c["feature"] == "mean area":
                assert 300.0 - 1e-3 <= c["after"] <= 1500.0 + 1e-3
    z3 = np.load(tmp_path / "counterfactual_tabular.npz")
    assert z3["alternatives"].shape == (20, 2, 30) and z3["alternatives_valid"].shape == (20, 2)
    # issue 32: one unreachable input stopped the run and discarded the others; --keep-unreachable
    # keeps them all, the unreachable ones marked invalid with a message
    from sklearn.datasets import load_breast_cancer

    names = [str(n) for n in load_breast_cancer().feature_names]
    tight = ["--immutable", ",".join(n for n in names if n != "mean area"), "--range", "mean area:400:410"]
    base = ["tracer", "counterfactual", "tabular", "--count", "20", "--epochs", "40", "--gan-steps", "300",
            *tight, "--out", str(tmp_path), "--quiet"]
    assert main(base) == 2
    assert main([*base, "--keep-unreachable"]) == 0
    z4 = np.load(tmp_path / "counterfactual_tabular.npz")
    assert z4["alternatives"].shape == (20, 1, 30) and not z4["valid"].all()
    assert all("no valid counterfactual found under the constraints" in str(m)
               for m, v, u in zip(z4["messages"], z4["valid"], z4["unchanged"]) if not v and not u)


def test_counterfactual_cli_bad_input(tmp_path, capsys):
    assert main(["tracer", "counterfactual", "tabular", "--target", "2", "--out", str(tmp_path),
                 "--quiet"]) == 2
    assert "--target" in capsys.readouterr().err
    assert main(["tracer", "counterfactual", "tabular", "--lam", "2", "--out", str(tmp_path), "--quiet"]) == 2
    assert "--lam" in capsys.readouterr().err
    assert main(["tracer", "counterfactual", "tabular", "--gan-checkpoint", str(tmp_path / "no.msgpack"),
                 "--epochs", "1", "--out", str(tmp_path), "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["tracer", "counterfactual", "tabular", "--immutable", "no such feature", "--out",
                 str(tmp_path), "--quiet"]) == 2
    assert "no such feature" in capsys.readouterr().err
    assert main(["tracer", "counterfactual", "tabular", "--range", "mean area:9:1", "--out", str(tmp_path),
                 "--quiet"]) == 2
    assert "--range" in capsys.readouterr().err
    assert main(["tracer", "counterfactual", "tabular", "--num", "0", "--out", str(tmp_path), "--quiet"]) == 2
    assert "--num: must be >= 1" in capsys.readouterr().err
