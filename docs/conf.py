"""Sphinx configuration of the API reference: `sphinx-build -W -b html docs docs/_build/html`.

The pages are reStructuredText; the Markdown notes in this folder (PERFORMANCE.md, RESULTS.md,
CHECKPOINTS.md) and plots/ are read on GitHub and are not part of the build.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The reference documents this checkout's package, not whichever copy is installed.
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

with open(os.path.join(ROOT, "robust_losses", "__init__.py")) as f:
  release = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

project = "robust_losses"
author = "robust_losses authors"
copyright = "robust_losses authors"
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "plots", "*.md"]

# Google-style docstrings (Args/Returns/Raises/References/Examples).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# Parameter types go into the parameter lists, so signatures stay short (the dataclass and union
# annotations are long).
autodoc_typehints = "description"
autodoc_member_order = "bysource"
python_use_unqualified_type_names = True
add_module_names = False

# textmacros: the docstrings write identifiers as \text{min\_prob}, which plain MathJax text mode shows
# with the backslash.
mathjax3_config = {"loader": {"load": ["[tex]/textmacros"]}, "tex": {"packages": {"[+]": ["textmacros"]}}}

html_theme = "alabaster"
html_title = f"robust_losses {release}"
html_show_sourcelink = False
# Wide enough for the examples' 100-column code lines.
html_theme_options = {"page_width": "1320px", "sidebar_width": "240px", "body_max_width": "none"}
