"""Results of long runs, written as they finish so that an interrupted run resumes.

A `RunLog` is a JSON Lines file with one row per finished unit of work (a fine-tuning run, an
expert pass over a shard). Each row is appended and flushed to disk the moment it is done;
on restart the finished rows are read back and only the missing ones are computed.

A `RunLog` belongs to one writer (it cuts off a partial last line, which only its own writer
could have left). Files that other processes append to at the same time are read with a
`TailReader`, which never writes and reads complete lines only.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Sequence

from .files import dumps


class RunLog:
    """Rows keyed by some of their fields, stored in a JSONL file.

    Args:
        path: the JSONL file (created with its folder when missing).
        key: the field names that identify a row. Put everything that changes the result in
            the key (model, seed, settings), so a row is never reused for different work.

    A run killed while writing leaves a partial last line: it is dropped with a warning (its
    work is redone). A broken line anywhere else is a corrupt file and raises ValueError
    naming the line. A row written twice keeps its last value.
    """

    def __init__(self, path: str | os.PathLike, key: Sequence[str]):
        self.path = Path(path)
        self.key = tuple(key)
        self.rows: dict[tuple, dict] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        lines = self.path.read_bytes().split(b"\n")
        good_bytes = 0
        for i, line in enumerate(lines):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    if any(rest.strip() for rest in lines[i + 1:]):
                        raise ValueError(f"{self.path}, line {i + 1}: not JSON ({e.msg})") from None
                    warnings.warn(f"{self.path}, line {i + 1}: partial row from an interrupted "
                                  "run dropped; its work will be redone", stacklevel=3)
                    # Cut it off, or the next append would be glued onto it.
                    with open(self.path, "r+") as f:
                        f.truncate(good_bytes)
                    return
                self.rows[self._key_of(row, i + 1)] = row
            good_bytes += len(line) + 1

    def _key_of(self, row: dict, line: int | None = None) -> tuple:
        missing = [k for k in self.key if k not in row]
        if missing:
            where = f"{self.path}, line {line}" if line else str(self.path)
            raise ValueError(f"{where}: row has no field {missing[0]!r} (key: {list(self.key)})")
        # JSON has no tuples: compare keys in their JSON form, so lists and tuples match.
        return tuple(json.dumps(row[k], sort_keys=True) for k in self.key)

    def get(self, **key) -> dict | None:
        """The finished row with these key fields, or None."""
        return self.rows.get(self._key_of(key))

    def add(self, row: dict) -> dict:
        """Append a finished row and flush it to disk at once. Returns the row as it reads
        back (tuples become lists, NaN and inf become None), so a resumed run sees exactly
        what a fresh one saw."""
        line = dumps(row)  # strict JSON: NaN/inf are stored (and read back) as null
        row = json.loads(line)
        k = self._key_of(row)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows[k] = row
        return row

    def extend(self, rows: Sequence[dict]) -> None:
        """Append several finished rows with one flush to disk (`add` flushes each)."""
        lines = [dumps(row) for row in rows]
        parsed = [json.loads(line) for line in lines]
        keys = [self._key_of(row) for row in parsed]
        with open(self.path, "a") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        self.rows.update(zip(keys, parsed))

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: dict) -> bool:
        return self.get(**key) is not None


class TailReader:
    """Read-only view of a JSONL file that another process may be appending to.

    Each `read` returns the rows of the complete lines (ending in a newline) added since the
    last call; a last line still being written (or left partial by a killed writer) is left
    for a later call and never cut off (the file is not this reader's to change). A missing
    file reads as no rows.

    Args:
        path: the JSONL file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.offset = 0  # bytes of complete lines read so far
        self.lines = 0
        self.inode = None

    def read(self) -> list[dict]:
        """The rows of the complete lines appended since the last call (in file order).
        Raises ValueError naming the file and line of a complete line that is not JSON."""
        try:
            with open(self.path, "rb") as f:
                inode = os.fstat(f.fileno()).st_ino
                if inode != self.inode:  # a new file under this name (removed and written again)
                    self.inode, self.offset, self.lines = inode, 0, 0
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1  # 0 when no complete line was added
        rows = []
        for line in chunk[:end].split(b"\n")[:-1]:
            self.lines += 1
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{self.path}, line {self.lines}: not JSON ({e.msg})") from None
        self.offset += end
        return rows
