"""Every file robustft writes goes through here: atomic, and JSON that is strict.

- **Atomic**: a file is written under a temporary name and renamed when complete, so a crash
  never leaves half a file under the real name, and an existing file is replaced only by a
  complete one. (`robustft.runlog.RunLog` appends instead, one flushed line per finished
  unit of work; it formats its lines with `dumps`.)
- **Strict JSON**: Python's `json` writes ``NaN`` and ``Infinity``, which are not JSON and which
  other readers (JavaScript, jq, most JSON libraries) reject. `jsonable` writes them as
  ``null``, turns numpy scalars and arrays into plain numbers and lists, and `dumps` refuses
  anything else that is not JSON.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache folder: `path`, else $ROBUSTFT_CACHE, else ~/.cache/robustft. (Pre-trained toy
    models and converted GGUF files are kept there.)"""
    if path is not None:
        return Path(path)
    env = os.environ.get("ROBUSTFT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "robustft"


def jsonable(obj):
    """`obj` with non-finite floats as None, numpy values as Python ones, tuples as lists and
    paths as strings (recursively through dicts and lists)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def dumps(obj, **kw) -> str:
    """Strict JSON text of `obj` (see `jsonable`); a ValueError for anything else non-JSON."""
    return json.dumps(jsonable(obj), allow_nan=False, ensure_ascii=False, **kw)


@contextlib.contextmanager
def atomic_open(path, **kw):
    """Open ``path.PID.tmp`` for writing text and rename it to `path` on success; on an error
    the temporary file is removed and `path` is left as it was. The process id keeps the
    temporary files of processes that write the same file at once (the shards of a sharded
    run, `robustft.shards`) apart: each renames a complete file, the last one stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", **kw) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, obj, indent: int | None = 1) -> Path:
    """Write `obj` as strict JSON, atomically. Returns the path."""
    with atomic_open(path) as f:
        f.write(dumps(obj, indent=indent) + "\n")
    return Path(path)


def write_jsonl(path, rows: Iterable) -> Path:
    """Write one strict-JSON line per row, atomically. Returns the path."""
    with atomic_open(path) as f:
        for row in rows:
            f.write(dumps(row) + "\n")
    return Path(path)
