"""The paper's comparison on the offline benchmark (`robustft compare`): every method, the
ablations, and the analyses of its Figures 3–6.

For each seed (a world and its toy model) and noise rate, each method of `METHODS` gives a
training set, the toy model is LoRA-tuned on it with the benchmark's settings, and the tuned
model is scored on the clean test set: accuracy, accuracy per category (Figure 5), and the
perplexity of the gold answers (Figure 4). Vanilla is the base model; SelfRAG answers with
retrieved training samples and trains nothing. Then:

- **sensitivity** (Figure 3): RobustFT with β and k varied one at a time, on the first seed
  at one noise rate;
- **stability** (Figure 6): a few methods over several *run* seeds (the seed of the noise
  injection and of fine-tuning) on the first seed's world and model — only the toy models of
  seeds 0–2 ship, so the world stays fixed and the runs vary.

Each seed is an `robustft.experiments.Experiment`: its rows are appended to ``runs.jsonl`` in
the output folder as they finish, keyed by the model's fingerprint, seed, run seed, method,
noise and every setting, so an interrupted comparison resumes and a changed setting is
recomputed. Expert passes are kept under ``passes/seed{S}-noise{N}`` (the layout the demo and
the book use), so methods and chapters that ask the model the same prompts share them. `summarize` writes
``compare.json``: ``{"noise": {"30": {method: {"mean", "std"}}}, ...}`` and the analyses.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import NOISE_LEVELS, inject_noise
from .denoise import DenoiseConfig
from .files import write_json
from .experiments import ABLATION_ROWS, LABELS, METHODS, RUNLOG_KEY, TABLE, Experiment, check_methods
from .model import load_model
from .offline import TOY_SFT, ToyConfig, make_benchmark
from .runlog import RunLog

DETECTION = ("precision", "recall", "f1", "label_accuracy", "kept")
BETAS, KS = (0.25, 0.5, 0.75, 1.0), (1, 3, 5)
RUN_SEEDS = (0, 1, 2, 3, 4)
STABILITY_METHODS = ("sft", "robustft", "robustft_noise_aware")


def toy_experiment(seed: int, out: Path, passes: Path, *, config: DenoiseConfig, limit: int | None = None,
                   perplexity: bool = True, progress: bool = True, log=print) -> Experiment:
    """The `Experiment` of benchmark seed `seed`: its world's questions, its shipped toy
    model, noise injected with the run seed (`inject_noise`), the toy's LoRA settings
    (`TOY_SFT`); rows in ``out/runs.jsonl``, expert passes in ``passes/seed{S}-noise{N}``."""
    toy = ToyConfig.for_seed(seed)
    bench = make_benchmark(toy.world)
    if limit is not None:
        bench.train, bench.test = bench.train[:limit], bench.test[:limit]
    lm = load_model("toy", config=toy, progress=progress)
    log(f"seed {seed}: toy model {toy.key()}, {len(bench.train)} training and {len(bench.test)} test questions")
    return Experiment(lm, bench.test, lambda noise, run_seed: inject_noise(bench.train, noise / 100, seed=run_seed)[0],
                      lambda noise: passes / f"seed{seed}-noise{noise}", TOY_SFT, {"seed": seed},
                      RunLog(out / "runs.jsonl", key=RUNLOG_KEY), config,
                      {"limit": limit} if limit is not None else {}, perplexity, progress, log)


def run(seeds: Sequence[int] = (0,), noise_levels: Sequence[int] = NOISE_LEVELS, out: str | Path = "results/compare",
        *, methods: Sequence[str] = METHODS, passes: str | Path | None = None, config=None,
        sensitivity: bool = True, betas: Sequence[float] = BETAS, ks: Sequence[int] = KS,
        sensitivity_noise: int = 50, stability: bool = True, run_seeds: Sequence[int] = RUN_SEEDS,
        stability_noise: int = 50, stability_methods: Sequence[str] = STABILITY_METHODS,
        limit: int | None = None, perplexity: bool = True, progress: bool = True, log=print) -> list[dict]:
    """Run the comparison; returns every row (also in ``out/runs.jsonl``).

    Args:
        seeds: benchmark seeds (a world and its toy model each; 0, 1, 2 ship).
        noise_levels: noise rates in percent.
        methods: a subset of `METHODS`.
        passes: the folder of expert passes (default ``out/passes``); the book passes
            ``runs/denoise`` to share them with the other chapters.
        config: the base `DenoiseConfig` (default `DenoiseConfig()`).
        sensitivity, betas, ks, sensitivity_noise: Figure 3 (first seed only).
        stability, run_seeds, stability_noise, stability_methods: Figure 6 (first seed's
            world and model, noise injection and fine-tuning seeded by each run seed).
        limit: use only the first `limit` training and test questions (a quick look, and
            the tests); part of every row's key.
        perplexity: measure the perplexity of the gold answers (Figure 4) for every row.
    """
    check_methods([*methods, *(stability_methods if stability else ())])
    base = config or DenoiseConfig()
    out = Path(out)
    passes = Path(passes) if passes is not None else out / "passes"
    rows = []
    for seed in seeds:
        exp = toy_experiment(seed, out, passes, config=base, limit=limit, perplexity=perplexity,
                             progress=progress, log=log)
        if "vanilla" in methods:  # the base model: the same at every noise rate
            rows.append(exp.row("vanilla", None, seed))
        for noise in noise_levels:
            rows += [exp.row(m, noise, seed) for m in methods if m != "vanilla"]
        if seed != seeds[0]:
            continue
        if sensitivity:
            for beta in betas:
                rows.append(exp.row("robustft", sensitivity_noise, seed, study="sensitivity",
                                    config=dataclasses.replace(base, beta=beta), vary="beta"))
            for k in ks:
                rows.append(exp.row("robustft", sensitivity_noise, seed, study="sensitivity",
                                    config=dataclasses.replace(base, k=k), vary="k"))
        if stability:
            for run_seed in run_seeds:
                rows += [exp.row(m, stability_noise, run_seed, study="stability") for m in stability_methods]
    return rows


# ------------------------------------------------------------------------------ summary
def mean_std(values: Sequence[float]) -> dict:
    """{"mean", "std"} of the finite values (sample std; 0 for one value; nan for none)."""
    v = [float(x) for x in values if x is not None and np.isfinite(x)]
    if not v:
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}


def summarize(rows: list[dict], seconds: float | None = None) -> dict:
    """``compare.json``: accuracy per noise rate and method as ``{"mean", "std"}`` over
    seeds (Vanilla repeated at every rate), and per noise rate the detection report,
    perplexity and per-category accuracy of each method; the sensitivity and stability
    studies."""
    table = [r for r in rows if r["study"] == "table"]
    seeds = sorted({r["seed"] for r in table})
    noises = sorted({r["noise"] for r in table if r["method"] != "vanilla"})
    methods = [m for m in METHODS if any(r["method"] == m for r in table)]

    def pick(method, noise):
        return [r for r in table if r["method"] == method and (method == "vanilla" or r["noise"] == noise)]

    # Vanilla does not depend on the noise: one row per seed (the first of each).
    vanilla = {r["seed"]: r for r in table if r["method"] == "vanilla"}
    summary = {"noise": {}, "detection": {}, "perplexity": {}, "categories": {}, "seeds": seeds, "seconds": seconds}
    for noise in noises:
        n = str(noise)
        summary["noise"][n], summary["detection"][n], summary["perplexity"][n], summary["categories"][n] = {}, {}, {}, {}
        for m in methods:
            rs = list(vanilla.values()) if m == "vanilla" else pick(m, noise)
            summary["noise"][n][m] = mean_std([r["accuracy"] for r in rs])
            summary["perplexity"][n][m] = mean_std([r.get("perplexity") for r in rs])
            cats = sorted({c for r in rs for c in r.get("by_category", {})})
            summary["categories"][n][m] = {c: mean_std([r["by_category"].get(c) for r in rs])["mean"] for c in cats}
            if any(r.get("detection") for r in rs):
                summary["detection"][n][m] = {k: mean_std([(r.get("detection") or {}).get(k) for r in rs])
                                              for k in DETECTION}
    sens = [r for r in rows if r["study"] == "sensitivity"]
    if sens:
        summary["sensitivity"] = {"noise": sens[0]["noise"], "seed": sens[0]["seed"], "beta": {}, "k": {}}
        for r in sens:
            summary["sensitivity"][r["vary"]][str(r["settings"]["denoise"][r["vary"]])] = r["accuracy"]
    stab = [r for r in rows if r["study"] == "stability"]
    if stab:
        summary["stability"] = {"noise": stab[0]["noise"], "seed": stab[0]["seed"],
                                "run_seeds": sorted({r["run_seed"] for r in stab}), "methods": {}}
        for m in dict.fromkeys(r["method"] for r in stab):
            vals = [r["accuracy"] for r in stab if r["method"] == m]
            summary["stability"]["methods"][m] = {"values": vals, **mean_std(vals)}
    return summary


def table_text(summary: dict) -> str:
    """The accuracy table (methods × noise rates, mean ± std) as Markdown."""
    noises = list(summary["noise"])
    methods = list(next(iter(summary["noise"].values())))
    lines = ["| method | " + " | ".join(f"{n} %" for n in noises) + " |", "|---" * (len(noises) + 1) + "|"]
    for m in methods:
        cells = [summary["noise"][n][m] for n in noises]
        lines.append(f"| {LABELS[m]} | " + " | ".join(f"{c['mean']:.3f} ± {c['std']:.3f}" for c in cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ figures
def write_outputs(rows: list[dict], summary: dict, out: str | Path) -> list[Path]:
    """compare.json and the figures: accuracy, sensitivity, perplexity, categories,
    stability (PNG; the figures need matplotlib)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Strict JSON: null where there is no value (e.g. SelfRAG tunes no model whose perplexity
    # could be measured).
    paths = [write_json(out / "compare.json", summary)]
    try:
        import matplotlib.pyplot as plt  # headless, matplotlib picks a file backend itself
    except ImportError:  # matplotlib is in the `compare`/`book` extras, not the core install
        return paths
    for name, fn in (("accuracy", plot_accuracy), ("sensitivity", plot_sensitivity), ("perplexity", plot_perplexity),
                     ("categories", plot_categories), ("stability", plot_stability)):
        fig = fn(summary)
        if fig is not None:
            fig.savefig(out / f"{name}.png", dpi=110)
            plt.close(fig)
            paths.append(out / f"{name}.png")
    return paths


# One colour per method, the same in every figure (13 methods: tab10 and three more).
COLORS = dict(zip(METHODS, ("#7f7f7f", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
                            "#bcbd22", "#17becf", "#ff7f0e", "#393b79", "#e7969c", "#000000")))


def _grouped_bars(ax, groups: list[str], series: dict[str, list], errors: dict[str, list] | None = None,
                  colors: dict[str, str] | None = None):
    """Bars of several series side by side in each group; `errors` (optional) as error bars,
    `colors` (optional) one colour per series label."""
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, (label, vals) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, yerr=(errors or {}).get(label),
               capsize=2, label=label, color=(colors or {}).get(label))
    ax.set_xticks(x)
    ax.set_xticklabels(groups)


