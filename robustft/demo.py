"""The offline end-to-end demo (`make demo`, `robustft demo`).

On the built-in benchmark, with no download, for each seed (a world and its toy model) and
each noise rate (30/50/70 %): the base model ("Vanilla"), LoRA SFT on the noisy labels
("SFT"), and RobustFT — denoise the noisy labels, then the same LoRA SFT on what it keeps.
Prints a table in the shape of the paper's Table 1 and the detection report, and writes
``results.json``, ``results.csv`` and ``results.png`` into the output folder.

The demo is the first three rows of the comparison (`robustft.compare.run` with the methods
"vanilla", "sft" and "robustft" and no further studies): every number is measured in this run
or read back from this run's own ``runs.jsonl``, each finished row is appended at once and
each denoising run keeps its expert batches, so an interrupted demo resumes where it stopped.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

from . import compare
from .data import NOISE_LEVELS
from .denoise import DenoiseConfig
from .files import write_json

METHODS = ("vanilla", "sft", "robustft")
DETECTION = ("precision", "recall", "f1", "relabel_accuracy", "selection_accuracy", "label_accuracy")


def run(seeds=(0,), noise_levels=NOISE_LEVELS, out: str | Path = "results/demo", config=None,
        progress: bool = True, log=print) -> list[dict]:
    """Run the demo; returns the result rows (one per seed × method and noise rate), also in
    ``out/runs.jsonl``; the expert passes are kept in ``out/seed{S}-noise{N}``."""
    return compare.run(seeds, noise_levels, out, methods=METHODS, passes=out, config=config, sensitivity=False,
                       stability=False, perplexity=False, progress=progress, log=log)


def _mean_std(values):
    if len(values) == 1:
        return values[0]
    return {"mean": statistics.mean(values), "std": statistics.stdev(values)}


def summarize(rows: list[dict], seeds, noise_levels, seconds: float | None = None) -> dict:
    """`results.json`: the Table-1 accuracies and the detection report per noise rate
    (plain fractions for one seed; ``{"mean", "std"}`` over several)."""
    def pick(method, noise, key="accuracy"):
        return [r[key] if key == "accuracy" else r["detection"][key]
                for r in rows if r["method"] == method and (method == "vanilla" or r["noise"] == noise)]

    table, detection = {}, {}
    for noise in noise_levels:
        table[str(noise)] = {m: _mean_std(pick(m, noise)) for m in METHODS}
        detection[str(noise)] = {k: _mean_std(pick("robustft", noise, k)) for k in DETECTION}
    return {"table": table, "detection": detection, "seeds": list(seeds), "seconds": seconds}


def _fmt(v) -> str:
    return f"{v:.3f}" if not isinstance(v, dict) else f"{v['mean']:.3f} ± {v['std']:.3f}"


def table_text(summary: dict) -> str:
    """The Table-1-style accuracy table and the detection report as Markdown."""
    lines = ["| noise | Vanilla | SFT | RobustFT |", "|---|---|---|---|"]
    for noise, row in summary["table"].items():
        lines.append(f"| {noise} % | " + " | ".join(_fmt(row[m]) for m in METHODS) + " |")
    lines += ["", "| noise | " + " | ".join(DETECTION) + " |", "|---" * (len(DETECTION) + 1) + "|"]
    for noise, row in summary["detection"].items():
        lines.append(f"| {noise} % | " + " | ".join(_fmt(row[k]) for k in DETECTION) + " |")
    return "\n".join(lines)


def write_outputs(rows: list[dict], summary: dict, out: Path) -> list[Path]:
    """results.json, results.csv (one row per seed × run) and results.png."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(out / "results.json", summary), out / "results.csv", out / "results.png"]
    with open(paths[1], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed", "method", "noise", "accuracy", *DETECTION])
        for r in rows:
            d = r.get("detection") or {}
            w.writerow([r["seed"], r["method"], r["noise"] if r["noise"] is not None else "",
                        f"{r['accuracy']:.4f}", *[f"{d[k]:.4f}" if d.get(k) is not None else "" for k in DETECTION]])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is in the `book`/`dev` extras, not the core install
        return paths[:2]
    noises = [int(n) for n in summary["table"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for m, style, label in (("vanilla", "s--", "Vanilla"), ("sft", "o-", "SFT on noisy labels"),
                            ("robustft", "D-", "RobustFT")):
        vals = [summary["table"][str(n)][m] for n in noises]
        mean = [v["mean"] if isinstance(v, dict) else v for v in vals]
        std = [v["std"] if isinstance(v, dict) else 0.0 for v in vals]
        ax.errorbar(noises, mean, yerr=std, fmt=style, capsize=3, label=label)
    ax.set_xlabel("wrong training labels (%)")
    ax.set_ylabel("test accuracy")
    ax.set_xticks(noises)
    ax.set_title(f"Offline benchmark, seeds {', '.join(map(str, summary['seeds']))}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/demo", help="results folder (resumes from its runs.jsonl)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="benchmark seeds (default 0)")
    p.add_argument("--noise", type=int, nargs="+", default=list(NOISE_LEVELS), help="noise rates in percent")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    DenoiseConfig.add_arguments(p.add_argument_group("RobustFT's settings (see `robustft denoise --help`)"))


def check_arguments(args) -> None:
    """Raise ValueError with a one-line message for arguments that cannot run."""
    for n in args.noise:
        if not 0 < n < 100:
            raise ValueError(f"--noise {n}: give percentages between 1 and 99")
    if any(s < 0 for s in args.seeds):
        raise ValueError("--seeds: seeds must be >= 0")
    DenoiseConfig.from_args(args)  # a ValueError names a bad setting


def main_args(args) -> None:
    start = time.time()
    config = DenoiseConfig.from_args(args)
    rows = run(args.seeds, args.noise, args.out, config=config, progress=not args.no_progress)
    summary = summarize(rows, args.seeds, args.noise, seconds=round(time.time() - start, 1))
    paths = write_outputs(rows, summary, Path(args.out))
    print()
    print(table_text(summary))
    print(f"\n{summary['seconds']} s; wrote " + ", ".join(map(str, paths)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        check_arguments(args)
    except ValueError as e:
        parser.error(str(e))  # one line and exit status 2, as `robustft demo` does
    main_args(args)


if __name__ == "__main__":
    sys.exit(main())
