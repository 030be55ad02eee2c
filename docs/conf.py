"""Sphinx configuration of the jcausal API reference (build: ``sphinx-build -W docs docs/_build/html``).

Nothing is fetched at build time: autodoc imports the package, MyST reads the README and the
notebooks' text (converted here from the ``.ipynb`` JSON, outputs left out), maths is emitted as
MathJax markup (the browser loads MathJax when the page is viewed).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO))

project = "jcausal"
author = "jcausal authors"
copyright = "2026, jcausal authors"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "img"]
root_doc = "index"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# NamedTuple results document their fields under "Fields:" (project convention): render them like
# parameters.
napoleon_custom_sections = [("Fields", "params_style"), ("Settings", "params_style")]
# Docstrings write absolute values as |E| (plain text); without this reST reads a substitution.
rst_prolog = r"""
.. |E| replace:: \|E\|
"""
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]
html_theme = "alabaster"
html_static_path: list[str] = []

# Docstrings of packages other sessions own (jcausal.gce, jcausal.tracer) are rendered as they
# are; these narrow entries keep their reST quirks from failing the -W build. Each names the
# warning type only, never a blanket "*".
suppress_warnings = [
    "myst.xref_missing",  # README links to repository files (benchmarks/..., notebooks/...)
]

# Every cross reference must resolve (a renamed function named in a docstring or a page fails the
# -W build). Types of other libraries are not linked (no intersphinx: nothing is fetched), and a
# few references in docstrings point at objects the reference does not document; each is listed.
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"(jax|jaxlib|numpy|flax|optax|collections\.abc|os|pathlib|typing)(\..*)?"),
]
nitpick_ignore = [
    ("py:data", "REGISTRY"),                                  # jcausal/ace/estimators.py module docstring
    ("py:data", "ACTIVATIONS"),                               # jcausal/models/core.py get_activation
    ("py:func", "jcausal._src.io.atomic_write_bytes"),        # jcausal/models/checkpoint.py save (private)
    ("py:func", "describe_model"),                            # jcausal/models/checkpoint.py save
    ("py:func", "log_likelihood"),                            # jcausal/models/vae.py VAE
    ("py:meth", "step"),                                      # jcausal/models/rnn.py (base class _Recurrent)
    ("py:class", "jcausal.models.rnn._Recurrent"),            # private base class of the RNN models
    ("py:mod", "objectives"), ("py:mod", "train"),            # jcausal/gce/__init__.py (relative names)
    ("py:mod", "select"), ("py:mod", "evaluate"),
    ("py:data", "VARIANTS"), ("py:data", "jcausal.gce.VARIANTS"),   # jcausal/gce
    ("py:data", "SAMPLERS"), ("py:func", "grid_latents"),     # jcausal/gce/objectives.py
    ("py:data", "KERNELS"),                                   # jcausal/tracer/cka.py gram
    ("py:class", "jcausal.tracer.gan._Steps"),                # jcausal/tracer/gan.py
    ("py:meth", "CausalGraph.signature"), ("py:meth", "signature"),   # jcausal/tracer/graph.py
    ("py:meth", "to_dict"),
]


def _notebook_pages() -> None:
    """Write the notebooks' markdown and code cells (not their outputs) as MyST pages into
    ``docs/_generated/notebooks`` (git-ignored), so the reference carries their text."""
    out = DOCS / "_generated" / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    for nb_path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        parts = [f"<!-- generated from notebooks/{nb_path.name} by docs/conf.py; do not edit -->\n"]
        for cell in nb["cells"]:
            src = "".join(cell["source"]).rstrip()
            if not src:
                continue
            if cell["cell_type"] == "markdown":
                parts.append(src)
            else:  # shell escapes (!pip) are not Python: show such cells as plain text
                shell = any(line.lstrip().startswith("!") for line in src.splitlines())
                parts.append(f"```{'text' if shell else 'python'}\n{src}\n```")
        text = "\n\n".join(parts) + "\n"
        target = out / (nb_path.stem + ".md")
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)


_notebook_pages()


_NOTED_SECTION = re.compile(r"^(\s*)(Fields|Settings) \((.+)\):\s*$")


def _section_notes(app, what, name, obj, options, lines):
    """``Fields (``D = max_order``):`` -> a sentence ``With D = max_order.`` and a plain
    ``Fields:`` header that napoleon recognises (runs before napoleon)."""
    for i, line in enumerate(list(lines)):
        m = _NOTED_SECTION.match(line)
        if m:
            indent, section, note = m.groups()
            lines[i:i + 1] = [f"{indent}With {note}.", "", f"{indent}{section}:"]


def setup(app):
    app.connect("autodoc-process-docstring", _section_notes, priority=100)
