"""Placeholder until the portable-tests branch lands its progress helper."""
from tqdm.auto import tqdm


def progress_bar(iterable=None, *, desc, total=None, enabled=True, **kw):
    return tqdm(iterable, desc=desc, total=total, disable=not enabled, **kw)
