"""Sharded expert passes: several processes share each pass's batches, one store file each.

Under ``torchrun`` or ``accelerate launch`` (the launcher's ``RANK`` and ``WORLD_SIZE``), or
with ``robustft denoise --shard I/N``, every process runs the whole chain but computes only
its share of each expert pass: batch number b of a pass (`robustft.experts.run_pass` cuts a
pass into batches of consecutive samples) belongs to shard ``b % N``. A shard appends its
finished batches to its own file in the run folder, ``experts.rank-I-of-N.jsonl``, and never
writes another's, so no lock is needed: every file has exactly one writer (appends of several
processes to one file could interleave; appends of one process cannot).

The chain needs every row of a pass before it can go on (the detection passes decide which
samples are noisy, and so which samples the relabeling passes ask about), so a sharded run
goes pass by pass. At the end of each pass a shard gathers the other shards' batches of that
pass from their files; when some are still missing it either

- **waits** for them (under a launcher, or ``--shard I/N --wait``): it reads the other files
  again every `Shard.poll` seconds until they hold the missing batches. This is a file-based
  barrier: it needs no ``torch.distributed`` process group, works the same under every
  launcher, and needs only that every shard sees the run folder (one machine, or a shared
  file system across nodes); or
- **stops** with `ShardPending` (``--shard I/N`` without ``--wait``; the command exits with
  status 4 and says so): its share of the pass is stored. Run every shard, then run them
  again: each run gets one pass further; or finish in one process (no ``--shard``), which
  computes whatever is missing.

Every shard then computes the next pass's batch keys from the same complete rows, so all of
them agree on what the next pass asks. Resuming needs nothing special: a batch is keyed by its
content (`robustft.experts.run_pass`), and a `robustft.experts.PassStore` reads the batches of
every file in the run folder, ``experts.jsonl`` and every ``experts.rank-*-of-*.jsonl``,
whatever the number of shards that wrote them; so a re-run in one process after a sharded run
recomputes nothing, and a killed shard loses at most its batch in flight.

Only shard 0 writes the run's outputs (the denoised files, provenance, summary); they are
the same as a run in one process, because every batch is the same whichever process computes
it. `merge_shards` (``robustft merge RUN_FOLDER``) folds the shard files into
``experts.jsonl`` afterwards. Nothing needs it (every reader reads the shard files), but it
leaves the folder as a run in one process leaves it, each batch stored once. Run it when no
shard of the folder is running.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .runlog import RunLog, TailReader

STORE_FILE = "experts.jsonl"
SHARD_FILE = re.compile(r"experts\.rank-(\d+)-of-(\d+)\.jsonl")


@dataclass(frozen=True)
class Shard:
    """One process's share of every expert pass: the batches b with ``b % world == rank``.

    Attributes:
        rank: this shard, 0 <= rank < world.
        world: the number of shards (>= 1).
        wait: at the end of a pass, wait for the other shards' batches (True), or stop with
            `ShardPending` (False).
        poll: seconds between two reads of the other shards' files while waiting.
        timeout: give up waiting after this many seconds (`ShardPending`); None waits as long
            as it takes (under a launcher a failed rank stops all of them).
    """

    rank: int
    world: int
    wait: bool = True
    poll: float = 0.5
    timeout: float | None = None

    def __post_init__(self):
        if not (isinstance(self.world, int) and isinstance(self.rank, int) and 0 <= self.rank < self.world):
            raise ValueError(f"shard {self.rank}/{self.world}: need I/N with 0 <= I < N (e.g. 0/2 and 1/2)")
        if not self.poll > 0:
            raise ValueError(f"shard poll {self.poll}: give seconds > 0")

    def __str__(self) -> str:
        return f"{self.rank}/{self.world}"

    @property
    def file(self) -> str:
        """The name of this shard's store file in the run folder."""
        return f"experts.rank-{self.rank}-of-{self.world}.jsonl"

    def mine(self, batch: int) -> bool:
        """Whether batch number `batch` (0, 1, ... within a pass) is this shard's to compute."""
        return batch % self.world == self.rank

    @classmethod
    def parse(cls, text: str, wait: bool = False) -> "Shard":
        """The shard of ``"I/N"`` (as ``--shard`` takes it); ValueError for anything else."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m:
            raise ValueError(f"shard {text}: give I/N, this process's shard and the number of shards (e.g. 0/2)")
        return cls(int(m.group(1)), int(m.group(2)), wait=wait)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Shard | None":
        """The shard a launcher gives this process: ``RANK`` and ``WORLD_SIZE`` (torchrun,
        accelerate launch), else ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``. None when neither is
        set or the world is one process. A launcher's shard waits for the others."""
        env = os.environ if environ is None else environ
        for rank_var, world_var in (("RANK", "WORLD_SIZE"), ("LOCAL_RANK", "LOCAL_WORLD_SIZE")):
            rank, world = env.get(rank_var), env.get(world_var)
            if rank is None and world is None:
                continue
            if rank is None or world is None:
                given, missing = (rank_var, world_var) if world is None else (world_var, rank_var)
                raise ValueError(f"the environment sets {given} but not {missing}: run under torchrun or "
                                 "accelerate launch, or give the shard yourself (--shard I/N)")
            try:
                shard = cls(int(rank), int(world), wait=True)
            except ValueError:
                raise ValueError(f"the environment's {rank_var}={rank} and {world_var}={world} are not a shard "
                                 "(0 <= rank < world)") from None
            return shard if shard.world > 1 else None
        return None


