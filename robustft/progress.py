"""Progress bars that show where someone watches and stay out of logs.

Every loop of the library that can take a while (pre-training, fine-tuning, scoring,
generating) goes through `progress_bar`. A bar is drawn on a terminal and in a Jupyter
notebook; when stderr is not a terminal (``make demo > log 2>&1``, CI) it is switched off,
because tqdm there prints a new partial bar at every refresh: hundreds of lines per stage.
``ROBUSTFT_PROGRESS=1`` forces bars on, ``ROBUSTFT_PROGRESS=0`` off.
"""
from __future__ import annotations

import os
import sys

ENV = "ROBUSTFT_PROGRESS"


def in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel (where tqdm draws a widget)."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def interactive() -> bool:
    """Whether a progress bar has someone to show it to: $ROBUSTFT_PROGRESS when set ("1" or
    "0"), else a Jupyter kernel or stderr on a terminal."""
    forced = os.environ.get(ENV)
    if forced in ("0", "1"):
        return forced == "1"
    if in_notebook():
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(iterable=None, *, desc: str, total: int | None = None, enabled: bool = True, **kw):
    """A tqdm bar over `iterable` (or a manual one with `total`), disabled unless `enabled`
    and `interactive()`. Extra keywords go to tqdm. Returns the tqdm object (iterate it, call
    ``set_postfix``/``update`` on it as usual; a disabled bar accepts the same calls)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=not (enabled and interactive()), **kw)
