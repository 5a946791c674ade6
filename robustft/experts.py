"""The model-running side of RobustFT: every expert pass, batched, stored as it goes.

An *expert pass* asks the model one kind of prompt for a list of samples and returns one
plain row per sample:

- multiple choice is answered by **scoring** the options (`score_options`, one forward
  pass, every logit reduction through `robustft.kernels`): the row holds the predicted
  letter and, per option, the summed log-probability, the token count and the mean
  next-token entropy;
- short answers (and the reasoning expert) are **generated** (`generate`): the row holds the
  text, the extracted answer, and the response's mean token NLL and mean token entropy.

The stages (`detect`, `relabel`, `select`) only ever see these rows as arrays, so outputs
from another backend (vLLM, an API) can replace a pass.

Resuming: with a `PassStore`, each pass is cut into batches of consecutive samples and each
finished batch is appended to ``experts.jsonl`` in the run folder at once. A batch is keyed
by a hash of everything that decides its rows (the pass, the model, the decoding settings
and the exact prompts and options), so a re-run reuses every finished batch, a changed
config or input recomputes only the batches it changes, and a killed run loses at most the
batch in flight.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .inference import generate, score_options
from .model import LanguageModel
from .progress import progress_bar
from .prompts import extract_answer
from .runlog import RunLog
from .sample import MC, Sample

STORE_FILE = "experts.jsonl"
ROW_FORMAT = 2  # bump when a pass's rows gain or change fields: older stored batches are recomputed


def model_fingerprint(lm: LanguageModel) -> str:
    """What identifies the model's outputs: its name, adapter and answer conventions (and
    the toy model's config hash)."""
    parts = [lm.name, lm.answer_by, str(lm.chat), str(lm.info.get("fingerprint", ""))]
    return "|".join(parts)


class PassStore:
    """Finished expert batches of one run folder (``<folder>/experts.jsonl``).

    Args:
        folder: the run folder (created when missing).
        force: forget every stored batch first (recompute everything).
        on_batch: called with the number of batches computed so far after each one is
            stored (tests use it to interrupt a run).
    """

    def __init__(self, folder: str | os.PathLike, force: bool = False,
                 on_batch: Callable[[int], None] | None = None):
        path = Path(folder) / STORE_FILE
        if force and path.exists():
            path.unlink()
        self.log = RunLog(path, key=("batch",))
        self.computed = 0  # batches computed (not read back) by this process
        self.reused = 0
        self.on_batch = on_batch

    def get(self, key: str) -> list[dict] | None:
        row = self.log.get(batch=key)
        if row is not None:
            self.reused += 1
            return row["rows"]
        return None

    def add(self, key: str, name: str, rows: list[dict]) -> None:
        self.computed += 1
        self.log.add({"batch": key, "pass": name, "rows": rows})
        if self.on_batch is not None:
            self.on_batch(self.computed)


