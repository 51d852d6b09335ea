"""Sphinx configuration of the cnn documentation (``sphinx-build -W -b html docs docs/_build``).

Sphinx with numpydoc, because the docstrings are numpydoc already (the style scikit-learn and
NumPy document with) and autodoc renders them without a second source of truth; MkDocs would
need mkdocstrings' own parser for the same sections. Figures are drawn by matplotlib at build
time (``.. plot::`` directives running scripts in ``docs/figures``), never stored as binaries.
"""

import os
import sys
import warnings

import cnn

project = "cnn"
author = "the cnn developers"
copyright = "2026, the cnn developers"
release = cnn.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
]

sys.path.insert(0, os.path.abspath("figures"))

root_doc = "index"
exclude_patterns = ["_build", "experiments", "tutorials/*.py"]
templates_path = ["_templates"]  # autosummary/class.rst: autodoc lists the members once
html_theme = "alabaster"
html_static_path = []

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# Offline builds (CI has no network beyond the package registries): no inventories fetched.
intersphinx_mapping = {}

plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.dpi": 110, "font.size": 9}


def _shapes_to_rubric(app, what, name, obj, options, lines):
    """Move a ``Shapes`` section (the layers' convention) above the first numpydoc section.

    numpydoc knows a fixed set of section names and drops the others with a UserWarning, so
    the shapes would vanish from the pages. This runs before numpydoc (priority 400 < 500)
    and turns the section into a rubric in the extended summary, where numpydoc keeps it.
    """

    def header(i):
        return (i + 1 < len(lines) and lines[i].strip() and set(lines[i + 1].strip()) == {"-"}
                and len(lines[i + 1].strip()) == len(lines[i].strip()))

    for i in range(len(lines)):
        if lines[i].strip() == "Shapes" and header(i):
            end = next((j for j in range(i + 2, len(lines)) if header(j)), len(lines))
            body = lines[i + 2:end]
            del lines[i:end]
            first = next((j for j in range(len(lines)) if header(j)), len(lines))
            lines[first:first] = [".. rubric:: Shapes", ""] + body + [""]
            return


# numpydoc's signature hook parses the raw docstrings too and warns about the same sections.
warnings.filterwarnings("ignore", message="Unknown section Shapes", category=UserWarning)


def setup(app):
    app.connect("autodoc-process-docstring", _shapes_to_rubric, priority=400)
