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
