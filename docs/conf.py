"""Sphinx configuration of the traxon documentation (Sphinx + MyST markdown).

Build it with::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Figures under ``docs/_static/`` come from ``python docs/make_figures.py``; the error
catalogue ``docs/errors.md`` from ``python docs/make_errors.py``.
"""

from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src")))

import traxon

project = "traxon"
author = "The traxon authors"
copyright = "The traxon authors"
release = traxon.__version__
version = traxon.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# Generated fragments that a page includes (they are not pages of their own).
exclude_patterns = ["_build", "README.md", "**/.ipynb_checkpoints", "algorithms_generated.md"]

# MyST: $...$ and $$...$$ maths, ::: fences, anchors for headings (links like page.md#anchor).
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc / napoleon: the library's docstrings are Google style with "Arguments:" sections.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_typehints_format = "short"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields, so NamedTuple fields are not duplicated
napoleon_use_rtype = False

html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"traxon {release}"
html_theme_options = {
    "description": "Linear-memory online learning for spiking networks in JAX",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
}
pygments_style = "sphinx"


# A Google-style "Arguments:" entry continues on lines indented deeper than its name. A
# docstring that continues an entry at the same indentation (several short entries run
# together in one paragraph) would otherwise break the field list; indent such lines.
_SECTION = re.compile(r"^\s*(Arguments|Args|Parameters|Attributes|Keyword Arguments):\s*$")
_ENTRY = re.compile(r"^\s*\**[\w.]+(?:,\s*\**[\w.]+)*(?:\s*\([^)]*\))?:(\s|$)")


def _indent_continuations(app, what, name, obj, options, lines):
    inside, base = False, None
    for i, line in enumerate(lines):
        if _SECTION.match(line):
            inside, base = True, None
            continue
        if not inside:
            continue
        if not line.strip():
            inside = False
            continue
        indent = len(line) - len(line.lstrip())
        if base is None:
            base = indent
        if indent < base:
            inside = False
        elif indent == base and not _ENTRY.match(line):
            lines[i] = " " * 4 + line


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    # NamedTuple fields are documented in their class's "Attributes:" section already.
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _indent_continuations, priority=400)
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
