"""Sphinx configuration of the dlmanager documentation.

Build with::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Intersphinx links to the Python and requests documentation need the network,
so they are off unless ``DLMANAGER_DOCS_INTERSPHINX=1`` is set.
"""

import os
import sys

# Document the checkout this file belongs to, installed or not.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import dlmanager

project = "dlmanager"
author = "dlmanager developers"
copyright = "dlmanager developers"
release = dlmanager.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Show defaults as written in the source (random.random, not its repr).
autodoc_preserve_defaults = True

if os.environ.get("DLMANAGER_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "requests": ("https://requests.readthedocs.io/en/latest/", None),
    }
else:
    # CI builds without internet: no inventories to fetch.
    intersphinx_mapping = {}

html_theme = "alabaster"
html_theme_options = {
    "description": "Background HTTP(S) downloads into a size-capped directory",
}
