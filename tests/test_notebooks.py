"""Every notebook executes headless with small settings and writes its figures (numpyro's
test_examples style: examples that are run never rot)."""

import os

import pytest

from tests.conftest import REPO, load_script

NOTEBOOKS = {
    "01_ace_iris.ipynb": ["01_ace_curves.png", "01_local_saliency.png"],
    "02_exact_vs_approximate_hessian.ipynb": ["02_pareto.png"],
    "03_generative_causal_explanations.ipynb": ["03_linear.png", "03_linear_training.png"],
    "04_tracer.ipynb": ["04_cka.png", "04_graph.png", "04_contributions.png", "04_coverage.png",
                        "04_counterfactual.png"],
}


MNIST_FIGURES = ["03_flow.png", "03_sweeps.png", "03_fine_sweep.png"]  # notebook 03's MNIST section


def _execute(name, folder, monkeypatch, data: str):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("JCAUSAL_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("JCAUSAL_NOTEBOOK_OUT", str(folder))
    monkeypatch.setenv("JCAUSAL_DATA", data)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    return nb


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs(name, tmp_path, monkeypatch):
    """Every notebook, small settings, without the MNIST files (notebook 03 says so and skips its
    MNIST section: the slow test below runs it)."""
    nb = _execute(name, tmp_path, monkeypatch, data=str(tmp_path / "no-mnist-here"))
    for fig in NOTEBOOKS[name]:
        assert (tmp_path / fig).stat().st_size > 5000, fig
    if name.startswith("03_"):
        printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
        assert "MNIST not found, skipping" in printed


@pytest.mark.slow
def test_notebook_03_mnist_section_runs(tmp_path, monkeypatch):
    """Notebook 03 with the MNIST test set: its MNIST 3 vs 8 section (classifier, explainer, flows,
    sweeps, fine sweep) runs with small settings and draws its figures."""
    from tests.conftest import require_mnist

    _execute("03_generative_causal_explanations.ipynb", tmp_path, monkeypatch, data=str(require_mnist()))
    for fig in NOTEBOOKS["03_generative_causal_explanations.ipynb"] + MNIST_FIGURES:
        assert (tmp_path / fig).stat().st_size > 5000, fig


def test_notebooks_are_built_from_the_generator():
    """The committed .ipynb files are what notebooks/_build.py writes (edit the generator)."""
    nbformat = pytest.importorskip("nbformat")
    mod = load_script("notebooks/_build.py")
    for name, cells in mod.NOTEBOOKS.items():
        nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
        assert [c.source for c in nb.cells] == [src for _, src in cells], name