def _seeds_text(summary: dict, std: bool = True) -> str:
    seeds = summary["seeds"]
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"mean{' ± std' if std else ''} over seeds {', '.join(map(str, seeds))}"


def plot_accuracy(summary: dict):
    """Figure: test accuracy of every method at every noise rate, in two panels (the
    baselines; RobustFT and its ablations), with error bars of the std over seeds when there
    are several."""
    import matplotlib.pyplot as plt

    noises = list(summary["noise"])
    methods = list(summary["noise"][noises[0]])
    several = len(summary["seeds"]) > 1
    panels = [(title, ms) for title, ms in (
        ("Baselines", [m for m in TABLE if m in methods]),
        ("RobustFT and its ablations", [m for m in ("robustft", *ABLATION_ROWS) if m in methods])) if ms]
    if len(panels) == 2 and panels[1][1] == ["robustft"]:  # no ablation ran: RobustFT is in the first panel
        panels = panels[:1]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels) + 0.4), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for ax, (title, ms) in zip(axes, panels):
        _grouped_bars(ax, [f"{n} %" for n in noises],
                      {LABELS[m]: [summary["noise"][n][m]["mean"] for n in noises] for m in ms},
                      {LABELS[m]: [summary["noise"][n][m]["std"] for n in noises] for m in ms} if several else None,
                      {LABELS[m]: COLORS[m] for m in ms})
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    axes[-1].set_xlabel("wrong training labels")
    fig.suptitle(f"Test accuracy of every method ({_seeds_text(summary)})")
    fig.tight_layout()
    return fig


