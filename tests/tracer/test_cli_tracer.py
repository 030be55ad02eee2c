"""``jcausal tracer tabular`` end to end with tiny settings; bad input exits with a message."""

import json

from jcausal.cli import main


def test_tabular_writes_summary_and_figures(tmp_path):
    argv = ["tracer", "tabular", "--epochs", "5", "--out", str(tmp_path), "--quiet", "--index", "3"]
    assert main(argv) == 0
    s = json.loads((tmp_path / "tracer_tabular.json").read_text())
    assert s["local"]["graph"]["layers"] == ["layers.0", "layers.1", "layers.2"]
    assert len(s["local"]["nodes"]) == len(s["local"]["graph"]["groups"])
    assert len(s["local"]["top_features"][0]) == 5
    for tag in ("cka", "graph", "contributions"):
        assert (tmp_path / f"tracer_tabular_{tag}.png").stat().st_size > 0
    # a second run with the same settings reuses the saved checkpoint; other settings are refused
    # before any work (issue 21, item 5: it used to explain a model trained with other settings)
    assert main(["tracer", "tabular", "--epochs", "5", "--out", str(tmp_path), "--quiet"]) == 0
    before = (tmp_path / "tracer_tabular.json").read_bytes()
    assert main(["tracer", "tabular", "--out", str(tmp_path), "--quiet"]) == 2
    assert main(["tracer", "tabular", "--epochs", "5", "--seed", "3", "--out", str(tmp_path), "--quiet"]) == 2
    assert (tmp_path / "tracer_tabular.json").read_bytes() == before


def test_bad_eps_and_missing_checkpoint(tmp_path, capsys):
    assert main(["tracer", "tabular", "--eps", "1.5", "--out", str(tmp_path), "--quiet"]) == 2
    assert "--eps" in capsys.readouterr().err
    assert main(["tracer", "tabular", "--checkpoint", str(tmp_path / "nope.msgpack"), "--out",
                 str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
