"""Measure the offline benchmark's acceptance numbers over several seeds and print a table.

    python -m robustft.offline.report                 # seeds 0 1 2, pre-trained from scratch
    python -m robustft.offline.report --cache ~/.cache/robustft   # reuse models pre-trained before

For each seed (world + model): pre-training time from scratch, load time from the cache,
vanilla test accuracy, step-by-step vs direct accuracy on the two-hop questions, LoRA SFT
on 0/30/50/70 % noisy labels, the time to score 1,000 questions, and two diagnostics of the
other experts (worked examples from housemates; the review agent). Numbers are measured
here, never written in; timings depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time

import numpy as np
import torch

from ..data import NOISE_LEVELS, inject_noise
from ..evaluate import evaluate
from ..files import write_json
from ..finetune import finetune
from ..inference import generate, score_options
from ..model import LanguageModel
from ..prompts import context_prompt, extract_answer, reasoning_prompt, review_prompt
from .toy_model import TOY_SFT, VANILLA_BAND, ToyConfig, cache_folder, load_toy_model, sha256, shipped_folder
from .world import MENTOR, RESIDENCE, make_benchmark, reasoning_text

NOISE = (0.0, *(n / 100 for n in NOISE_LEVELS))  # clean, then the paper's rates
SFT = TOY_SFT  # the settings live with the toy model; this name stays for older imports


def housemate_examples(bench, sample, k: int = 3):
    """Up to k clean training questions on where a housemate of the sample's person lives
    (what retrieval by similarity finds when it works), padded with other questions."""
    world = bench.world
    house = world.people[sample.extra["person"]].house
    mates = [s for s in bench.train if s.category == RESIDENCE and s.extra["known"]
             and s.extra["person"] != sample.extra["person"]
             and world.people[s.extra["person"]].house == house]
    others = [s for s in bench.train if world.people[s.extra["person"]].house != house]
    rng = random.Random(sample.id)
    shots = rng.sample(mates, min(len(mates), rng.choice((1, 2))))
    shots += rng.sample(others, k - len(shots))
    rng.shuffle(shots)
    return shots


def measure(seed: int, cache: str | None, progress: bool = False) -> dict:
    cfg = ToyConfig.for_seed(seed)
    out = {"seed": seed}
    tmp = None
    if cache is None:
        tmp = tempfile.TemporaryDirectory(prefix="robustft-report-")
        cache = tmp.name
    start = time.perf_counter()
    # source="pretrain": the model pre-trained here (never the shipped weights), so the report
    # measures pre-training, and shows whether this machine reproduces the shipped weights.
    model, tok = load_toy_model(cfg, cache_dir=cache, progress=progress, source="pretrain")
    out["pretrain_or_load_s"] = time.perf_counter() - start
    start = time.perf_counter()
    model, tok = load_toy_model(cfg, cache_dir=cache, source="pretrain")
    out["load_s"] = time.perf_counter() - start
    meta = json.loads((cache_folder(cfg, cache) / "toy_config.json").read_text())
    out["pretrain_s"] = meta.get("pretrain_seconds")
    shipped = shipped_folder(cfg)
    out["same_weights_as_shipped"] = None if shipped is None else (
        sha256(cache_folder(cfg, cache) / "model.safetensors") == sha256(shipped / "model.safetensors"))

    lm = LanguageModel(model, tok, answer_by="text", name="toy")
    bench = make_benchmark(cfg.world)
    vanilla = evaluate(lm, bench.test, progress=progress)
    out["vanilla"] = vanilla.accuracy
    one_hop = [(s, c) for s, c in zip(bench.test, vanilla.correct) if s.category != MENTOR]
    out["vanilla_known"] = float(np.mean([c for s, c in one_hop if s.extra["known"]]))
    out["vanilla_unknown"] = float(np.mean([c for s, c in one_hop if not s.extra["known"]]))

    two_hop = [s for s in bench.test if s.category == MENTOR]
    gens = generate(lm, [reasoning_prompt(s) for s in two_hop], max_new_tokens=48, progress=progress)
    out["two_hop_step_by_step"] = float(np.mean([extract_answer(g.text, s) == s.answer
                                                 for g, s in zip(gens, two_hop)]))
    out["two_hop_direct"] = evaluate(lm, two_hop, progress=progress).accuracy
    out["example"] = reasoning_prompt(two_hop[0]) + gens[0].text

    qs = (bench.test * 3)[:1000]
    start = time.perf_counter()
    score_options(lm, qs, progress=progress)
    out["score_1000_s"] = time.perf_counter() - start

    # Diagnostics of the other experts on where an unseen person lives.
    unseen = [s for s in bench.test if s.category == RESIDENCE and not s.extra["known"]]
    cer = evaluate(lm, unseen, prompt=lambda s: context_prompt(s, housemate_examples(bench, s), by="text"),
                   progress=progress)
    out["unseen_city_direct"] = evaluate(lm, unseen, progress=progress).accuracy
    out["unseen_city_with_housemates"] = cer.accuracy
    rng = random.Random(seed)
    guesses = {s.id: rng.choice([o for o in s.options if o != s.answer_text]) for s in unseen}
    review = evaluate(lm, unseen, progress=progress, prompt=lambda s: review_prompt(
        s, reasoning_text(bench.world, s.extra["person"], RESIDENCE, guesses[s.id]), guesses[s.id],
        s.answer_text))
    known_two_hop = [s for s in two_hop if s.extra["known"]]
    wrong = {s.id: rng.choice([o for o in s.options if o != s.answer_text]) for s in known_two_hop}
    review2 = evaluate(lm, known_two_hop, progress=progress, prompt=lambda s: review_prompt(
        s, reasoning_text(bench.world, s.extra["person"], MENTOR), s.answer_text, wrong[s.id]))
    out["review_picks_examples_on_city"] = review.accuracy
    out["review_picks_steps_on_two_hop"] = review2.accuracy

    for rate in NOISE:
        train, _ = inject_noise(bench.train, rate, seed=seed)
        start = time.perf_counter()
        tuned = finetune(lm, train, seed=seed, progress=progress, **TOY_SFT)
        out[f"sft_{int(rate * 100)}_s"] = time.perf_counter() - start
        out[f"sft_{int(rate * 100)}"] = evaluate(tuned, bench.test, progress=progress).accuracy
    if tmp is not None:
        tmp.cleanup()
    return out


ROWS = [  # (key, label, target check)
    ("pretrain_s", "pre-training from scratch (s)", lambda v, r: v <= 180),
    ("load_s", "loading from the cache (s)", lambda v, r: v <= 5),
    ("vanilla", "vanilla test accuracy", lambda v, r: VANILLA_BAND[0] <= v <= VANILLA_BAND[1]),
    ("vanilla_known", "  on seen facts (one-hop)", None),
    ("vanilla_unknown", "  on unseen facts (one-hop)", None),
    ("sft_0", "LoRA SFT, clean labels", lambda v, r: v >= r["vanilla"] + 0.05),
    ("sft_30", "LoRA SFT, 30% noise", lambda v, r: v < r["sft_0"]),
    ("sft_50", "LoRA SFT, 50% noise", lambda v, r: v < r["sft_30"]),
    ("sft_70", "LoRA SFT, 70% noise", lambda v, r: v < min(r["sft_50"], r["vanilla"])),
    ("two_hop_direct", "two-hop questions, direct prompt", None),
    ("two_hop_step_by_step", "two-hop questions, step by step", lambda v, r: v >= r["two_hop_direct"] + 0.10),
    ("score_1000_s", "scoring 1,000 questions (s)", lambda v, r: v <= 20),
    ("unseen_city_direct", "unseen city, direct prompt", None),
    ("unseen_city_with_housemates", "unseen city, housemates as examples", None),
    ("review_picks_examples_on_city", "review: follows examples on a city", None),
    ("review_picks_steps_on_two_hop", "review: follows steps on two-hop", None),
    ("sft_0_s", "one LoRA SFT run (s)", None),
]


def table(results: list[dict]) -> str:
    mean = {k: statistics.mean(r[k] for r in results) for k, *_ in ROWS}
    lines = [f"{'':40s}" + "".join(f"seed {r['seed']:<5d}" for r in results) + "mean ± sd     target"]
    for key, label, check in ROWS:
        vals = [r[key] for r in results]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        fmt = (lambda v: f"{v:.1f}") if key.endswith("_s") else (lambda v: f"{v:.3f}")
        verdict = "" if check is None else ("ok" if check(mean[key], mean) else "MISSED")
        lines.append(f"{label:40s}" + "".join(f"{fmt(v):11s}" for v in vals) +
                     f"{fmt(mean[key])} ± {fmt(sd):8s}{verdict}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cache", default=None, help="reuse cached models from this folder "
                    "(default: pre-train each seed from scratch in a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for seed in args.seeds:
        results.append(measure(seed, args.cache))
        print(f"seed {seed}: " + json.dumps({k: v for k, v in results[-1].items() if k != "example"}), flush=True)
    print(f"\ntorch threads: {torch.get_num_threads()}; weights identical to the shipped ones: "
          + ", ".join(f"seed {r['seed']}: {r['same_weights_as_shipped']}" for r in results) + "\n")
    print(table(results))
    print("\nA step-by-step generation (seed %d):\n%s" % (results[0]["seed"], results[0]["example"]))
    if args.json:
        write_json(args.json, results, indent=2)


if __name__ == "__main__":
    main()
