"""Greedy generation on real SmolLM2 by two versions of robustft: same tokens? how fast?

    PYTHONPATH=/path/to/old/checkout .venv/bin/python scripts/generation_before_after.py --out /tmp/before.json
    PYTHONPATH=.                     .venv/bin/python scripts/generation_before_after.py --out /tmp/after.json
    .venv/bin/python scripts/generation_before_after.py --compare /tmp/before.json /tmp/after.json

Each run loads SmolLM2-135M-Instruct (`load_model("smollm2")`), builds the reasoning-expert
prompt (`prompts.reasoning_prompt`) of the first ``--n`` questions of the official ARC test
split (``../shared/robustft-official/arc``), warms up on 2 prompts, then times one greedy
`generate` call (``--new-tokens``, ``--batch``, ``--threads`` CPU threads). It writes the
version's robustft path, the seconds, generated tokens/s, and every row's token ids and
log-probs. ``--compare`` prints how many rows have identical tokens, the largest
|Δ log-prob| over the steps both share, and the two speeds. PYTHONPATH picks the code: the
script imports whichever ``robustft`` comes first on it.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def run(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    import robustft
    from robustft.inference import generate
    from robustft.perf import ARC, _load_arc
    from robustft.prompts import reasoning_prompt

    lm = robustft.load_model("smollm2")
    questions, _, _ = _load_arc(ARC, args.n)
    prompts = [reasoning_prompt(s) for s in questions]
    generate(lm, prompts[:2], max_new_tokens=4, batch_size=args.batch, progress=False)  # warm-up
    start = time.perf_counter()
    gens = generate(lm, prompts, max_new_tokens=args.new_tokens, batch_size=args.batch, progress=False)
    seconds = time.perf_counter() - start
    n_tokens = sum(len(g.token_ids) for g in gens)
    out = {"robustft": robustft.__file__, "n": len(prompts), "new_tokens": args.new_tokens,
           "batch": args.batch, "threads": args.threads, "seconds": seconds, "generated": n_tokens,
           "tok_s": n_tokens / seconds, "rows": [{"ids": g.token_ids, "logprobs": g.logprobs.tolist()} for g in gens]}
    Path(args.out).write_text(json.dumps(out))
    print(f"{robustft.__file__}: {n_tokens} tokens in {seconds:.1f} s = {n_tokens / seconds:.1f} tok/s")


def compare(before: str, after: str) -> None:
    a, b = json.loads(Path(before).read_text()), json.loads(Path(after).read_text())
    same = sum(x["ids"] == y["ids"] for x, y in zip(a["rows"], b["rows"]))
    diffs = []
    for x, y in zip(a["rows"], b["rows"]):
        n = next((j for j, (s, t) in enumerate(zip(x["ids"], y["ids"])) if s != t), min(len(x["ids"]), len(y["ids"])))
        if n:  # steps up to and including the first differing token share their context
            m = min(n + 1, len(x["logprobs"]), len(y["logprobs"]))
            diffs.append(float(np.abs(np.array(x["logprobs"][:m]) - np.array(y["logprobs"][:m])).max()))
    print(f"identical tokens: {same}/{len(a['rows'])} rows; max |d logprob| over shared steps: "
          f"{max(diffs, default=float('nan')):.2e}")
    print(f"before {a['tok_s']:.1f} tok/s ({a['seconds']:.1f} s), after {b['tok_s']:.1f} tok/s "
          f"({b['seconds']:.1f} s): after/before = {b['tok_s'] / a['tok_s']:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="write this run's JSON here")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.compare:
        compare(*args.compare)
    elif args.out:
        run(args)
    else:
        p.error("give --out or --compare")


if __name__ == "__main__":
    main()
