"""Issue 32: every interrupted command resumes its own work. A ``tracer counterfactual`` run killed
right after the GAN's periodic checkpoint (step 500) left it in ``--out`` with no settings
recorded, and every rerun of the same command was refused ("trained with other settings (seed: not
recorded ...)")."""

import json

import pytest

from jcausal.cli import main


@pytest.mark.slow  # a classifier and 1,100 GAN steps through the CLI (15 s)
def test_counterfactual_killed_after_a_periodic_checkpoint_reruns_to_the_end(tmp_path, monkeypatch):
    import jcausal.tracer.gan as gan

    real = gan._save_gan

    def killed(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # as a kill right after the checkpoint is written

    argv = ["tracer", "counterfactual", "tabular", "--epochs", "40", "--gan-steps", "600", "--count", "10",
            "--out", str(tmp_path), "--quiet"]
    monkeypatch.setattr(gan, "_save_gan", killed)
    assert main(argv) == 130
    assert not (tmp_path / "counterfactual_tabular.json").exists()
    monkeypatch.setattr(gan, "_save_gan", real)
    assert main(argv) == 0
    s = json.loads((tmp_path / "counterfactual_tabular.json").read_text())
    assert s["training"]["steps"] == 600 and s["summary"]["count"] == 10
    assert not list(tmp_path.glob("*.partial.msgpack"))  # the periodic checkpoint is gone with success
    assert main(argv) == 0  # and the finished GAN is reused
    assert json.loads((tmp_path / "counterfactual_tabular.json").read_text())["training"] is None