def plot_sensitivity(summary: dict):
    """Figure 3: RobustFT's accuracy against β and against k. The y-axis spans at least 15
    points, so that a difference of a few points looks as large as it is; where the summary's
    stability study ran RobustFT at the same noise rate, the band shows the range of its
    accuracy over run seeds (the defaults β = 0.5, k = 3)."""
    import matplotlib.pyplot as plt

    s = summary.get("sensitivity")
    if not s:
        return None
    base = DenoiseConfig()  # the stability study runs the default config
    stab = summary.get("stability") or {}
    band = None
    if stab.get("noise") == s["noise"] and stab.get("seed") == s["seed"] and "robustft" in stab.get("methods", {}):
        band = stab["methods"]["robustft"]["values"]
    values = [v for name in ("beta", "k") for v in s[name].values()] + list(band or [])
    mid, half = (min(values) + max(values)) / 2, max(0.075, (max(values) - min(values)) / 2 + 0.02)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), sharey=True)
    for ax, name, xlabel in ((axes[0], "beta", "β (fraction of relabels kept)"),
                             (axes[1], "k", "k (worked examples)")):
        xs = sorted(s[name], key=float)
        if band:
            ax.axhspan(min(band), max(band), color="tab:gray", alpha=0.25,
                       label=f"β = {base.beta}, k = {base.k}: range over run seeds "
                             f"{', '.join(map(str, stab['run_seeds']))}")
        ax.plot([float(x) for x in xs], [s[name][x] for x in xs], "o-", color=COLORS["robustft"],
                label="RobustFT, one run")
        ax.set_xticks([float(x) for x in xs])
        ax.set_xlabel(xlabel)
    axes[0].set_ylim(mid - half, mid + half)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"RobustFT's sensitivity at {s['noise']} % noise (seed {s['seed']}, one run per point)")
    fig.tight_layout()
    return fig


