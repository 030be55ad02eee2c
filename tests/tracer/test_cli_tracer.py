"""``jcausal tracer tabular`` end to end with tiny settings; bad input exits with a message."""

import json

import pytest

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
    # a second run reuses the saved checkpoint
    assert main(["tracer", "tabular", "--out", str(tmp_path), "--quiet"]) == 0


def test_bad_eps_and_missing_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="eps"):
        main(["tracer", "tabular", "--eps", "1.5", "--out", str(tmp_path), "--quiet"])
    with pytest.raises(SystemExit, match="not found"):
        main(["tracer", "tabular", "--checkpoint", str(tmp_path / "nope.msgpack"), "--out", str(tmp_path)])
