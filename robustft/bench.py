"""RobustFT on a real model and the paper's own data (`robustft bench`): does the chain do
any harm outside the offline world?

For each official dataset folder (ARC, FPB, PubMedQA: ``labeled.csv``, ``noisy/noisyNN.csv``,
``test.csv``) and each noise rate, the same fixed subset of training rows (their noisy labels
from ``noisyNN.csv``, their true labels from ``labeled.csv``) and of test rows, and for each
method of `METHODS` — the base model, LoRA SFT on the noisy labels, RobustFT with our
defaults, RobustFT with the paper's choices (`DenoiseConfig.paper`), and our noise-aware
strategy — one row: test accuracy, and for the denoising methods the detection report
(precision, recall, F1 of the flags), the accuracy of the training labels before and after,
the reasoning expert's parse rate and the run's warnings (`robustft.diagnose`).

Every row is an `robustft.experiments.Experiment` row: stored in ``runs.jsonl`` as it
finishes, so the bench resumes; the expert passes of a dataset are stored once in
``passes/<dataset>`` and shared between methods and noise rates (the direct and reasoning
prompts hold no label). A method that keeps the training set exactly as given (the
noise-aware strategy when it finds no signal) shares SFT's fine-tune: its row takes SFT's
scores and carries ``finetune_shared_with: "sft"``. `summarize` adds the standard error of
every accuracy (``sqrt(p (1 - p) / n)``) and checks the targets (`targets`); ``--quick`` is
one dataset at one rate on fewer rows, for the book.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .data import NOISE_LEVELS, load_official
from .denoise import DenoiseConfig
from .experiments import LABELS, RUNLOG_KEY, Experiment
from .files import write_json
from .finetune import SFT
from .model import LanguageModel
from .runlog import RunLog, TailReader

DATASETS = ("arc", "fpb", "pubmedqa")
METHODS = ("vanilla", "sft", "robustft", "robustft_paper", "robustft_noise_aware")
DENOISING = ("robustft", "robustft_paper", "robustft_noise_aware")
# LoRA SFT for the bench: the library's settings, 2 epochs as the paper fine-tunes (its
# section 4.1.3), batch 8 (the memory measured on a laptop CPU).
BENCH_SFT = dict(SFT, epochs=2, batch_size=8)
FULL = dict(n_train=200, n_test=200)
QUICK = dict(datasets=("arc",), noise_levels=(30,), n_train=48, n_test=64)
SUBSET_SEED = 0


def subset(n_rows: int, n: int, seed: int = SUBSET_SEED) -> list[int]:
    """`n` row indices of `n_rows` (all when n >= n_rows), drawn with `seed`, in file order:
    the same rows at every noise rate, since the noisy files list the rows of labeled.csv."""
    if n >= n_rows:
        return list(range(n_rows))
    return sorted(np.random.default_rng(seed).permutation(n_rows)[:n].tolist())


def official_experiment(lm: LanguageModel, folder: str | Path, out: str | Path, *, n_train: int, n_test: int,
                        config: DenoiseConfig | None = None, sft: dict | None = None, perplexity: bool = False,
                        progress: bool = True, log=print) -> Experiment:
    """The `Experiment` of one official dataset folder: `n_train` training and `n_test` test
    rows (`subset`), the noisy file of each rate, the expert passes in
    ``out/passes/<dataset>``, rows in ``out/runs.jsonl``. `perplexity`: rows also carry the
    gold answers' perplexities (the book's Figure 4; the benchmark does without)."""
    folder, out = Path(folder), Path(out)
    first = load_official(folder, noise=NOISE_LEVELS[0])
    test_rows = subset(len(first.test), n_test)
    test = [first.test[i] for i in test_rows]
    train_rows = subset(len(first.train), n_train)
    cache: dict[int, list] = {}

    def train_at(noise: int, run_seed: int) -> list:
        if noise not in cache:
            data = first if noise == NOISE_LEVELS[0] else load_official(folder, noise=noise)
            cache[noise] = [data.train[i] for i in train_rows]
        return cache[noise]

    data = {"dataset": folder.name, "n_train": len(train_rows), "n_test": len(test), "subset_seed": SUBSET_SEED}
    log(f"{folder.name}: {len(train_rows)} of {len(first.train)} training rows, {len(test)} of "
        f"{len(first.test)} test rows")
    return Experiment(lm, test, train_at, lambda noise: out / "passes" / folder.name, sft or BENCH_SFT, data,
                      RunLog(out / "runs.jsonl", key=RUNLOG_KEY), config or DenoiseConfig(), perplexity=perplexity,
                      progress=progress, log=log)


def run(lm: LanguageModel, folders: Sequence[str | Path], out: str | Path = "results/bench", *,
        noise_levels: Sequence[int] = NOISE_LEVELS, methods: Sequence[str] = METHODS, n_train: int = FULL["n_train"],
        n_test: int = FULL["n_test"], config: DenoiseConfig | None = None, sft: dict | None = None,
        progress: bool = True, log=print) -> list[dict]:
    """Every method at every noise rate on every dataset folder; returns the rows (also in
    ``out/runs.jsonl``; a re-run reads back the finished ones)."""
    rows = []
    for folder in folders:
        exp = official_experiment(lm, folder, out, n_train=n_train, n_test=n_test, config=config, sft=sft,
                                  progress=progress, log=log)
        vanilla = exp.row("vanilla", None, 0) if "vanilla" in methods else None  # no noise to depend on
        for noise in noise_levels:
            rows += [{**vanilla, "noise_rate": noise}] if vanilla else []
            rows += [{**exp.row(m, noise, 0), "noise_rate": noise} for m in methods if m != "vanilla"]
    return rows


def _se(p: float | None, n: int) -> float | None:
    return math.sqrt(p * (1 - p) / n) if p is not None and n > 0 else None


def summarize(rows: list[dict], seconds: float | None = None, setup: dict | None = None) -> dict:
    """``bench.json``: per dataset and noise rate, each method's test accuracy with its
    standard error, and for the denoising methods the detection report, the training
    labels' accuracy before and after (with standard errors), the reasoning parse rate and
    the warnings; then `targets`.

    Two times: ``seconds``, the wall time of the call that wrote the file (after a resume,
    only what it ran), and ``row_seconds``, the sum of every row's own time (its expert
    passes, fine-tuning and evaluation; a pass shared between rows counts in the row that
    first ran it), which is the bench's cost however often it was interrupted. `setup`
    (model, threads) is stored with each dataset's rows (``n_train``, ``n_test``)."""
    distinct = {(r["dataset"], r["method"], r.get("noise"), r.get("run_seed")): r.get("seconds") or 0 for r in rows}
    sizes = {r["dataset"]: {"n_train": r["n_train"], "n_test": r["n_test"]} for r in rows}
    out: dict = {"datasets": {}, "seconds": seconds, "row_seconds": round(sum(distinct.values()), 1),
                 "setup": {**(setup or {}), "rows": sizes}}
    for r in rows:
        ds = out["datasets"].setdefault(r["dataset"], {})
        cell = ds.setdefault(str(r["noise_rate"]), {})
        entry = {"accuracy": r["accuracy"], "se": _se(r["accuracy"], r["n_test"]), "n_test": r["n_test"],
                 "seconds": r.get("seconds")}
        d = r.get("detection")
        if d:
            n = d.get("n") or r["n_train"]
            before = 1 - d["noisy"] / n if n else None
            after = d.get("label_accuracy")
            entry.update(precision=d.get("precision"), recall=d.get("recall"), f1=d.get("f1"), n_train=n,
                         labels_before=before, labels_before_se=_se(before, n), labels_after=after,
                         labels_after_se=_se(after, d.get("kept") or 0), kept=d.get("kept"),
                         parse_rate=(r.get("parse_rate") or {}).get("reasoning"), warnings=r.get("warnings", []))
        cell[r["method"]] = entry
    out["targets"] = targets(out)
    return out


