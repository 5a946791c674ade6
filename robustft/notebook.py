"""Small helpers the book's notebooks share (and nothing else needs).

- `COLAB_INSTALL_CELL`: the first code cell of every chapter, verbatim (a test checks it).
  It installs the package when the notebook runs on Colab and does nothing elsewhere; it
  cannot import anything from this package, since on Colab the package is not there yet.
- `glue`: hands a value measured in the notebook to the book's prose (MyST-NB's
  ``{glue:text}`` role), so no number in a chapter's text is typed in. Without MyST-NB (on
  Colab) it does nothing: the value is printed by the cell anyway.
"""
from __future__ import annotations

# Where the book and the package live; the same URL is `repository.url` in _config.yml.
REPOSITORY = "https://github.com/robustft/robustft"

COLAB_INSTALL_CELL = f'''\
# On Colab: install robustft with its GPU, retrieval and comparison extras (Colab brings
# torch). Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "robustft[gpu,embed,compare] @ git+{REPOSITORY}"], check=True)'''


def glue(name: str, value, display: bool = False):
    """`myst_nb.glue(name, value, display=display)` when MyST-NB is installed; returns value.

    In a chapter's Markdown, ``{glue:text}`name:.3f` `` then shows the number this run
    measured. Tag the cell ``nbval-ignore-output`` when the value comes from a model.
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar: MyST-NB formats
        value = value.item()                                            # only Python numbers
    _glue(name, value, display=display)
    return value
