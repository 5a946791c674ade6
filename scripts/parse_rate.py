"""How often the reasoning expert's answer can be read, by generation budget, on real SmolLM2.

    .venv/bin/python scripts/parse_rate.py            # N=48 rows per dataset, ~15 min on 2 cores
    .venv/bin/python scripts/parse_rate.py --n 8      # a quick look

For each of ARC, FPB and PubMedQA (the official CSVs, ``../shared/robustft-official/``; the
first N rows of ``noisy/noisy30.csv``) SmolLM2-135M-Instruct (`load_model("smollm2")`) writes
one greedy step-by-step response to the reasoning-expert prompt (`prompts.reasoning_prompt`),
with the batch size `DenoiseConfig` uses: the very call the reasoning expert makes
(`experts.run_pass` → `inference.generate`). The parse rate is the share of responses from
which an answer is read (`extract_answer` not None), with the reader before issue 19 (a copy
below, `old_extract_answer`) and the current one, at budgets of 64, 128, 256 and 512 tokens.

Each response is generated once, at 512 tokens, and the shorter budgets are its first 64, 128
and 256 tokens. Under greedy decoding that is exactly what a shorter budget generates: each
token is the argmax given the prompt and the tokens before it, and a longer budget only runs
the same loop further (same batches, same padding). The script checks this on ARC, where it
also generates at each shorter budget to time it: the texts must be equal.

Writes ``results/real-smollm2/parse-rate.{md,json}``, the generated token ids with their
timings to ``results/real-smollm2/generations.jsonl`` (``--rescore`` reads them back to
measure a changed reader without generating again), and the responses at 512 tokens to
``tests/data/smollm2_reasoning.jsonl``, the reader's test table. Its ``expected`` field (the
answer a careful human reads in the response, null when it names no option) is filled by
hand; a re-run keeps it for responses that did not change and leaves it out of new ones.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

import robustft
from robustft.denoise import DenoiseConfig
from robustft.files import atomic_open, write_json, write_jsonl
from robustft.inference import generate
from robustft.prompts import ANSWER_PREFIX, UNREAD_REASONS, extract_answer, reasoning_prompt, unread_reason
from robustft.sample import MC

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("arc", "fpb", "pubmedqa")
BUDGETS = (64, 128, 256, 512)
TIMED = "arc"  # generated at every budget too: times each budget and checks the truncation

_OLD_ANSWER_RE = re.compile(rf"{ANSWER_PREFIX}\s*\(?\s*([^\n]*)", re.IGNORECASE)


def old_extract_answer(text, sample):
    """The reader before issue 19, unchanged: the last ``Answer:`` line, letter or exact text."""
    matches = _OLD_ANSWER_RE.findall(text)
    if not matches:
        return None
    raw = matches[-1].strip()
    if sample.task != MC:
        return raw.rstrip(".").strip() or None
    m = re.match(r"\(?([A-Za-z])\)?(?:[.):,\s]|$)", raw)
    if m and m.group(1).upper() in sample.letters:
        return m.group(1).upper()
    for l, o in zip(sample.letters, sample.options):
        if raw.rstrip(".").strip().lower() == o.strip().lower():
            return l
    return None


def truncated(lm, ids: list[int], budget: int) -> str:
    """The text of a response (its token ids) cut at `budget` tokens, decoded as `generate` does."""
    ids = list(ids[:budget])
    if ids and ids[-1] in lm.eos_token_ids:
        ids = ids[:-1]
    return lm.tokenizer.decode(ids, skip_special_tokens=True)


class StepClock:
    """The wall time of every forward call of a model, so one generation at the largest budget
    also times the smaller ones. `generate` makes one call for a batch's prompts and one per
    further token, and token k is chosen from call k: a budget of b tokens runs calls 1..b of
    each batch, exactly as far as the large run had got after its b-th call."""

    def __init__(self, model):
        self.batches: list[list[float]] = []  # per batch: start, then the end of each call
        self._handles = [model.register_forward_pre_hook(self._pre, with_kwargs=True),
                         model.register_forward_hook(self._post)]

    def _pre(self, module, args, kwargs=None):
        ids = (kwargs or {}).get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] > 1:  # a batch's prompts: a new batch starts
            self.batches.append([time.perf_counter()])

    def _post(self, module, args, output):
        self.batches[-1].append(time.perf_counter())

    def seconds(self, budget: int) -> float:
        """Generation time at `budget` tokens: each batch's first `budget` calls."""
        return sum(b[min(budget, len(b) - 1)] - b[0] for b in self.batches)

    def remove(self):
        for h in self._handles:
            h.remove()