@dataclass
class ExpertOutputs:
    """One expert pass over n samples, as arrays (K = the most options of any sample).

    Attributes:
        answers: n answers: an option letter (mc) or the extracted text (short); None where
            no answer could be read from a generation.
        logprobs: [n, K] float64 summed log p(option | prompt) (mc rows; -inf elsewhere).
        n_tokens: [n, K] int, tokens per option (0 where absent).
        entropy: [n, K] float64 mean Shannon entropy (nats) of the next-token distribution
            over each option's tokens (nan where absent).
        texts: n generated responses ("" for scored rows).
        nll: [n] float64 mean token NLL of the answer as the model gave it: the chosen
            option's tokens (scored) or the whole generated response (generated).
        token_entropy: [n] float64 mean Shannon entropy over the same tokens.
        max_nll: [n] float64 the largest token NLL of a generated response (its least sure
            token: in step-by-step recall, the step the model is least sure of); nan for
            scored rows.
        agreement: [n] float64 for a self-consistent reasoning pass (several sampled paths,
            `robustft.detect.self_consistency`): the share of paths that gave `answers`
            (nan where none answered); None for a single pass.
    """

    answers: list
    logprobs: np.ndarray
    n_tokens: np.ndarray
    entropy: np.ndarray
    texts: list
    nll: np.ndarray
    token_entropy: np.ndarray
    max_nll: np.ndarray | None = None
    seconds: float = 0.0  # time spent computing (batches read back from a store cost none)
    agreement: np.ndarray | None = None

    @property
    def answer_nll(self) -> np.ndarray:
        """[n] how unsure a generated pass is of its own answer, as a negative log-probability
        in nats: with several sampled paths (self-consistency, `agreement` set) -log of the
        share of paths that gave the answer; with one response its largest token NLL. nan for
        scored rows and where no answer was given."""
        if self.agreement is None:
            return self.max_nll
        with np.errstate(divide="ignore"):
            return np.where(self.agreement > 0, -np.log(self.agreement), np.nan)

    @classmethod
    def from_rows(cls, rows: Sequence[dict], seconds: float = 0.0) -> "ExpertOutputs":
        n = len(rows)
        width = max((len(r.get("logprobs", ())) for r in rows), default=0)
        lp = np.full((n, width), -np.inf)
        nt = np.zeros((n, width), dtype=np.int64)
        ent = np.full((n, width), np.nan)
        for i, r in enumerate(rows):
            k = len(r.get("logprobs", ()))
            if k:
                # JSON has no -inf/nan: absent values are stored as null.
                lp[i, :k] = [-np.inf if v is None else v for v in r["logprobs"]]
                nt[i, :k] = r["n_tokens"]
                ent[i, :k] = [np.nan if v is None else v for v in r["entropy"]]
        nan = lambda v: np.nan if v is None else v  # noqa: E731
        return cls([r["answer"] for r in rows], lp, nt, ent, [r.get("text", "") for r in rows],
                   np.array([nan(r["nll"]) for r in rows], dtype=np.float64),
                   np.array([nan(r["token_entropy"]) for r in rows], dtype=np.float64),
                   np.array([nan(r.get("max_nll")) for r in rows], dtype=np.float64), seconds)

    @property
    def probs(self) -> np.ndarray:
        """[n, K] option probabilities renormalised over each row's options (rows with no
        scores are all nan)."""
        out = np.full(self.logprobs.shape, np.nan)
        ok = np.isfinite(self.logprobs).any(axis=1)
        if ok.any():
            lp = self.logprobs[ok]
            e = np.exp(lp - lp.max(axis=1, keepdims=True))
            out[ok] = e / e.sum(axis=1, keepdims=True)
        return out

    def option_nll(self, index: int, option: int) -> float:
        """Mean token NLL of option `option` of row `index` (the paper's response entropy of
        that answer under this pass's prompt); nan when the row was not scored."""
        n = self.n_tokens[index, option] if option < self.n_tokens.shape[1] else 0
        return float(-self.logprobs[index, option] / n) if n > 0 else float("nan")


def _finite(v: float):
    return float(v) if np.isfinite(v) else None


def too_long(lm: LanguageModel, samples: Sequence[Sample], max_new_tokens: int) -> np.ndarray:
    """[n] bool: the samples whose direct prompt plus their longest option (mc) or whose
    reasoning prompt plus one generated token would not fit the model's context."""
    from .prompts import direct_prompt, reasoning_prompt

    direct = [len(x) for x in lm._encode([lm.render(direct_prompt(s)) for s in samples])]
    reasoning = [len(x) for x in lm._encode([lm.render(reasoning_prompt(s)) for s in samples])]
    from .relabel import longest_option_tokens

    # + 2: the "Answer:" prefix and a token of slack for how a tokenizer splits the seam
    need = [d + (o or max_new_tokens) + 2 for d, o in zip(direct, longest_option_tokens(lm, samples))]
    return np.array([n > lm.max_length or r + 1 > lm.max_length for n, r in zip(need, reasoning)], dtype=bool)


def _score_rows(lm: LanguageModel, samples, prompts, batch_size, by=None) -> list[dict]:
    sc = score_options(lm, samples, prompts, by=by, batch_size=batch_size, progress=False)
    rows = []
    for i, s in enumerate(samples):
        k = len(s.options)
        pred = sc.predictions[i]
        j = sc.prediction_index[i]
        rows.append({"answer": pred,
                     "logprobs": [_finite(v) for v in sc.logprobs[i, :k]],
                     "n_tokens": [int(v) for v in sc.n_tokens[i, :k]],
                     "entropy": [_finite(v) for v in sc.entropy[i, :k]],
                     "nll": _finite(sc.mean_nll[i, j]), "token_entropy": _finite(sc.entropy[i, j])})
    return rows


