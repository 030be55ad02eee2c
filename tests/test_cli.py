import json
import subprocess
import sys

import jcausal
from jcausal.cli import main


def test_version_and_help(capsys):
    for argv in (["--version"], ["--help"]):
        try:
            main(argv)
        except SystemExit as e:
            assert e.code == 0
    out = capsys.readouterr().out
    assert jcausal.__version__ in out and "train" in out


def test_train_iris(tmp_path):
    assert main(["train", "iris", "--out", str(tmp_path), "--quiet"]) == 0
    meta = json.loads((tmp_path / "iris_mlp.json").read_text())
    assert meta["test_accuracy"] >= 0.93
    assert (tmp_path / "iris_mlp.msgpack").stat().st_size > 0


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "jcausal", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"jcausal {jcausal.__version__}"


def test_ace_iris(tmp_path, capsys):
    import numpy as np

    from jcausal.ace import load_result

    assert main(["ace", "iris", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Iris-setosa" in out and "petal width (cm)" in out
    assert (tmp_path / "ace_iris.png").stat().st_size > 10_000
    res = load_result(tmp_path / "ace_iris.npz")
    assert res.expectations.shape == (4, 20, 3)
    again = load_result(tmp_path / "ace_iris.npz")
    np.testing.assert_array_equal(res.regressor.coef, again.regressor.coef)
    # the second run reuses the saved checkpoint and gives the same numbers
    assert main(["ace", "iris", "--out", str(tmp_path), "--quiet", "--method", "directional",
                 "--rank", "0.99"]) == 0
    assert load_result(tmp_path / "ace_iris.npz").expectations.shape == (4, 20, 3)


def test_ace_file_mode_and_errors(tmp_path):
    import numpy as np
    import pytest
    from flax import nnx

    from jcausal.models import MLP, save

    X = np.random.default_rng(0).uniform(size=(50, 3)).astype(np.float32)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    save(tmp_path / "m.msgpack", MLP((3, 5, 2), rngs=nnx.Rngs(0)))
    assert main(["ace", "file", "--data", str(tmp_path / "x.csv"), "--checkpoint",
                 str(tmp_path / "m.msgpack"), "--sizes", "3", "5", "2", "--out", str(tmp_path),
                 "--num-alphas", "8", "--max-order", "3", "--quiet"]) == 0
    assert (tmp_path / "ace_file.npz").is_file()
    with pytest.raises(SystemExit, match="does not match"):
        main(["ace", "file", "--data", str(tmp_path / "x.csv"), "--checkpoint",
              str(tmp_path / "m.msgpack"), "--sizes", "3", "6", "2", "--quiet"])
    with pytest.raises(SystemExit, match="needs"):
        main(["ace", "file", "--quiet"])
