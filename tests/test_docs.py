"""Documentation that cannot drift (issue 16).

* Every docstring ``Examples:`` section of the documented packages runs as a doctest (the same
  machinery as ``pytest --doctest-modules``, one test per module so a failure names it; ELLIPSIS and
  NORMALIZE_WHITESPACE on).
* The Sphinx API reference in ``docs/`` builds with warnings as errors (``-W --keep-going``) into a
  temporary folder: a renamed or deleted function referenced by the pages, a broken cross
  reference or a malformed docstring fails the suite. Skipped, with the reason, when Sphinx (the
  ``docs`` extra, also in the ``test`` extra) is not installed.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

# Packages whose docstring examples run here (jcausal.gce / jcausal.tracer join when they carry
# examples; their modules are collected too, so an example added there runs at once).
PACKAGES = ["jcausal.ace", "jcausal.data", "jcausal.models", "jcausal.comparisons", "jcausal.gce",
            "jcausal.tracer"]
# Modules whose examples must exist (the main public functions of the packages this issue covers).
MUST_HAVE_EXAMPLES = {
    "jcausal.ace.attribution": ["explain", "save_result"],
    "jcausal.ace.interventional": ["interventional_expectation"],
    "jcausal.ace.stats": ["input_stats", "intervention_grid", "truncate"],
    "jcausal.ace.regressors": ["fit_regressors", "predict_regressor"],
    "jcausal.ace.estimators": ["make_estimator"],
    "jcausal.ace.recurrent": ["unrolled_expectation", "feedback_expectation", "lag_tau"],
    "jcausal.ace.latent": ["latent_ace", "rank_latents", "traversals"],
    "jcausal.ace.jobs": ["run_job", "load_rows", "load_model"],
    "jcausal.data.tabular": ["load_iris", "load_digits", "train_test_split", "MinMaxScaler"],
    "jcausal.data.idx": ["read_idx", "write_idx", "load_mnist"],
    "jcausal.data.synthetic": ["make_sequences", "make_isotropic_gaussian"],
    "jcausal.models.core": ["functional", "split_functional"],
    "jcausal.models.mlp": ["MLP"],
    "jcausal.models.training": ["train", "accuracy"],
    "jcausal.models.checkpoint": ["save"],
    "jcausal.models.rnn": ["SequenceClassifier", "OneStepPredictor"],
    "jcausal.models.cnn": ["AlexNetSmall"],
    "jcausal.models.cvae": ["train_cvae"],
    "jcausal.comparisons.gradients": ["integrated_gradients", "gradient_saliency", "completeness_gap"],
}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _doctests(name: str):
    mod = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder(exclude_empty=True).find(mod, name)
            if t.examples and t.name.startswith(name)]


def _modules() -> list[str]:
    """Every module of PACKAGES that carries at least one docstring example."""
    names = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names.append(pkg)
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, pkg + ".")]
    return sorted(n for n in set(names) if _doctests(n))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
    tests = _doctests(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for t in tests:
        runner.run(t, out=report.append)
    failed = sum(r.failed for r in [runner.summarize(verbose=False)])
    assert failed == 0, f"docstring examples failed in {name}:\n" + "".join(report)


@pytest.mark.parametrize("name", sorted(MUST_HAVE_EXAMPLES))
def test_main_public_functions_have_examples(name):
    have = {t.name.rsplit(".", 1)[-1] for t in _doctests(name)}
    missing = [f for f in MUST_HAVE_EXAMPLES[name] if f not in have]
    assert not missing, f"{name}: no runnable Examples section in {missing}"


@pytest.mark.slow  # a Sphinx build (11 s); the docstring examples below stay fast
def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="Sphinx not installed: pip install -e '.[docs]' to build the docs")
    pytest.importorskip("myst_parser", reason="myst-parser not installed: pip install -e '.[docs]'")
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d",
         str(tmp_path / "doctrees"), str(REPO / "docs"), str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    for page in ["index", "readme", "api/ace", "api/data", "api/models", "api/comparisons", "api/plot",
                 "api/gce", "api/tracer", "benchmarks"]:
        assert (out / f"{page}.html").is_file(), page
    ace = (out / "api" / "ace.html").read_text()
    assert "interventional_expectation" in ace and "latent_ace" in ace and "run_job" in ace
    assert "\\mathbb{E}" in ace or "math notranslate" in ace  # maths rendered as MathJax markup
    readme = (out / "readme.html").read_text()
    assert "ace_iris.png" in readme
    assert (out / "_images" / "ace_iris.png").is_file()


@pytest.mark.slow  # converts a torch, a Keras and an Equinox model (12 s)
def test_bring_your_own_model_page_runs(tmp_path, monkeypatch):
    """docs/wrap.md: every python block runs, in order, in one namespace (one example per framework)."""
    for name in ("torch", "keras", "equinox"):
        pytest.importorskip(name, reason=f"{name} not installed: pip install -e '.[test]'")
    from tests.test_readme import python_blocks

    monkeypatch.chdir(tmp_path)
    page = REPO / "docs" / "wrap.md"
    blocks = python_blocks(page.read_text())
    assert len(blocks) >= 7  # one per framework, a plain function, the Captum comparison
    namespace: dict = {}
    for b in blocks:
        exec(compile(b["code"], f"{page}:{b['line']}", "exec"), namespace)
    assert namespace["w"].split is not None