def _generate_rows(lm, samples, prompts, batch_size, max_new_tokens, temperature=0.0, seed=0) -> list[dict]:
    gens = generate(lm, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature,
                    seed=seed, ids=[s.id for s in samples], progress=False)
    return [{"answer": extract_answer(g.text, s), "text": g.text, "nll": _finite(g.mean_nll),
             "max_nll": _finite(float(-g.logprobs.min()) if len(g.logprobs) else np.nan),
             "token_entropy": _finite(float(g.entropy.mean()) if len(g.entropy) else np.nan)}
            for g, s in zip(gens, samples)]


def _batch_key(name: str, lm: LanguageModel, settings: dict, samples, prompts) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([name, ROW_FORMAT, model_fingerprint(lm), settings], sort_keys=True).encode())
    for s, p in zip(samples, prompts):
        h.update(json.dumps([s.id, s.task, list(s.options), p]).encode())
    return h.hexdigest()[:24]


def run_pass(name: str, lm: LanguageModel, samples: Sequence[Sample], prompts: Sequence[str], *,
             generate_all: bool = False, by: str | None = None, max_new_tokens: int = 64,
             temperature: float = 0.0, seed: int = 0, batch_size: int = 64,
             store: PassStore | None = None, progress: bool = True) -> ExpertOutputs:
    """Run one expert pass: score (mc) or generate (short answers, or every sample with
    `generate_all`) each prompt, in batches of `batch_size` consecutive samples.

    Args:
        name: the pass ("direct", "reasoning", "context", "review", "checker"), shown in the
            progress bar and part of each batch's key.
        prompts: one prompt text per sample (before the chat template).
        generate_all: generate every sample, multiple choice included (the reasoning expert).
        by: score options by "letter" or "text" (default `lm.answer_by`).
        max_new_tokens: the generation budget.
        temperature: 0 generates greedily; > 0 samples (scored rows are unaffected). Each
            batch draws from its own generator, seeded by `seed` and the batch's position,
            so a stored batch and a recomputed one agree.
        store: where finished batches are kept (resume); None keeps nothing.

    Returns the pass as `ExpertOutputs`, rows in the samples' order.
    """
    samples, prompts = list(samples), list(prompts)
    if len(prompts) != len(samples):
        raise ValueError(f"{len(prompts)} prompts for {len(samples)} samples")
    generates = generate_all or any(s.task != MC for s in samples)
    settings = {"max_new_tokens": max_new_tokens if generates else None,
                "generate_all": generate_all, "by": by or lm.answer_by}
    if temperature > 0 and generates:  # greedy passes keep the keys their stored batches have
        settings.update(temperature=temperature, seed=seed)
    rows: list[dict] = []
    seconds = 0.0
    starts = range(0, len(samples), batch_size)
    for start in progress_bar(starts, desc=f"{name} expert", enabled=progress):
        part, ps = samples[start:start + batch_size], prompts[start:start + batch_size]
        key = _batch_key(name, lm, settings, part, ps)
        done = store.get(key) if store is not None else None
        if done is None:
            t0 = time.perf_counter()
            done = [None] * len(part)
            scored = [i for i, s in enumerate(part) if s.task == MC and not generate_all]
            written = sorted(set(range(len(part))) - set(scored))
            for idx, fn in ((scored, lambda ss, pp: _score_rows(lm, ss, pp, batch_size, by)),
                            (written, lambda ss, pp: _generate_rows(lm, ss, pp, batch_size, max_new_tokens,
                                                                    temperature, seed * 1_000_003 + start))):
                if idx:
                    for i, r in zip(idx, fn([part[i] for i in idx], [ps[i] for i in idx])):
                        done[i] = r
            seconds += time.perf_counter() - t0
            if store is not None:
                store.add(key, name, done)
        rows += done
    return ExpertOutputs.from_rows(rows, seconds)
