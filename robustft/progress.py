"""Progress: a bar where someone watches, a line every 30 seconds in a log.

Every loop of the library that can take a while (pre-training, fine-tuning, scoring,
generating, each expert pass) goes through `progress_bar`. A bar is drawn on a terminal and
in a Jupyter notebook. When stderr is not a terminal (``make demo > log 2>&1``, CI) no bar is
drawn — tqdm there would print a new partial bar at every refresh, hundreds of lines per
stage — but a stage that runs longer than `HEARTBEAT_SECONDS` prints one plain line
(``reasoning expert:  30% 3/10 [01:02<02:24, 20.7s/it]``) every `HEARTBEAT_SECONDS`, and one when
it ends, so a long run is never silent for minutes; short stages stay silent.
``ROBUSTFT_PROGRESS=1`` forces bars on, ``ROBUSTFT_PROGRESS=0`` switches bars and lines off.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading

ENV = "ROBUSTFT_PROGRESS"
HEARTBEAT_SECONDS = 30.0


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
    """A tqdm bar over `iterable` (or a manual one with `total`): drawn when `enabled` and
    `interactive()`; when `enabled` in a log, the heartbeat lines of the module docstring
    (none when $ROBUSTFT_PROGRESS is "0"). Extra keywords go to tqdm. Returns the tqdm object
    (iterate it, call ``set_postfix``/``update`` on it as usual; a disabled bar accepts the
    same calls)."""
    from tqdm.auto import tqdm

    if enabled and not interactive() and os.environ.get(ENV) != "0" and "file" not in kw:
        return _log_bar()(iterable, desc=desc, total=total, **kw)
    return tqdm(iterable, desc=desc, total=total, disable=not (enabled and interactive()), **kw)


class _Discard:
    def write(self, text):
        pass

    def flush(self):
        pass


def _log_bar():
    """The tqdm class of a bar in a log: it counts as tqdm does, draws nothing, and a daemon
    thread prints its state to stderr every `HEARTBEAT_SECONDS` until it is closed."""
    from tqdm import tqdm

    class LogBar(tqdm):
        def __init__(self, *args, **kw):
            super().__init__(*args, file=_Discard(), mininterval=0, miniters=1, **kw)
            self._stop, self._printed = threading.Event(), False
            threading.Thread(target=self._beat, args=(HEARTBEAT_SECONDS,), daemon=True).start()

        def _beat(self, every):
            while not self._stop.wait(every):
                self._line()

        def _line(self, end=""):
            print(self.format_meter(**{**self.format_dict, "ncols": 0}) + end, file=sys.stderr, flush=True)
            self._printed = True

        def close(self):
            stop = getattr(self, "_stop", None)
            if stop is not None and not stop.is_set():
                stop.set()
                if self._printed:
                    self._line(" done")
            super().close()

    return LogBar


@contextlib.contextmanager
def library_bars(enabled: bool = True):
    """Within this block, transformers' own progress bars (loading weights, converting a
    GGUF file) show only where robustft's bars show (`interactive`), and not at all unless
    `enabled`; in a log they would print a line per refresh. The caller's setting is
    restored afterwards."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if not (enabled and interactive()):
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
