"""Sphinx configuration: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.

The build needs neither a cluster nor the network: the API reference is read
from the docstrings (numpydoc), the notebook is rendered with the outputs it
stores (the test suite executes it), and the intersphinx inventories are the
hand-written ones in ``_inventories/`` (see the README there).
"""

import zlib
from pathlib import Path

import unnest

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

project = "unnest"
author = "the unnest developers"
copyright = "2026, the unnest developers"
release = version = unnest.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_nb",
]

exclude_patterns = ["_build", "_inventories", "**.ipynb_checkpoints"]
templates_path: list[str] = []
html_static_path = ["_static"]
html_theme = "pydata_sphinx_theme"
html_title = f"unnest {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_sidebars = {"changelog": [], "faq": []}

# -- The API reference --------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc's Parameters say it, in words
numpydoc_show_class_members = False
numpydoc_xref_param_type = True
numpydoc_xref_aliases = {
    "Delayed": "dask.delayed.Delayed",
    "callable": "callable",
}
numpydoc_xref_ignore = {"optional", "default", "or", "of"}

# -- The notebook -------------------------------------------------------------

# Rendered with its stored outputs: the build runs no kernel and no cluster.
# tests/test_main.py executes the notebook.
nb_execution_mode = "off"
# Sphinx reads sources under docs/ only: the notebook is copied in, into a
# folder that git ignores, when it changed. Its link to the README (beside
# it in the repository) leads to the docs' front page in the copy.
_NOTEBOOK = ROOT / "notebooks" / "futures_within_futures.ipynb"
_COPY = DOCS / "_notebooks" / _NOTEBOOK.name
_TEXT = _NOTEBOOK.read_text().replace("](../README.rst)", "](../index.rst)")
if not _COPY.exists() or _COPY.read_text() != _TEXT:
    _COPY.parent.mkdir(exist_ok=True)
    _COPY.write_text(_TEXT)

# -- Links to Python, dask and distributed, offline ---------------------------


def _inventory(name: str) -> str:
    """Compile ``_inventories/NAME.txt`` to an objects.inv; return its path."""
    lines = []
    for line in (DOCS / "_inventories" / f"{name}.txt").read_text().splitlines():
        if line.strip():
            target, role, uri = line.split()
            lines.append(f"{target} {role} 1 {uri} -\n")
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {name}\n"
        "# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    path = DOCS / "_build" / "inventories" / f"{name}.inv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode() + zlib.compress("".join(lines).encode()))
    return str(path)


intersphinx_mapping = {
    "python": ("https://docs.python.org/3", _inventory("python")),
    "dask": ("https://docs.dask.org/en/stable", _inventory("dask")),
    "distributed": ("https://distributed.dask.org/en/stable", _inventory("distributed")),
}