def targets(summary: dict) -> dict:
    """The bench's three targets, each ``{"held": bool, "cases": [...]}``:

    - ``noise_aware_labels``: the noise-aware strategy's training labels are never worse than
      its input's (after >= before - one standard error of the difference);
    - ``faithful_no_harm``: RobustFT with the paper's choices gives training labels no worse
      than its input's in the same sense, or its run printed a warning that names a cause;
    - ``parse_rate``: the reasoning expert reads at least 95 % of its answers on every dataset.
    """
    cases = {"noise_aware_labels": [], "faithful_no_harm": [], "parse_rate": []}
    for name, ds in summary["datasets"].items():
        for noise, cell in ds.items():
            for method, key in (("robustft_noise_aware", "noise_aware_labels"), ("robustft_paper", "faithful_no_harm")):
                e = cell.get(method)
                if not e or e.get("labels_after") is None:
                    continue
                se = math.hypot(e["labels_before_se"] or 0, e["labels_after_se"] or 0)
                ok = e["labels_after"] >= e["labels_before"] - se
                warned = [w["check"] for w in e["warnings"]]
                held = ok or (key == "faithful_no_harm" and bool(warned))
                cases[key].append({"dataset": name, "noise": int(noise), "before": e["labels_before"],
                                   "after": e["labels_after"], "se": se, "warnings": warned, "held": held})
            rates = [e["parse_rate"] for e in cell.values() if e.get("parse_rate") is not None]
            if rates:
                cases["parse_rate"].append({"dataset": name, "noise": int(noise), "parse_rate": min(rates),
                                            "held": min(rates) >= 0.95})
    return {k: {"held": bool(v) and all(c["held"] for c in v), "cases": v} for k, v in cases.items()}