class ShardPending(Exception):
    """A shard that does not wait stored its share of a pass, but the pass still misses
    other shards' batches: run them (or this command in one process), then run it again.

    Attributes:
        shard: the `Shard`.
        name: the pass.
        missing: how many batches of the pass are still missing.
        folder: the run folder.
    """

    def __init__(self, shard: Shard, name: str, missing: int, folder: Path, waited: float | None = None):
        self.shard, self.name, self.missing, self.folder = shard, name, missing, Path(folder)
        done = (f"waited {waited:.0f} s for the other shards, and" if waited is not None
                else "stored its share of the pass, and")
        super().__init__(
            f"shard {shard} {done} the {name!r} pass still misses {missing} batch{'es' * (missing != 1)} of the "
            f"other shards (files {self.folder / 'experts.rank-*-of-*.jsonl'}). Run every shard "
            f"(--shard I/{shard.world}) on this folder, then run them again: each run gets one pass further "
            "(--wait runs them together); or run once without --shard to finish in one process, reusing every "
            "stored batch")


def shard_files(folder: str | os.PathLike) -> list[Path]:
    """The shard store files (``experts.rank-I-of-N.jsonl``) in a run folder, in order of N, I."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(2)), int(m.group(1)), p) for p in folder.iterdir() if (m := SHARD_FILE.fullmatch(p.name))]
    return [p for *_, p in sorted(found)]


def merge_shards(folder: str | os.PathLike) -> dict:
    """Fold the shard files of a run folder into its ``experts.jsonl`` and remove them.

    A batch already in ``experts.jsonl``, or in an earlier shard file, is not written again,
    so the folder ends with every batch stored once. A partial last line of a shard file (a
    shard killed while writing) is dropped: that batch is recomputed by the next run. Run it
    when no shard of this folder is running.

    Returns counts: ``files`` (shard files merged), ``merged`` (batches added),
    ``duplicates`` (batches that were already stored), ``batches`` (in ``experts.jsonl`` now).
    """
    folder = Path(folder)
    files = shard_files(folder)
    log = RunLog(folder / STORE_FILE, key=("batch",))
    new, duplicates = {}, 0
    for path in files:
        for row in TailReader(path).read():
            if "batch" not in row:
                raise ValueError(f"{path}: a row without a 'batch' field; not an expert store file")
            if row["batch"] in new or log.get(batch=row["batch"]) is not None:
                duplicates += 1
            else:
                new[row["batch"]] = row
    log.extend(list(new.values()))  # flushed to disk before any shard file goes
    for path in files:
        path.unlink()
    return {"files": len(files), "merged": len(new), "duplicates": duplicates, "batches": len(log)}
