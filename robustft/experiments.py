"""The one loop behind every table of methods: run a method, store its row, resume.

An `Experiment` is one model with its test set and its noisy training sets (one per noise
rate and run seed). `Experiment.row` gives the result of one method there — the base model
("vanilla"), LoRA SFT on the noisy labels ("sft"), SelfRAG, or a denoising method followed by
the same LoRA SFT — as a plain dict: test accuracy, accuracy per category, the perplexity of
the gold answers (the set's and each question's), the number of weights trained, and the
denoising run's detection report and warnings.

Each row is appended to a `RunLog` the moment it is finished, keyed by the model's
`LanguageModel.fingerprint`, the data, the run seed, the method, the noise rate and every
setting, so an interrupted table resumes where it stopped and a changed setting is
recomputed, never reused. The expert passes of the denoising methods are stored in a folder
per training set (`PassStore`), so methods that ask the model the same prompts share them. A
denoising method that keeps the training set exactly as given (every sample, every label) shares
SFT's fine-tune too: its row takes SFT's scores and says so (``finetune_shared_with``).

The offline comparison (`robustft.compare`), the demo (`robustft.demo`), the benchmark on the
paper's own data (`robustft.bench`) and the book's chapters are all loops over `row`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import diagnose
from .baselines import confident_learning, noiseal, self_rag, self_select
from .denoise import DenoiseConfig, denoise
from .evaluate import evaluate, perplexity
from .finetune import finetune
from .model import LanguageModel
from .relabel import resolve_embedder
from .runlog import RunLog
from .sample import Sample

# Every method a table can hold. "vanilla" trains nothing; "selfrag" answers with retrieved
# training samples and trains nothing; the others give a training set that LoRA SFT uses.
TABLE = ("vanilla", "sft", "robustft", "robustft_noise_aware", "selfselect", "selfrag", "noiseal",
         "confident_learning")
ABLATION_ROWS = ("wo_selection", "wo_checker", "wo_reviewer", "wo_cer", "wo_rel")
METHODS = TABLE + ABLATION_ROWS
# "robustft_paper": RobustFT with the paper's own choices where our defaults differ
# (`DenoiseConfig.paper`); the benchmark on real data reports it beside our defaults.
VARIANTS = ("robustft_paper",)
LABELS = {"vanilla": "Vanilla", "sft": "SFT", "robustft": "RobustFT", "robustft_noise_aware": "RobustFT noise-aware (ours)",
          "robustft_paper": "RobustFT (paper's choices)", "selfselect": "SelfSelect", "selfrag": "SelfRAG",
          "noiseal": "NoiseAL", "confident_learning": "Confident learning", "wo_selection": "w/o Selection",
          "wo_checker": "w/o Checker", "wo_reviewer": "w/o Reviewer", "wo_cer": "w/o CER", "wo_rel": "w/o REL"}
RUNLOG_KEY = ("model", "data", "run_seed", "method", "noise", "settings")
# The keys of `Experiment._scored` that come from the tuned model: what a shared fine-tune shares.
SCORES = ("accuracy", "by_category", "perplexity", "perplexities", "trainable")


def method_config(method: str, base: DenoiseConfig) -> DenoiseConfig | None:
    """The `DenoiseConfig` a denoising method runs with (None for methods that need none)."""
    if method in ("robustft", "selfselect", "noiseal", "confident_learning"):
        return base
    if method == "robustft_noise_aware":
        return dataclasses.replace(base, strategy="noise_aware")
    if method == "robustft_paper":
        return DenoiseConfig.paper(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)
                                      if f.name not in ("review", "entropy_from")})
    if method in ABLATION_ROWS:
        return base.ablation(method)
    return None


def denoiser(method: str):
    """The function that turns a noisy training set into a denoised one for a method:
    `robustft.denoise` (RobustFT, its variants, the ablations) or a baseline of
    `robustft.baselines`; each is called as ``fn(samples, lm, config, out=..., progress=...)``."""
    return {"selfselect": self_select, "noiseal": noiseal, "confident_learning": confident_learning}.get(method, denoise)


def check_methods(methods: Sequence[str]) -> None:
    """A ValueError naming the first unknown method."""
    known = METHODS + VARIANTS
    bad = [m for m in methods if m not in known]
    if bad:
        raise ValueError(f"unknown method {bad[0]!r}; use some of {', '.join(known)}")


@dataclass
class Experiment:
    """One model, its test set and its noisy training sets; `row` runs a method there.

    Attributes:
        lm: the base model.
        test: the clean test set.
        train_at: ``(noise, run_seed) -> samples``, the noisy training set of a noise rate
            (percent) and run seed.
        passes_at: ``noise -> folder`` where the denoising methods store their expert
            passes for that training set.
        sft: keyword arguments of `robustft.finetune` (epochs, lr, LoRA settings).
        data: what identifies the data in the run log's keys (e.g. ``{"seed": 0}`` for the
            offline benchmark, ``{"dataset": "arc", ...}`` for an official folder); also
            copied into every row.
        runlog: where finished rows are stored (key `RUNLOG_KEY`).
        config: the base `DenoiseConfig` of the denoising methods.
        extra_settings: settings that change every row without being in `sft` or the
            config (e.g. a question limit); part of each row's key.
        perplexity: also measure the perplexity of the gold answers (the paper's Figure 4).
        log: called with one line per finished or read-back row.
    """

    lm: LanguageModel
    test: list[Sample]
    train_at: Callable[[int, int], list[Sample]]
    passes_at: Callable[[int], Path]
    sft: dict
    data: dict
    runlog: RunLog
    config: DenoiseConfig = dataclasses.field(default_factory=DenoiseConfig)
    extra_settings: dict = dataclasses.field(default_factory=dict)
    perplexity: bool = True
    progress: bool = True
    log: Callable[[str], None] | None = None

    def __post_init__(self):
        if self.log is None:
            self.log = print

    def settings(self, method: str, cfg: DenoiseConfig | None) -> dict:
        """Everything besides the model and the data that decides a row (its key)."""
        settings = {"sft": self.sft, **self.extra_settings}
        if cfg is not None:
            settings.update(denoise=cfg.to_dict(), embedder=resolve_embedder(cfg.embedder))
        elif method == "selfrag":
            settings.update(k=self.config.k, embedder=resolve_embedder(self.config.embedder))
        return settings

    def row(self, method: str, noise: int | None, run_seed: int, *, study: str = "table",
            config: DenoiseConfig | None = None, vary: str | None = None) -> dict:
        """The row of `method` at `noise` % (None for "vanilla") with `run_seed` (the seed of
        the noise injection and of fine-tuning): read back from the run log, or computed and
        stored. `config` overrides the method's own (the sensitivity study varies it);
        `study` and `vary` label the row for summaries."""
        check_methods([method])
        cfg = config if config is not None else method_config(method, self.config)
        key = dict(model=self.lm.fingerprint, data=self.data, run_seed=run_seed, method=method,
                   noise=None if method == "vanilla" else noise, settings=self.settings(method, cfg))
        row = self.runlog.get(**key)
        start = time.time()
        if row is None:
            row = self.runlog.add({**key, **self.data, **self._compute(method, noise, run_seed, cfg),
                                   "seconds": round(time.time() - start, 1)})
            how = f"{row['seconds']} s"
        else:
            how = "read back"
        d = row.get("detection") or {}
        flags = f"  [flags P {d['precision']:.2f} R {d['recall']:.2f} F1 {d['f1']:.2f}]" if d.get("f1") is not None else ""
        at = "" if key["noise"] is None else f" @ {noise} %"
        self.log(f"  {study:>11} {method:>22}{at} (run seed {run_seed}): {row['accuracy']:.3f} ({how}){flags}")
        for w in row.get("warnings") or []:
            self.log(f"  {'':>11} warning: {w['message']}")
        return {**row, "study": study, **({"vary": vary} if vary else {})}

    def _scored(self, model: LanguageModel, extra: dict | None = None) -> dict:
        result = evaluate(model, self.test, progress=False)
        per_question = perplexity(model, self.test) if self.perplexity else None
        # "perplexity": the set's (geometric mean over questions); "perplexities": one per
        # test question, for plots of their spread (Figure 4).
        ppl = float(np.exp(np.log(per_question).mean())) if per_question is not None else None
        trainable = sum(p.numel() for p in model.model.parameters() if p.requires_grad)
        return {"accuracy": result.accuracy, "by_category": result.by_category, "perplexity": ppl,
                "perplexities": None if per_question is None else per_question.tolist(),
                "trainable": trainable, **(extra or {})}

    def _compute(self, method: str, noise: int | None, run_seed: int, cfg: DenoiseConfig | None) -> dict:
        if method == "vanilla":
            return self._scored(self.lm, {"trainable": 0})  # trains nothing
        train = self.train_at(noise, run_seed)
        if method == "sft":
            return self._scored(finetune(self.lm, train, seed=run_seed, progress=self.progress, **self.sft))
        if method == "selfrag":
            result = self_rag(self.lm, train, self.test, k=self.config.k, embedder=self.config.embedder)
            return {"accuracy": result.accuracy, "by_category": result.by_category, "perplexity": None,
                    "perplexities": None, "trainable": 0}
        result = denoiser(method)(train, self.lm, cfg, out=self.passes_at(noise), progress=self.progress)
        found = list(result.stats.get("warnings", []))
        extra = {}
        report = dict(result.report or {})
        if "noise_rate" in result.stats:
            report["noise_rate"] = result.stats["noise_rate"]
        denoised = {"detection": report, "kept": len(result.samples),
                    "parse_rate": result.stats.get("parse_rate"), "warnings": found}
        if result.samples and list(result.samples) == list(train):
            # The chain kept every sample with its given label (e.g. noise-aware finding no
            # signal): its fine-tune would be SFT's, the same call on the same data with the same
            # seed, so SFT's row (stored, or computed now) gives its scores instead of a rerun.
            sft = self.row("sft", noise, run_seed)
            self.log(f"  {'':>11} {method} kept the training set as given, so it shares SFT's fine-tune")
            return {**{k: sft.get(k) for k in SCORES}, **denoised, "finetune_shared_with": "sft"}
        if result.samples:
            tuned = finetune(self.lm, result.samples, seed=run_seed, progress=self.progress, **self.sft)
        else:  # A weak model's chain can drop every sample: a degenerate run, not a crash.
            tuned, extra = self.lm, {"trainable": 0}
            new = diagnose.nothing_kept(method, len(train))
            diagnose.report(new)
            found += new
        return self._scored(tuned, {**denoised, **extra})