def run_generations(lm, official: Path, n: int, batch_size: int) -> list[dict]:
    """Generate at the largest budget on every dataset: one dict per dataset with the sample
    ids, token ids, finished flags and seconds per budget. On TIMED the smallest budget is
    also generated on its own, to check the truncation and the step clock."""
    runs = []
    for name in DATASETS:
        samples = robustft.load_official(official / name, noise=30).train[:n]
        prompts = [reasoning_prompt(s) for s in samples]
        clock = StepClock(lm.base_model)
        t = time.perf_counter()
        gens = generate(lm, prompts, max_new_tokens=max(BUDGETS), batch_size=batch_size, progress=False)
        total = time.perf_counter() - t
        clock.remove()
        run = {"dataset": name, "ids": [s.id for s in samples],
               "token_ids": [list(map(int, g.token_ids)) for g in gens], "finished": [bool(g.finished) for g in gens],
               "seconds": {b: clock.seconds(b) for b in BUDGETS}, "seconds_total": total}
        if name == TIMED:
            b = min(BUDGETS)
            t = time.perf_counter()
            short = generate(lm, prompts, max_new_tokens=b, batch_size=batch_size, progress=False)
            run["check"] = {"budget": b, "seconds": time.perf_counter() - t,
                            "identical": sum(x.text == truncated(lm, g.token_ids, b) for x, g in zip(short, gens))}
        print(f"{name}: {total:.0f} s at {max(BUDGETS)} tokens", file=sys.stderr, flush=True)
        runs.append(run)
    return runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, default=ROOT.parent / "shared" / "robustft-official")
    ap.add_argument("--n", type=int, default=48, help="training rows per dataset (the first N)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "real-smollm2")
    ap.add_argument("--fixture", type=Path, default=ROOT / "tests" / "data" / "smollm2_reasoning.jsonl")
    ap.add_argument("--rescore", action="store_true",
                    help="read the responses from OUT/generations.jsonl instead of generating them")
    args = ap.parse_args(argv)
    batch_size = DenoiseConfig().batch_size
    store = args.out / "generations.jsonl"

    t0 = time.perf_counter()
    lm = robustft.load_model("smollm2")
    load_s = time.perf_counter() - t0
    if args.rescore:
        runs = [json.loads(line) for line in store.read_text().splitlines()]
        meta = runs.pop(0)
    else:
        runs = run_generations(lm, args.official, args.n, batch_size)
        meta = {"n_per_dataset": args.n, "batch_size": batch_size, "torch_threads": torch.get_num_threads(),
                "load_seconds": load_s, "generate_seconds": time.perf_counter() - t0 - load_s,
                "loadavg": " / ".join(f"{x:.1f}" for x in os.getloadavg()) + " (1 / 5 / 15 min, at the end)"}
        write_jsonl(store, [meta, *runs])
    for run in runs:  # JSON keys are strings
        run["seconds"] = {int(b): v for b, v in run["seconds"].items()}

    labels = {}
    if args.fixture.exists():
        for line in args.fixture.read_text().splitlines():
            r = json.loads(line)
            if "expected" in r:
                labels[(r["dataset"], r["id"], r["response"])] = r["expected"]
    table, records = [], []
    for run in runs:
        name = run["dataset"]
        by_id = {s.id: s for s in robustft.load_official(args.official / name, noise=30).train}
        samples = [by_id[i] for i in run["ids"]]
        for b in BUDGETS:
            texts = [truncated(lm, ids, b) for ids in run["token_ids"]]
            table.append({
                "dataset": name, "budget": b, "n": len(samples),
                "old": sum(old_extract_answer(x, s) is not None for x, s in zip(texts, samples)) / len(samples),
                "new": sum(extract_answer(x, s) is not None for x, s in zip(texts, samples)) / len(samples),
                "mean_tokens": float(np.mean([min(len(ids), b) for ids in run["token_ids"]])),
                # cut: the budget stopped the response before the model ended its turn
                "cut": sum(len(ids) > b or (len(ids) == b and not f)
                           for ids, f in zip(run["token_ids"], run["finished"])) / len(samples),
                "seconds": run["seconds"][b]})
        for s, ids, f in zip(samples, run["token_ids"], run["finished"]):
            text = truncated(lm, ids, max(BUDGETS))
            # The question text stays out: the official data is read from its folder, not copied.
            rec = {"dataset": name, "id": s.id, "options": list(s.options),
                   "response": text, "tokens": len(ids), "finished": f}
            if (name, s.id, text) in labels:
                rec["expected"] = labels[(name, s.id, text)]
            records.append(rec)
    write_jsonl(args.fixture, records)
    pick = chosen_budget(table)
    # Why the replies at the chosen budget that give no option give none (`unread_reason`).
    unread = {}
    for run in runs:
        by_id = {s.id: s for s in robustft.load_official(args.official / run["dataset"], noise=30).train}
        reasons = [unread_reason(truncated(lm, ids, pick), by_id[i]) for i, ids in zip(run["ids"], run["token_ids"])]
        unread[run["dataset"]] = {k: reasons.count(k) for k in UNREAD_REASONS}
    timed = next(r for r in runs if r["dataset"] == TIMED)
    check = {"dataset": TIMED, **timed["check"], "of": len(timed["ids"]),
             "clock_seconds": timed["seconds"][timed["check"]["budget"]]}
    summary = {"model": "smollm2", "weights": lm.info.get("weights"), "fingerprint": lm.fingerprint, **meta,
               "budgets": list(BUDGETS), "rows": table, "chosen_budget": pick, "unread": unread,
               "truncation_check": check}
    write_json(args.out / "parse-rate.json", summary)
    with atomic_open(args.out / "parse-rate.md") as f:
        f.write(markdown(summary))
    print(markdown(summary))
    return 0


def overall_rates(rows: list[dict]) -> dict[int, float]:
    """The new reader's parse rate per budget over all datasets (weighted by rows)."""
    budgets = sorted({r["budget"] for r in rows})
    return {b: float(np.average([r["new"] for r in rows if r["budget"] == b],
                                weights=[r["n"] for r in rows if r["budget"] == b])) for b in budgets}


def chosen_budget(rows: list[dict]) -> int:
    """The default budget this table picks: the smallest whose parse rate (new reader, all
    datasets) is within 1 point of the best (`DenoiseConfig.max_new_tokens` is set to it)."""
    overall = overall_rates(rows)
    best = max(overall.values())
    return min(b for b, v in overall.items() if v >= best - 0.01)


def markdown(summary: dict) -> str:
    rows = summary["rows"]
    lines = [f"# Parse rate of the reasoning expert, SmolLM2-135M-Instruct (Q4_1 GGUF, float32 on CPU)",
             "",
             f"First {summary['n_per_dataset']} rows of each official `noisy/noisy30.csv`; one greedy "
             f"response per row to `prompts.reasoning_prompt`, batch size {summary['batch_size']}, "
             f"{summary['torch_threads']} torch threads. Parse rate: share of responses the reader gets "
             "an answer from (old: the last `Answer:` line only; new: `prompts.extract_answer`). "
             "Cut: share of responses the budget stopped before the model's end of turn. "
             f"Seconds: wall time to generate the {summary['n_per_dataset']} responses at that budget, read "
             "off the 512-token run (the time its batch took for that many tokens: `StepClock`). "
             f"Load average during the run (other jobs share the CPU): {summary['loadavg']}.",
             "",
             "| dataset | budget | parse rate, old reader | parse rate, new reader | mean tokens | cut | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['budget']} | {r['old']:.3f} | {r['new']:.3f} | "
                     f"{r['mean_tokens']:.0f} | {r['cut']:.3f} | {r['seconds']:.0f} |")
    lines += ["", "All datasets together:", "",
              "| budget | parse rate, old reader | parse rate, new reader |", "|---:|---:|---:|"]
    for b in summary["budgets"]:
        sel = [r for r in rows if r["budget"] == b]
        w = [r["n"] for r in sel]
        lines.append(f"| {b} | {np.average([r['old'] for r in sel], weights=w):.3f} | "
                     f"{np.average([r['new'] for r in sel], weights=w):.3f} |")
    best, pick = max(overall_rates(rows).values()), summary["chosen_budget"]
    lines += ["", f"The smallest budget whose parse rate (new reader, all datasets) is within 1 point of the "
              f"best ({best:.3f}): **{pick}** tokens.", "",
              f"Why the replies the reader gets no option from give none, at {pick} tokens (`prompts.unread_reason`):",
              "", "| dataset | " + " | ".join(f"{k}: {v}" for k, v in UNREAD_REASONS.items()) + " |",
              "|---|" + "---:|" * len(UNREAD_REASONS)]
    for name, counts in summary["unread"].items():
        lines.append(f"| {name} | " + " | ".join(str(counts[k]) for k in UNREAD_REASONS) + " |")
    chk = summary["truncation_check"]
    lines += ["", f"Truncation check ({chk['dataset']}): generated with a budget of {chk['budget']} tokens, "
              f"{chk['identical']}/{chk['of']} responses equal the 512-token response cut there; that run took "
              f"{chk['seconds']:.0f} s, the clock of the 512-token run says {chk['clock_seconds']:.0f} s.",
              f"Model load {summary['load_seconds']:.1f} s; generation {summary['generate_seconds'] / 60:.1f} min.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
