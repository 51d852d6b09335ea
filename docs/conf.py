"""Sphinx configuration of the cnn documentation (``sphinx-build -W -b html docs docs/_build``).

Sphinx with numpydoc, because the docstrings are numpydoc already (the style scikit-learn and
NumPy document with) and autodoc renders them without a second source of truth; MkDocs would
need mkdocstrings' own parser for the same sections. Figures are drawn by matplotlib at build
time (``.. plot::`` directives running scripts in ``docs/figures``), never stored as binaries.
"""

import os
import sys

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
templates_path = []
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
