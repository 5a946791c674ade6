"""The offline end-to-end demo (`make demo`, or `python -m robustft.demo`).

On the built-in benchmark, with no download: pre-train (or load from the cache) the tiny
model, measure the base model ("Vanilla"), then LoRA-SFT it on the training labels with 0,
30, 50 and 70 % injected noise and measure each — the shape of the paper's Figure 1. Every
number is measured in this run (or read back from this run's own results file); nothing is
written in.

Each finished row is appended to ``<out>/results.jsonl`` at once, so an interrupted run
resumes where it stopped (rows are keyed by the toy model's config hash, the seed, the run and
the SFT settings).
The demo grows as the pipeline's stages land.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .data import NOISE_LEVELS
from .runlog import RunLog


def run(seed: int = 0, noise_levels=(0, *NOISE_LEVELS), out: str | Path = "runs/demo", progress: bool = True) -> list[dict]:
    """Run the demo for one seed; returns the result rows (also in ``out/results.jsonl``)."""
    import robustft
    from robustft.offline import TOY_SFT as SFT  # the toy model's LoRA settings, one place
    from robustft.offline import ToyConfig, make_benchmark

    out = Path(out)
    log = RunLog(out / "results.jsonl", key=("model", "seed", "run", "sft"))
    config = ToyConfig.for_seed(seed)
    bench = make_benchmark(config.world)
    t0 = time.time()
    lm = robustft.load_model("toy", config=config, progress=progress)
    print(f"toy model {config.key()} ready in {time.time() - t0:.1f} s "
          f"({sum(p.numel() for p in lm.model.parameters()) / 1e6:.2f} M parameters)")
    print(f"benchmark: {len(bench.train)} training, {len(bench.test)} test questions (seed {seed})")

    rows = []
    runs = [("vanilla", None)] + [(f"sft-noise{n}", n) for n in noise_levels]
    for name, noise in runs:
        # A stored row counts only for the same toy model, seed, run and SFT settings.
        row = log.get(model=config.key(), seed=seed, run=name, sft=SFT)
        if row is not None:
            rows.append(row)
            print(f"{name:>14}: {row['accuracy']:.3f}  (from {log.path})")
            continue
        t = time.time()
        if noise is None:
            model = lm
        else:
            train, changed = robustft.inject_noise(bench.train, noise / 100, seed=seed)
            model = robustft.finetune(lm, train, seed=seed, progress=progress, **SFT)
        result = robustft.evaluate(model, bench.test, progress=False)
        row = {"model": config.key(), "seed": seed, "run": name, "sft": SFT, "noise": noise, "accuracy": result.accuracy,
               "by_category": result.by_category, "seconds": round(time.time() - t, 1)}
        rows.append(log.add(row))
        print(f"{name:>14}: {result.accuracy:.3f}  ({row['seconds']} s)")
    return rows


def report(rows: list[dict], out: Path) -> str:
    """A Markdown table of the rows, and a plot of accuracy against noise (``out/demo.png``)."""
    vanilla = next(r["accuracy"] for r in rows if r["run"] == "vanilla")
    lines = ["| run | noise | test accuracy | vs Vanilla |", "|---|---|---|---|"]
    for r in rows:
        noise = "-" if r["noise"] is None else f"{r['noise']} %"
        lines.append(f"| {r['run']} | {noise} | {r['accuracy']:.3f} | {r['accuracy'] - vanilla:+.3f} |")
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sft = [r for r in rows if r["noise"] is not None]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([r["noise"] for r in sft], [r["accuracy"] for r in sft], "o-", label="SFT on noisy labels")
        ax.axhline(vanilla, color="gray", ls="--", label="Vanilla (no fine-tuning)")
        ax.set_xlabel("noise in training labels (%)")
        ax.set_ylabel("test accuracy")
        ax.set_title("Offline benchmark: noisy SFT vs the base model")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "demo.png", dpi=120)
    except ImportError:  # matplotlib is in the `book`/`dev` extras, not the core install
        pass
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=int, nargs="+", default=[0, *NOISE_LEVELS], help="noise levels in percent")
    parser.add_argument("--out", default="runs/demo", help="results folder (resumes from its results.jsonl)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args.seed, args.noise, args.out, progress=not args.no_progress)
    print()
    print(report(rows, Path(args.out)))
    print(f"\nresults: {args.out}/results.jsonl, {args.out}/results.md, {args.out}/demo.png")


if __name__ == "__main__":
    main()
