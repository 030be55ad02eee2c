"""The README is executable documentation.

* its Quick start and ``.ci/run`` must not drift apart;
* every fenced ``python`` block runs, in order, in ONE namespace (as a reader pasting them into one
  session would), in a temporary working folder. A block preceded by ``<!-- not-run: reason -->``
  is skipped on purpose (the reason is required); a block preceded by ``<!-- needs: mnist -->`` runs
  only when the shared MNIST test set is present (it is skipped with a message otherwise);
* the Phase II example's results are the ones the README describes (probabilities' expectations in
  [0, 1], petal width down for setosa and up for virginica) and its figure, regenerated here, has
  the size of the one committed next to the README (``docs/img/ace_iris.png``).

The batch-job block loads "your own model" ``mypkg.models:make`` and rows ``X.npy``: the test writes
small stand-ins for both into the temporary folder (see :func:`_user_files`).
"""

from __future__ import annotations

import re
import struct
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, SHARED_MNIST, mnist_available

README = REPO / "README.md"
FIGURE = REPO / "docs" / "img" / "ace_iris.png"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
_MARK = re.compile(r"<!--\s*(not-run|needs)\s*:\s*(.*?)\s*-->\s*$")


def _quick_start():
    text = README.read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    """``.ci/run`` runs the README's test command step by step (each step timed), in its order."""
    install_run, test_cmd = _quick_start()
    assert "pytest" in test_cmd and "jcausal" in install_run
    ci = (REPO / ".ci" / "run").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in ci.splitlines())  # comments may name steps
    at = 0
    for step in (s.strip() for s in test_cmd.split("&&")):
        found = code.find(step, at)
        assert found >= 0, f".ci/run does not run the README's step {step!r} after the ones before it"
        at = found + len(step)


def python_blocks(text: str) -> list[dict]:
    """Fenced ``python`` blocks of a Markdown text: ``line`` (1-based, of the first code line),
    ``code``, and ``mark``/``reason`` from an HTML comment on the line right before the fence."""
    blocks = []
    for m in _FENCE.finditer(text):
        if m.group(1) != "python":
            continue
        line = text.count("\n", 0, m.start()) + 2
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mk = _MARK.search(before)
        blocks.append({"line": line, "code": m.group(2), "mark": mk.group(1) if mk else None,
                       "reason": mk.group(2) if mk else ""})
    return blocks


def test_block_extractor_reads_marks_and_line_numbers():
    text = ("# t\n\n```python\na = 1\n```\n<!-- not-run: needs a GPU -->\n"
            "```python\nb = 2\n```\n```bash\nls\n```\n")
    got = python_blocks(text)
    assert [(b["line"], b["code"], b["mark"], b["reason"]) for b in got] == [
        (4, "a = 1\n", None, ""), (8, "b = 2\n", "not-run", "needs a GPU")]


def test_every_readme_block_is_runnable_or_marked_with_a_reason():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 6
    for b in blocks:
        assert b["mark"] in (None, "not-run", "needs"), b
        if b["mark"] == "not-run":
            assert len(b["reason"]) > 5, f"README.md:{b['line']}: a not-run block must say why"
        if b["mark"] == "needs":
            assert b["reason"] == "mnist", f"README.md:{b['line']}: unknown requirement {b['reason']!r}"


def _user_files(folder: Path) -> None:
    """Stand-ins for the reader's own files used by the batch-job block: a module
    ``mypkg/models.py`` whose ``make()`` returns ``(Split, params)`` of a small Iris MLP, and the
    rows ``X.npy``."""
    pkg = folder / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(textwrap.dedent("""
        import jax
        from flax import nnx
        from jcausal.models import MLP, split_functional

        def make():
            split, params = split_functional(MLP((4, 8, 3), rngs=nnx.Rngs(0)))
            return split.then(jax.nn.softmax), params
    """))
    from jcausal.data import load_iris

    np.save(folder / "X.npy", load_iris().X)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """Run every README python block once; returns (namespace, per-block seconds, skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = tmp_path_factory.mktemp("readme")
    _user_files(folder)
    mnist = mnist_available()
    old_cwd = Path.cwd()
    sys.path.insert(0, str(folder))
    ns: dict = {"__name__": "__readme__"}
    times, skipped = [], []
    try:
        import os

        os.chdir(folder)
        for b in python_blocks(README.read_text()):
            if b["mark"] == "not-run" or (b["mark"] == "needs" and not mnist):
                skipped.append((b["line"], b["mark"], b["reason"]))
                continue
            code = compile("\n" * (b["line"] - 1) + b["code"], str(README), "exec")
            t0 = time.perf_counter()
            exec(code, ns)  # a failure's traceback points at README.md:<line>
            times.append((b["line"], time.perf_counter() - t0))
            plt.close("all")
    finally:
        os.chdir(old_cwd)
        sys.path.remove(str(folder))
        sys.modules.pop("mypkg.models", None)
        sys.modules.pop("mypkg", None)
    return ns, times, skipped, folder


@pytest.mark.slow  # the README's examples, run once (30 s)
def test_readme_python_blocks_run(readme_run):
    ns, times, skipped, _ = readme_run
    print("README blocks (line, seconds):", [(line, round(s, 1)) for line, s in times])
    assert times, "no README block ran"
    for line, mark, reason in skipped:
        if mark == "needs":
            print(f"README.md:{line} skipped: needs {reason} (not found in {SHARED_MNIST})")


@pytest.mark.slow  # the README's examples, run once (30 s)
def test_readme_phase2_example_shows_the_iris_finding(readme_run):
    """Issue 16: expectations of probabilities within [0, 1]; the ACE of petal width goes down
    for setosa and up for virginica over its intervention range."""
    ns = readme_run[0]
    res = ns["res"]
    E = np.asarray(res.expectations)
    assert E.shape == (4, 20, 3)
    assert E.min() >= -1e-6 and E.max() <= 1 + 1e-6, (E.min(), E.max())
    ace = np.asarray(res.ace())  # (4 features, 20 alphas, 3 classes)
    petal_width = 3
    assert ace[petal_width, -1, 0] - ace[petal_width, 0, 0] < -0.3   # setosa: down
    assert ace[petal_width, -1, 2] - ace[petal_width, 0, 2] > 0.3    # virginica: up
    assert int(np.asarray(res.orders)[petal_width, 2]) > 0


@pytest.mark.slow  # the README's examples, run once (30 s)
def test_readme_figure_is_the_one_the_example_produces(readme_run):
    folder = readme_run[3]
    made = folder / "ace_iris.png"
    assert made.is_file(), "the Phase II README block must save its figure as ace_iris.png"
    assert FIGURE.is_file(), f"{FIGURE} is missing: copy the figure the README example produces"
    assert _png_size(made) == _png_size(FIGURE)
    assert "docs/img/ace_iris.png" in README.read_text()
