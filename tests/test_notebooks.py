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


@pytest.mark.slow  # a Jupyter kernel each (10-45 s): the README's test command runs them, CI too
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs(name, tmp_path, monkeypatch):
    """Every notebook, small settings. Notebook 03 runs its MNIST 3 vs 8 section (classifier,
    explainer, flows, sweeps, fine sweep) when the MNIST test set is present, and says it skips
    it otherwise."""
    from tests.conftest import SHARED_MNIST, mnist_available

    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("JCAUSAL_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("JCAUSAL_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("JCAUSAL_DATA", str(SHARED_MNIST))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    for fig in NOTEBOOKS[name]:
        assert (tmp_path / fig).stat().st_size > 5000, fig
    if name.startswith("03_"):
        if mnist_available():
            for fig in MNIST_FIGURES:
                assert (tmp_path / fig).stat().st_size > 5000, fig
        else:
            printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
            assert "MNIST not found, skipping" in printed


def test_notebooks_are_built_from_the_generator():
    """The committed .ipynb files are what notebooks/_build.py writes (edit the generator)."""
    nbformat = pytest.importorskip("nbformat")
    mod = load_script("notebooks/_build.py")
    for name, cells in mod.NOTEBOOKS.items():
        nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
        assert [c.source for c in nb.cells] == [src for _, src in cells], name