def _fmt(v, se=None, digits=3) -> str:
    if v is None:
        return "—"
    return f"{v:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def table_text(summary: dict) -> str:
    """The bench as Markdown: accuracy ± standard error per method; then, per denoising
    method, the flags and the training labels before → after; then the targets."""
    setup, lines = summary.get("setup") or {}, []
    if setup:
        sizes = ", ".join(f"{d} {n['n_train']}/{n['n_test']}" for d, n in (setup.get("rows") or {}).items())
        threads = f", {setup['threads']} CPU threads" if setup.get("threads") else ""
        lines += [f"{setup.get('model')}{threads}; training/test rows: {sizes}. ± is one standard error.", ""]
    if summary.get("row_seconds") is not None:
        call = (f"; the call that wrote this file ran {summary['seconds']:.0f} s (a resumed run reads "
                "finished rows back)" if summary.get("seconds") is not None else "")
        lines += [f"Time: the rows' own times sum to {summary['row_seconds']:.0f} s "
                  f"({summary['row_seconds'] / 3600:.1f} h){call}.", ""]
    for name, ds in summary["datasets"].items():
        methods = [m for m in METHODS if any(m in cell for cell in ds.values())]
        lines += [f"### {name}", "", "| noise | " + " | ".join(LABELS[m] for m in methods) + " |",
                  "|---" * (len(methods) + 1) + "|"]
        for noise, cell in ds.items():
            lines.append(f"| {noise} % | " + " | ".join(_fmt(cell[m]["accuracy"], cell[m]["se"]) if m in cell else "—"
                                                      for m in methods) + " |")
        lines += ["", "| noise | method | P | R | F1 | labels before | labels after | kept | parse rate | warnings |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for noise, cell in ds.items():
            for m in DENOISING:
                e = cell.get(m)
                if e and "labels_after" in e:
                    lines.append(f"| {noise} % | {LABELS[m]} | {_fmt(e['precision'], digits=2)} | "
                                 f"{_fmt(e['recall'], digits=2)} | {_fmt(e['f1'], digits=2)} | "
                                 f"{_fmt(e['labels_before'], e['labels_before_se'])} | "
                                 f"{_fmt(e['labels_after'], e['labels_after_se'])} | {e['kept']} | "
                                 f"{_fmt(e['parse_rate'], digits=2)} | "
                                 f"{', '.join(dict.fromkeys(w['check'] for w in e['warnings'])) or '—'} |")
        lines.append("")
    lines.append("Targets:")
    for key, t in summary["targets"].items():
        missed = [f"{c['dataset']} {c['noise']} %" for c in t["cases"] if not c["held"]]
        lines.append(f"- {key}: {'held' if t['held'] else 'missed'}" + (f" (missed at {', '.join(missed)})" if missed else ""))
    return "\n".join(lines)


def stored_rows(out: str | Path) -> list[dict]:
    """The finished rows in ``out/runs.jsonl`` as `run` returns them (the Vanilla row of a
    dataset once per noise rate that dataset has rows at), without a model. Read-only, so
    it can report on a bench that is still running. FileNotFoundError when there are none."""
    path = Path(out) / "runs.jsonl"
    found = TailReader(path).read()
    if not found:
        raise FileNotFoundError(f"{path}: no finished bench rows")
    rows, rates = [], {}
    for r in found:
        if r["method"] != "vanilla":
            rates.setdefault(r["dataset"], []).append(r["noise"])
            rows.append({**r, "noise_rate": r["noise"]})
    for r in found:
        if r["method"] == "vanilla":
            rows += [{**r, "noise_rate": n} for n in sorted(set(rates.get(r["dataset"], [])))]
    return rows


def write_outputs(summary: dict, out: str | Path) -> list[Path]:
    """``bench.json`` and ``bench.md`` in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "bench.md"
    md.write_text(table_text(summary) + "\n")
    return [write_json(out / "bench.json", summary), md]


# ----------------------------------------------------------------------------- command
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `robustft bench`."""
    p.add_argument("--model", help="Hugging Face id, local folder, .gguf file, or smollm2 (needed unless --report)")
    p.add_argument("--data", help="an official dataset folder, or a folder of them (arc, fpb, ...) "
                                  "(needed unless --report)")
    p.add_argument("--report", action="store_true",
                   help="run nothing: write bench.json and bench.md from the rows finished in --out "
                        "(e.g. after stopping a long bench; safe while it runs)")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), help="datasets under --data (default: %(default)s)")
    p.add_argument("--out", default="results/bench", help="results folder (resumes from its runs.jsonl)")
    p.add_argument("--noise", type=int, nargs="+", default=list(NOISE_LEVELS), help="noise rates in percent")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods (default: all)")
    p.add_argument("--train", type=int, default=FULL["n_train"], help="training rows per dataset (default: %(default)s)")
    p.add_argument("--test", type=int, default=FULL["n_test"], help="test rows per dataset (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help=f"one dataset ({QUICK['datasets'][0]}) at one rate ({QUICK['noise_levels'][0]} %%), "
                        f"{QUICK['n_train']} training and {QUICK['n_test']} test rows")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    DenoiseConfig.add_arguments(p.add_argument_group("RobustFT's settings (see `robustft denoise --help`)"))