def plot_perplexity(summary: dict):
    """Figure 4: perplexity of the gold test answers under each fine-tuned model (a linear
    axis from 1, the lowest perplexity there is)."""
    import matplotlib.pyplot as plt

    noises = list(summary["perplexity"])
    # nan in a summary, null (None) in a compare.json read back: SelfRAG trains no model
    methods = [m for m, v in summary["perplexity"][noises[0]].items()
               if v["mean"] is not None and np.isfinite(v["mean"])]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    _grouped_bars(ax, [f"{n} %" for n in noises],
                  {LABELS[m]: [summary["perplexity"][n][m]["mean"] for n in noises] for m in methods},
                  colors={LABELS[m]: COLORS[m] for m in methods})
    top = max(summary["perplexity"][n][m]["mean"] for n in noises for m in methods)
    ax.set_ylim(1, top + 0.1 * (top - 1))
    ax.set_ylabel("perplexity of the gold answers")
    ax.set_xlabel("wrong training labels")
    ax.set_title(f"Perplexity of the right test answers, lower is better ({_seeds_text(summary, std=False)})",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def plot_categories(summary: dict, methods: Sequence[str] = ("vanilla", "sft", "robustft", "robustft_noise_aware")):
    """Figure 5: accuracy per category at the middle noise rate."""
    import matplotlib.pyplot as plt

    noises = list(summary["categories"])
    n = noises[len(noises) // 2]
    methods = [m for m in methods if m in summary["categories"][n]]
    cats = sorted({c for m in methods for c in summary["categories"][n][m]})
    fig, ax = plt.subplots(figsize=(8, 3.4))
    _grouped_bars(ax, cats, {LABELS[m]: [summary["categories"][n][m].get(c, np.nan) for c in cats] for m in methods},
                  colors={LABELS[m]: COLORS[m] for m in methods})
    ax.set_ylabel("test accuracy")
    ax.set_xlabel("question kind")
    ax.set_ylim(0, 1)
    ax.set_title(f"Accuracy per category at {n} % noise ({_seeds_text(summary, std=False)})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def plot_stability(summary: dict):
    """Figure 6: accuracy over run seeds, one box per method."""
    import matplotlib.pyplot as plt

    s = summary.get("stability")
    if not s:
        return None
    methods = list(s["methods"])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.boxplot([s["methods"][m]["values"] for m in methods])
    for i, m in enumerate(methods, 1):
        ax.plot([i] * len(s["methods"][m]["values"]), s["methods"][m]["values"], ".", color=COLORS[m], alpha=0.8)
    ax.set_xticks(range(1, len(methods) + 1))
    ax.set_xticklabels([LABELS[m] for m in methods], fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Over run seeds {', '.join(map(str, s['run_seeds']))} at {s['noise']} % noise "
                 f"(world and model of seed {s['seed']})", fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `robustft compare` (also used by ``python -m robustft.compare``)."""
    p.add_argument("--out", default="results/compare", help="results folder (resumes from its runs.jsonl)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="benchmark seeds (default 0)")
    p.add_argument("--noise", type=int, nargs="+", default=list(NOISE_LEVELS), help="noise rates in percent")
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="methods (default: all)")
    p.add_argument("--passes", default=None, help="folder of expert passes to share (default OUT/passes)")
    p.add_argument("--run-seeds", type=int, nargs="+", default=list(RUN_SEEDS), help="run seeds of the stability study")
    p.add_argument("--no-sensitivity", action="store_true", help="skip the beta/k study")
    p.add_argument("--no-stability", action="store_true", help="skip the run-seed study")
    p.add_argument("--limit", type=int, default=None, help="only the first N training and test questions (a quick look)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    DenoiseConfig.add_arguments(p.add_argument_group("RobustFT's settings (see `robustft denoise --help`)"))


def check_arguments(args) -> None:
    """Raise ValueError with a one-line message for arguments that cannot run."""
    check_methods(args.methods)
    for n in args.noise:
        if not 0 < n < 100:
            raise ValueError(f"--noise {n}: give percentages between 1 and 99")
    if any(s < 0 for s in [*args.seeds, *args.run_seeds]):
        raise ValueError("seeds must be >= 0")
    if args.limit is not None and args.limit < 8:
        raise ValueError(f"--limit {args.limit}: give at least 8 questions")
    DenoiseConfig.from_args(args)  # a ValueError names a bad setting


def main_args(args) -> dict:
    """Run the comparison the parsed options ask for, write compare.json and the figures
    into ``args.out`` and print the table; returns the summary."""
    start = time.time()
    rows = run(args.seeds, args.noise, args.out, methods=args.methods, passes=args.passes,
               config=DenoiseConfig.from_args(args),
               sensitivity=not args.no_sensitivity, stability=not args.no_stability, run_seeds=args.run_seeds,
               limit=args.limit, progress=not args.no_progress)
    summary = summarize(rows, seconds=round(time.time() - start, 1))
    paths = write_outputs(rows, summary, args.out)
    print()
    print(table_text(summary))
    print(f"\n{summary['seconds']} s; wrote " + ", ".join(map(str, paths)))
    return summary


def main(argv=None) -> None:
    """``python -m robustft.compare``: the same as `robustft compare` (no folder check)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    check_arguments(args)
    main_args(args)


if __name__ == "__main__":
    main()
