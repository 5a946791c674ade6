"""The model-running side of RobustFT: every expert pass, batched, stored as it goes.

An *expert pass* asks the model one kind of prompt for a list of samples and returns one
plain row per sample:

- multiple choice is answered by **scoring** the options (`score_options`, one forward
  pass, every logit reduction through `robustft.kernels`): the row holds the predicted
  letter and, per option, the summed log-probability, the token count and the mean
  next-token entropy;
- short answers (and the reasoning expert) are **generated** (`generate`): the row holds the
  text, the extracted answer, and the response's response entropy (mean token NLL), mean
  token entropy and largest token NLL.

The pass asks its backend (`robustft.backends.Backend`: the in-process `LanguageModel`, or
an OpenAI-compatible server, `robustft.backends.server.ServerBackend`) and the stages
(`detect`, `relabel`, `select`) only ever see these rows as arrays.

Resuming: with a `PassStore`, each pass is cut into batches of consecutive samples and each
finished batch is appended to ``experts.jsonl`` in the run folder at once. A batch is keyed
by a hash of everything that decides its rows (the pass, the backend's
`fingerprint`, the decoding settings and the exact prompts and options), so a re-run reuses every finished batch, a changed
config or input recomputes only the batches it changes, and a killed run loses at most the
batch in flight.

Sharding: under ``torchrun``/``accelerate launch`` or with a `robustft.shards.Shard`, each
process computes only its share of each pass's batches, stores them in its own file
(``experts.rank-I-of-N.jsonl``) and gathers the others' from theirs; see `robustft.shards`.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .backends import Backend, require
from .kernels import OptionScores
from .progress import progress_bar
from .prompts import extract_answer
from .runlog import RunLog, TailReader
from .sample import MC, Sample, letter
from .shards import STORE_FILE, Shard, ShardPending, shard_files

ROW_FORMAT = 3  # bump when a pass's rows gain or change fields: older stored batches are recomputed


class PassStore:
    """Finished expert batches of one run folder.

    It reads the batches of every store file in the folder: ``experts.jsonl`` and the shard
    files ``experts.rank-I-of-N.jsonl`` (`robustft.shards`), whichever process wrote them.
    It writes only its own file: ``experts.jsonl`` for a run in one process, the shard's file
    for a shard. Each file has one writer, so appends need no lock.

    Args:
        folder: the run folder (created when missing).
        force: forget every stored batch first (recompute everything; every store file of
            the folder is removed). Not with a shard: the shards would remove each other's work.
        on_batch: called with the number of batches computed so far after each one is
            stored (tests use it to interrupt a run).
        shard: this process's `robustft.shards.Shard`; None takes it from the launcher's
            environment (`Shard.from_env`: ``RANK``/``WORLD_SIZE`` under torchrun or
            accelerate launch), and a run in one process when there is none.
    """

    def __init__(self, folder: str | os.PathLike, force: bool = False,
                 on_batch: Callable[[int], None] | None = None, shard: Shard | None = None):
        self.folder = Path(folder)
        shard = shard if shard is not None else Shard.from_env()
        self.shard = shard if shard is not None and shard.world > 1 else None
        if force and self.shard is not None:
            raise ValueError(f"force=True (--force) with shard {self.shard}: the shards would remove each other's "
                             f"batches; recompute in one process, or remove the store files of {self.folder} first")
        if force:
            for path in (self.folder / STORE_FILE, *shard_files(self.folder)):
                path.unlink(missing_ok=True)
        own = self.folder / (self.shard.file if self.shard is not None else STORE_FILE)
        self.log = RunLog(own, key=("batch",))
        # Every other store file of the folder, read-only: other shards may be appending to them.
        self._others: dict[Path, TailReader] = {}
        self._found: dict[str, list[dict]] = {}
        self._read_others()
        self.computed = 0  # batches computed (not read back) by this process
        self.reused = 0
        self.on_batch = on_batch

    def _read_others(self) -> None:
        """Read the rows added to the other store files since the last call."""
        for path in (self.folder / STORE_FILE, *shard_files(self.folder)):
            if path != self.log.path:
                for row in self._others.setdefault(path, TailReader(path)).read():
                    if "batch" not in row:
                        raise ValueError(f"{path}: a row without a 'batch' field; not an expert store file")
                    self._found[row["batch"]] = row["rows"]

    def _lookup(self, key: str) -> list[dict] | None:
        row = self.log.get(batch=key)
        return row["rows"] if row is not None else self._found.get(key)

    def get(self, key: str) -> list[dict] | None:
        rows = self._lookup(key)
        if rows is not None:
            self.reused += 1
        return rows

    def mine(self, batch: int) -> bool:
        """Whether batch number `batch` of a pass is this process's to compute (always, in
        one process)."""
        return self.shard is None or self.shard.mine(batch)

    def add(self, key: str, name: str, rows: list[dict]) -> None:
        self.computed += 1
        self.log.add({"batch": key, "pass": name, "rows": rows})
        if self.on_batch is not None:
            self.on_batch(self.computed)

    def gather(self, name: str, batches: list, progress: bool = False) -> list[list[dict]]:
        """A pass's batches with the other shards' filled in: `batches` holds each batch's
        rows, or its key (a str) where another shard computes it. Reads those from the other
        shards' files, waiting for them if the shard waits; else raises
        `robustft.shards.ShardPending` when some are still missing."""
        keys = {b for b in batches if isinstance(b, str)}
        if not keys:
            return batches
        self._read_others()
        missing = {k for k in keys if self._lookup(k) is None}
        if missing and not self.shard.wait:
            raise ShardPending(self.shard, name, len(missing), self.folder)
        if missing and progress:
            print(f"shard {self.shard}: waiting for {len(missing)} batches of the {name!r} pass from the other "
                  f"shards", file=sys.stderr)
        start = time.monotonic()
        while missing:
            if self.shard.timeout is not None and time.monotonic() - start > self.shard.timeout:
                raise ShardPending(self.shard, name, len(missing), self.folder, waited=time.monotonic() - start)
            time.sleep(self.shard.poll)
            self._read_others()
            missing = {k for k in missing if self._lookup(k) is None}
        self.reused += len(keys)
        return [self._lookup(b) if isinstance(b, str) else b for b in batches]


@dataclass
class ExpertOutputs:
    """One expert pass over n samples, as arrays (K = the most options of any sample).

    Attributes:
        answers: n answers: an option letter (mc) or the extracted text (short); None where
            no answer could be read from a generation.
        scores: the `OptionScores` of the scored rows, numpy ``[n, K]`` (``-inf`` log-probs,
            0 tokens and nan entropies on generated rows and absent options).
        texts: n generated responses ("" for scored rows).
        response_entropy: [n] float64, the paper's response entropy (mean token NLL) of the
            answer as the model gave it: the chosen option's tokens (scored) or the whole
            generated response (generated).
        token_entropy: [n] float64 mean Shannon entropy over the same tokens.
        max_token_nll: [n] float64 the largest token NLL of a generated response (its least
            sure token: in step-by-step recall, the step the model is least sure of); nan for
            scored rows.
        agreement: [n] float64 for a self-consistent reasoning pass (several sampled paths,
            `robustft.detect.self_consistency`): the share of paths that gave `answers`
            (nan where none answered); None for a single pass.
        finished: n flags: True where a generated response ended by itself, False where the
            generation budget (or the context) cut it off; None for scored rows.
        extracted: n flags: True where the answer was not read from the response but given
            by the answer step after it (`robustft.detect.answer_step`); None when no step ran.
        seconds: time spent computing (batches read back from a store cost none).
    """

    answers: list
    scores: OptionScores
    texts: list
    response_entropy: np.ndarray
    token_entropy: np.ndarray
    max_token_nll: np.ndarray
    seconds: float = 0.0
    agreement: np.ndarray | None = None
    finished: list | None = None
    extracted: list | None = None

    @property
    def probs(self) -> np.ndarray:
        """[n, K] option probabilities renormalised over each row's options (rows with no
        scores are all nan)."""
        return self.scores.probs

    @property
    def answer_uncertainty(self) -> np.ndarray:
        """[n] how unsure a generated pass is of its own answer, in nats (-log of a
        probability): with several sampled paths (self-consistency, `agreement` set) -log of
        the share of paths that gave the answer; with one response its largest token NLL
        (`max_token_nll`). nan for scored rows and where no answer was given."""
        if self.agreement is None:
            return self.max_token_nll
        with np.errstate(divide="ignore"):
            return np.where(self.agreement > 0, -np.log(self.agreement), np.nan)

    @classmethod
    def empty(cls, n: int, width: int = 0, seconds: float = 0.0) -> "ExpertOutputs":
        """A pass over n samples that answered none of them (no answers, no scores)."""
        scores = OptionScores(np.full((n, width), -np.inf), np.zeros((n, width), dtype=np.int64),
                              np.full((n, width), np.nan))
        nan = lambda: np.full(n, np.nan)  # noqa: E731
        return cls([None] * n, scores, [""] * n, nan(), nan(), nan(), seconds, finished=[None] * n)

    @classmethod
    def from_rows(cls, rows: Sequence[dict], seconds: float = 0.0) -> "ExpertOutputs":
        """The pass from its stored rows (JSON: absent values are null)."""
        width = max((len(r.get("logprobs", ())) for r in rows), default=0)
        out = cls.empty(len(rows), width, seconds)
        lp, nt, ent = out.scores
        num = lambda v: np.nan if v is None else v  # noqa: E731
        for i, r in enumerate(rows):
            k = len(r.get("logprobs", ()))
            if k:
                lp[i, :k] = [-np.inf if v is None else v for v in r["logprobs"]]
                nt[i, :k] = r["n_tokens"]
                ent[i, :k] = [num(v) for v in r["entropy"]]
            out.answers[i], out.texts[i], out.finished[i] = r["answer"], r.get("text", ""), r.get("finished")
            out.response_entropy[i] = num(r["response_entropy"])
            out.token_entropy[i] = num(r["token_entropy"])
            out.max_token_nll[i] = num(r.get("max_token_nll"))
        return out

    def take(self, rows: Sequence[int], n: int) -> "ExpertOutputs":
        """This pass (over len(rows) samples) as a pass over n samples, its row j placed at
        position rows[j]; the other positions have no answer and no scores."""
        full = ExpertOutputs.empty(n, self.scores.logprobs.shape[1], self.seconds)
        rows = np.asarray(rows, dtype=np.int64)
        for src, dst in enumerate(rows):
            full.answers[dst], full.texts[dst] = self.answers[src], self.texts[src]
            full.finished[dst] = self.finished[src] if self.finished is not None else None
        if self.extracted is not None:
            full.extracted = [False] * n
            for src, dst in enumerate(rows):
                full.extracted[dst] = self.extracted[src]
        for mine, theirs in zip(self.scores, full.scores):
            theirs[rows] = mine
        for name in ("response_entropy", "token_entropy", "max_token_nll"):
            getattr(full, name)[rows] = getattr(self, name)
        return full


def _finite(v: float):
    return float(v) if np.isfinite(v) else None


def _score_rows(lm: Backend, samples, prompts, batch_size, by=None, responses=None) -> list[dict]:
    sc = lm.score_options(samples, prompts, by=by, responses=responses, batch_size=batch_size)
    best, h = sc.best(), sc.response_entropy
    rows = []
    for i, s in enumerate(samples):
        k, j = len(s.options), best[i]
        rows.append({"answer": letter(j),
                     "logprobs": [_finite(v) for v in sc.logprobs[i, :k]],
                     "n_tokens": [int(v) for v in sc.n_tokens[i, :k]],
                     "entropy": [_finite(v) for v in sc.entropy[i, :k]],
                     "response_entropy": _finite(h[i, j]), "token_entropy": _finite(sc.entropy[i, j])})
    return rows


def _generate_rows(lm, samples, prompts, batch_size, max_new_tokens, temperature=0.0, seed=0) -> list[dict]:
    gens = lm.generate(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature,
                       seed=seed, ids=[s.id for s in samples])
    return [{"answer": extract_answer(g.text, s), "text": g.text, "finished": g.finished,
             "response_entropy": _finite(g.response_entropy), "max_token_nll": _finite(g.max_token_nll),
             "token_entropy": _finite(float(g.entropy.mean()) if len(g.entropy) else np.nan)}
            for g, s in zip(gens, samples)]


def _batch_key(name: str, lm: Backend, settings: dict, samples, prompts) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([name, ROW_FORMAT, lm.fingerprint, settings], sort_keys=True).encode())
    for s, p in zip(samples, prompts):
        h.update(json.dumps([s.id, s.task, list(s.options), p]).encode())
    return h.hexdigest()[:24]


def run_pass(name: str, lm: Backend, samples: Sequence[Sample], prompts: Sequence[str], *,
             generate_all: bool = False, by: str | None = None, responses: Sequence[str] | None = None,
             max_new_tokens: int = 64, temperature: float = 0.0, seed: int = 0, batch_size: int = 64,
             store: PassStore | None = None, progress: bool = True) -> ExpertOutputs:
    """Run one expert pass: score (mc) or generate (short answers, or every sample with
    `generate_all`) each prompt, in batches of `batch_size` consecutive samples.

    Args:
        name: the pass ("direct", "reasoning", "context", "review", "checker"), shown in the
            progress bar and part of each batch's key.
        prompts: one prompt text per sample (before the chat template).
        generate_all: generate every sample, multiple choice included (the reasoning expert).
        by: score options by "letter" or "text" (default `lm.answer_by`).
        responses: for scored rows, what the model already wrote before ``Answer:`` (see
            `score_options`); part of each batch's key.
        max_new_tokens: the generation budget.
        temperature: 0 generates greedily; > 0 samples (scored rows are unaffected). Each
            batch draws from its own generator, seeded by `seed` and the batch's position,
            so a stored batch and a recomputed one agree.
        store: where finished batches are kept (resume); None keeps nothing. A sharded store
            (`PassStore` with a `robustft.shards.Shard`) computes only this shard's batches
            (batch b when ``b % world == rank``) and gathers the others' from their files.

    Returns the pass as `ExpertOutputs`, rows in the samples' order.
    """
    samples, prompts = list(samples), list(prompts)
    if len(prompts) != len(samples):
        raise ValueError(f"{len(prompts)} prompts for {len(samples)} samples")
    if responses is not None:  # a response continues its prompt: both decide the row
        keyed = [f"{p}\x00{r}" for p, r in zip(prompts, responses)]
    generates = generate_all or any(s.task != MC for s in samples)
    scores = not generate_all and any(s.task == MC for s in samples)
    require(lm, *(["score_options"] if scores else []), *(["generate"] if generates else []),
            stage=f"the {name} expert")
    settings = {"max_new_tokens": max_new_tokens if generates else None,
                "generate_all": generate_all, "by": by or lm.answer_by}
    if temperature > 0 and generates:  # greedy passes keep the keys their stored batches have
        settings.update(temperature=temperature, seed=seed)
    batches: list = []  # per batch: its rows, or its key where another shard computes it
    seconds = 0.0
    starts = range(0, len(samples), batch_size)
    for index, start in enumerate(progress_bar(starts, desc=f"{name} expert", enabled=progress)):
        part, ps = samples[start:start + batch_size], prompts[start:start + batch_size]
        rs = responses[start:start + batch_size] if responses is not None else None
        key = _batch_key(name, lm, settings, part, keyed[start:start + batch_size] if rs is not None else ps)
        done = store.get(key) if store is not None else None
        if done is None and store is not None and not store.mine(index):
            batches.append(key)  # another shard's: gathered from its file below
            continue
        if done is None:
            t0 = time.perf_counter()
            done = [None] * len(part)
            scored = [i for i, s in enumerate(part) if s.task == MC and not generate_all]
            written = sorted(set(range(len(part))) - set(scored))
            for idx, fn in ((scored, lambda ss, pp: _score_rows(lm, ss, pp, batch_size, by,
                                                                [rs[i] for i in scored] if rs is not None else None)),
                            (written, lambda ss, pp: _generate_rows(lm, ss, pp, batch_size, max_new_tokens,
                                                                    temperature, seed * 1_000_003 + start))):
                if idx:
                    for i, r in zip(idx, fn([part[i] for i in idx], [ps[i] for i in idx])):
                        done[i] = r
            seconds += time.perf_counter() - t0
            if store is not None:
                store.add(key, name, done)
        batches.append(done)
    if store is not None:  # a shard needs the other shards' batches before the chain goes on
        batches = store.gather(name, batches, progress)
    return ExpertOutputs.from_rows([r for b in batches for r in b], seconds)