def folders(data: str | Path, datasets: Sequence[str]) -> list[Path]:
    """The dataset folders `data` stands for: itself when it holds ``test.csv``, else its
    subfolders named `datasets` (a FileNotFoundError names a missing one)."""
    data = Path(data)
    if (data / "test.csv").exists():
        return [data]
    missing = [d for d in datasets if not (data / d / "test.csv").exists()]
    if missing:
        raise FileNotFoundError(f"{data}: no official dataset folder {missing[0]!r} (with a test.csv)")
    return [data / d for d in datasets]


def check_arguments(args) -> None:
    """Raise ValueError (or FileNotFoundError) with a one-line message for arguments that
    cannot run."""
    if args.report:
        stored_rows(args.out)
        return
    for flag in ("model", "data"):
        if getattr(args, flag) is None:
            raise ValueError(f"--{flag} is needed (or --report, to write the tables of a finished or stopped bench)")
    for n in args.noise:
        if n not in NOISE_LEVELS:
            raise ValueError(f"--noise {n}: the official files have {', '.join(map(str, NOISE_LEVELS))}")
    if args.train < 8 or args.test < 8:
        raise ValueError("--train and --test: give at least 8 rows")
    DenoiseConfig.from_args(args)
    folders(args.data, QUICK["datasets"] if args.quick else args.datasets)


def report(out: str | Path) -> dict:
    """`robustft bench --report`: bench.json and bench.md from the rows finished in `out`
    (`stored_rows`); runs nothing. Prints the table; returns the summary."""
    rows = stored_rows(out)
    try:  # the name the bench was started with (rows store the model's hash)
        model = json.loads((Path(out) / "run.json").read_text())["robustft"]["model"]
    except (OSError, ValueError, KeyError, TypeError):
        model = rows[0]["model"]
    summary = summarize(rows, setup={"model": model})
    paths = write_outputs(summary, out)
    print(table_text(summary))
    print("\nwrote " + ", ".join(map(str, paths)))
    return summary


def main_args(args, lm: LanguageModel) -> dict:
    """Run the bench the parsed options ask for, write bench.json and bench.md, print the
    table; returns the summary."""
    start = time.time()
    quick = QUICK if args.quick else {}
    rows = run(lm, folders(args.data, quick.get("datasets", args.datasets)), args.out,
               noise_levels=quick.get("noise_levels", args.noise), methods=args.methods,
               n_train=quick.get("n_train", args.train), n_test=quick.get("n_test", args.test),
               config=DenoiseConfig.from_args(args), progress=not args.no_progress)
    setup = {"model": lm.name, "threads": torch.get_num_threads(), "n_train": quick.get("n_train", args.train),
             "n_test": quick.get("n_test", args.test)}
    summary = summarize(rows, seconds=round(time.time() - start, 1), setup=setup)
    paths = write_outputs(summary, args.out)
    print()
    print(table_text(summary))
    print(f"\n{summary['seconds']} s this call, {summary['row_seconds']} s in the rows' own times; wrote "
          + ", ".join(map(str, paths)))
    return summary
