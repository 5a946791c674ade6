"""RobustFT's denoising chain in one place: detect → relabel → select → clean ∪ selected.

    result = robustft.denoise(samples, lm, robustft.DenoiseConfig(k=3, beta=0.5), out="runs/arc30")
    result.samples      # the training set: clean samples and the selected relabels
    result.provenance   # per input sample: each expert's answer, neighbours, entropy, stage
    result.report       # precision/recall/F1 of the noise flags etc., when true labels are known

Every stage is a pure function over arrays (`detect_noise`, `nearest_clean`,
`response_entropy`, `select_by_entropy`, `detection_report`); this module only runs the
model passes (`robustft.experts`) and wires the arrays through. With ``out=`` each expert
batch is stored as it finishes, so a re-run resumes; the config is saved beside it.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import _write_json as write_json  # the one atomic JSON writer
from .detect import CHECKERS, detect_noise, llm_checker, run_detection_experts
from .experts import PassStore, too_long
from .metrics import answers_match
from .model import LanguageModel
from .relabel import REVIEWS, embed, relabel, resolve_embedder
from .sample import MC, Sample
from .selection import MEASURES, response_entropy, select_by_entropy, supporting_entropy

CLEAN, SELECTED, DROPPED, SKIPPED = "clean", "selected", "dropped", "skipped"
ENTROPY_FROM = ("context", "review", "experts")
STRATEGIES = ("robustft", "noise_aware")
# The paper's ablations (Table 3) as changes to a config (see `DenoiseConfig.ablation`).
ABLATIONS = {
    "wo_selection": {"beta": 1.0},
    "wo_checker": {"checker": "reasoning"},
    "wo_reviewer": {"review": "none"},
    "wo_cer": {"cer": False},
    "wo_rel": {"checker": "direct", "review": "none", "entropy_from": "context"},
}


@dataclass(frozen=True)
class DenoiseConfig:
    """Every setting of a denoising run (saved as ``config.json`` with the run).

    Attributes:
        checker: "agree" (the paper's rule: clean when both experts agree with the label),
            "either" (clean when at least one agrees), "llm" (the paper's Y/N prompt), or one
            expert alone, "reasoning" or "direct" (the ablations w/o Checker and w/o REL).
        k: clean worked examples retrieved per noisy sample (the paper: 3).
        embedder: retrieval embeddings: "auto", "minilm", "tfidf", "llm", or a
            sentence-transformers id/folder (see `robustft.relabel.embed`).
        review: how the CER and reasoning answers become the new label: "agent" (the paper's
            review agent, an LLM prompt), "confidence" (ours: agreement stands, else the
            surer expert; `relabel.review_by_confidence`), or "none" (the CER answer).
        beta: fraction of the relabeled samples kept, lowest entropy first (the paper: 0.5).
        entropy: "nll" (the paper's mean token NLL), "shannon" or "options"
            (see `robustft.selection`).
        entropy_from: whose answer's entropy ranks the relabels: "context" (the paper: the
            CER answer under the CER prompt), "review" (the new label under the review
            agent's prompt; the CER answer's when no agent ran), or "experts" (ours: the new
            label under the experts that gave it, `selection.supporting_entropy`).
        reasoning_paths: 1 (the paper): the reasoning-enhanced expert writes one greedy
            response. More: it samples that many responses and answers by majority vote, its
            confidence being the vote's share (self-consistency, an option of ours;
            `robustft.detect.run_reasoning_expert`). On the offline benchmark 8 paths raised
            the training labels' accuracy on seeds 0-2 but not on held-out seeds 3-5, so it
            is off by default (`results/self-consistency-8-paths/`).
        temperature: the sampling temperature of those paths (used when reasoning_paths > 1).
        max_new_tokens: generation budget of the reasoning expert and of short answers.
            256: the smallest budget whose parse rate on real SmolLM2-135M-Instruct responses
            (ARC, FPB, PubMedQA) was within 1 point of the best measured: 0.80 at 256 and 512,
            0.77 at 128 and 0.76 at 64, which cut 21 % and 56 % of the ARC responses before
            their end (``results/real-smollm2/parse-rate.md``). A response that ends sooner
            costs nothing more.
        batch_size: samples per stored batch (and per forward pass).
        skip_long: leave out (stage "skipped") the samples whose prompt and answer exceed the
            model's context, instead of stopping with an error naming the first.
        strategy: "robustft" (detect → relabel → select, the paper's chain) or "noise_aware"
            (ours, not the paper's: estimate the noise rate from the samples the experts are
            surest of, calibrate the experts' reliability against the given labels, and train
            on the most probable label of every sample; `robustft.noise_aware`). The
            noise-aware strategy uses the two detection experts only (no CER, no review, no
            selection); short-answer samples keep their label.
        cer: retrieve k worked examples for relabeling (context-enhanced relabeling); False
            asks the relabeling prompt with the question alone (the ablation w/o CER).

    The paper's ablations (Table 3) are settings of this config: `DenoiseConfig.ablation`.
    """

    checker: str = "agree"
    k: int = 3
    embedder: str = "auto"
    review: str = "confidence"
    beta: float = 0.5
    entropy: str = "nll"
    entropy_from: str = "experts"
    reasoning_paths: int = 1
    temperature: float = 0.7
    max_new_tokens: int = 256
    batch_size: int = 64
    skip_long: bool = False
    strategy: str = "robustft"
    cer: bool = True

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.checker not in (*CHECKERS, "llm"):
            raise ValueError(f"checker must be one of {[*CHECKERS, 'llm']}, got {self.checker!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if self.entropy not in MEASURES:
            raise ValueError(f"entropy must be one of {MEASURES}, got {self.entropy!r}")
        if self.review not in REVIEWS:
            raise ValueError(f"review must be one of {REVIEWS}, got {self.review!r}")
        if self.entropy_from not in ENTROPY_FROM:
            raise ValueError(f"entropy_from must be one of {ENTROPY_FROM}, got {self.entropy_from!r}")
        if self.reasoning_paths < 1:
            raise ValueError(f"reasoning_paths must be >= 1, got {self.reasoning_paths}")
        if not (self.temperature > 0 and np.isfinite(self.temperature)):
            raise ValueError(f"temperature must be finite and > 0, got {self.temperature}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")

    @classmethod
    def paper(cls, **changes) -> "DenoiseConfig":
        """The paper's own choices where ours differ: the LLM review agent, and the CER
        answer's entropy for selection. (Our defaults measured better on the offline
        benchmark; see the book and the closing notes.)"""
        return cls(**{"review": "agent", "entropy_from": "context", **changes})

    def ablation(self, name: str) -> "DenoiseConfig":
        """This config without one component (the paper's Table 3): a name of `ABLATIONS`.

        - "wo_selection": every relabel is kept (β = 1);
        - "wo_checker": no consistency check between the experts — the reasoning-enhanced
          expert alone flags a label it disagrees with;
        - "wo_reviewer": no review step — the CER answer is the new label;
        - "wo_cer": no retrieved worked examples (cer=False): the relabeling prompt asks the
          question alone;
        - "wo_rel": no reasoning-enhanced LLM — the direct expert alone flags, the CER answer
          is the new label and its own entropy ranks it.
        """
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; use one of {sorted(ABLATIONS)}")
        return dataclasses.replace(self, **ABLATIONS[name])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DenoiseConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown DenoiseConfig fields: {sorted(unknown)}")
        return cls(**d)


@dataclass
class DenoiseResult:
    """The output of `denoise`.

    Attributes:
        samples: the training set — clean samples with their labels and selected samples
            with their new labels — in input order.
        provenance: one dict per *input* sample: id, given label, each expert's answer,
            noisy flag, retrieved neighbours (ids), CER and review answers, entropy, the
            stage it ended in ("clean", "selected", "dropped"; "skipped" when too long for
            the model) and its training label.
        config: the `DenoiseConfig` used.
        report: `detection_report` when every sample's true label is known, else None.
    """

    samples: list[Sample]
    provenance: list[dict]
    config: DenoiseConfig
    report: dict | None = None
    stats: dict = field(default_factory=dict)


def denoise(samples: Sequence[Sample], lm: LanguageModel, config: DenoiseConfig | None = None, *,
            out: str | os.PathLike | None = None, force: bool = False, progress: bool = True,
            on_batch=None) -> DenoiseResult:
    """Run RobustFT's denoising chain on a noisy SFT set.

    Args:
        samples: the noisy training samples (multiple choice and/or short answer).
        lm: the model that plays every expert.
        config: the settings (default `DenoiseConfig()`, the paper's).
        out: a run folder: expert batches are stored there as they finish (a re-run resumes
            and recomputes only what a changed config or input changes) and ``config.json``
            is written. None keeps nothing.
        force: recompute every expert batch even when stored.
        on_batch: called after each computed and stored expert batch, with the count so far
            (tests use it to interrupt a run; needs `out`).

    Returns a `DenoiseResult`.
    """
    config = config or DenoiseConfig()
    samples = list(samples)
    if not samples:
        raise ValueError("no samples to denoise")
    store = None
    if out is not None:
        store = PassStore(out, force=force, on_batch=on_batch)
        write_json(Path(out) / "config.json", {**config.to_dict(), "embedder_resolved": resolve_embedder(config.embedder)})
    long = too_long(lm, samples, config.max_new_tokens)
    if long.any() and not config.skip_long:
        first = samples[int(np.flatnonzero(long)[0])]
        raise ValueError(f"sample {first.id!r} and {int(long.sum()) - 1} more: the prompt with its answer exceeds "
                         f"the model's {lm.max_length} tokens; use a model with a longer context, or "
                         "skip_long=True (--skip-long) to leave such samples out")
    fit = [s for s, bad in zip(samples, long) if not bad]
    kept, rows, stats = _chain(fit, lm, config, store, progress)
    rows = iter(rows)
    provenance = [{"id": s.id, "given": s.answer, "noisy": None, "stage": SKIPPED, "label": None} if bad else next(rows)
                  for s, bad in zip(samples, long)]
    report = None
    if all(s.clean_answer is not None for s in samples):
        report = {**detection_report(fit, [p for p in provenance if p["stage"] != SKIPPED]), "skipped": int(long.sum())}
    stats.update(computed_batches=store.computed if store else None, reused_batches=store.reused if store else None)
    return DenoiseResult(kept, provenance, config, report, stats)


def _chain(samples: list[Sample], lm: LanguageModel, config: DenoiseConfig, store, progress):
    """detect → relabel → select over samples that fit the model: (training set, provenance, stats)."""
    kw = dict(batch_size=config.batch_size, store=store, progress=progress)
    direct, reasoning = run_detection_experts(lm, samples, max_new_tokens=config.max_new_tokens,
                                              paths=config.reasoning_paths, temperature=config.temperature, **kw)
    labels = [s.answer for s in samples]
    tasks = [s.task for s in samples]
    if config.strategy == "noise_aware":
        return _noise_aware(samples, direct, reasoning)
    if config.checker == "llm":
        noisy = llm_checker(lm, samples, direct.answers, reasoning.answers, **kw)
    else:
        noisy = detect_noise(labels, direct.answers, reasoning.answers, tasks, config.checker)

    embeddings = embed(samples, config.embedder, lm, config.batch_size) if noisy.any() and config.cer else None
    rel = relabel(lm, samples, noisy, reasoning, k=config.k if config.cer else 0, review=config.review, embeddings=embeddings,
                  max_new_tokens=config.max_new_tokens, **kw)
    if config.entropy_from == "review" and rel.review is not None:
        entropy = response_entropy(rel.review, rel.labels, config.entropy)
    elif config.entropy_from == "experts":
        entropy = supporting_entropy(rel.labels, rel.context, response_entropy(rel.context, rel.labels, config.entropy),
                                     [reasoning.answers[i] for i in rel.indices], reasoning.answer_nll[rel.indices],
                                     [tasks[i] for i in rel.indices])
    else:
        entropy = response_entropy(rel.context, rel.context.answers, config.entropy)
    keep = select_by_entropy(entropy, config.beta)

    provenance = []
    pos = {int(i): j for j, i in enumerate(rel.indices)}
    for i, s in enumerate(samples):
        row = {"id": s.id, "given": s.answer, "direct": direct.answers[i], "reasoning": reasoning.answers[i],
               "reasoning_text": reasoning.texts[i], "noisy": bool(noisy[i])}
        if reasoning.agreement is not None:
            row["reasoning_agreement"] = _num(reasoning.agreement[i])
        if s.clean_answer is not None:
            row["clean_answer"] = s.clean_answer
        if i in pos:
            j = pos[i]
            row.update(neighbours=[samples[n].id for n in rel.neighbours[j] if n >= 0],
                       context=rel.context.answers[j],
                       review=rel.review.answers[j] if rel.review is not None else None,
                       relabel=rel.labels[j], entropy=_num(entropy[j]),
                       stage=SELECTED if keep[j] else DROPPED, label=rel.labels[j] if keep[j] else None)
        else:
            row.update(stage=CLEAN, label=s.answer)
        provenance.append(row)
    kept = training_set(samples, provenance)
    passes = {"direct": direct, "reasoning": reasoning, "context": rel.context, "review": rel.review}
    return kept, provenance, {"seconds": {k: round(v.seconds, 2) for k, v in passes.items() if v is not None}}




def _noise_aware(samples: list[Sample], direct, reasoning):
    """The noise-aware strategy over the detection experts' passes (see `robustft.noise_aware`)."""
    from .noise_aware import label_posterior
    from .sample import letter, letter_index

    mc = np.array([s.task == MC for s in samples], dtype=bool)
    rows = np.flatnonzero(mc)
    provenance = [{"id": s.id, "given": s.answer, "direct": direct.answers[i], "reasoning": reasoning.answers[i],
                   "reasoning_text": reasoning.texts[i], "noisy": False, "stage": CLEAN, "label": s.answer}
                  for i, s in enumerate(samples)]
    for i, s in enumerate(samples):
        if s.clean_answer is not None:
            provenance[i]["clean_answer"] = s.clean_answer
    stats = {"seconds": {"direct": round(direct.seconds, 2), "reasoning": round(reasoning.seconds, 2)}}
    if len(rows):
        sub = [samples[i] for i in rows]
        post = label_posterior([letter_index(s.answer) for s in sub], direct.probs[rows],
                               [letter_index(reasoning.answers[i]) if reasoning.answers[i] else -1 for i in rows],
                               -reasoning.answer_nll[rows], [len(s.options) for s in sub])
        for j, i in enumerate(rows):
            p_given = float(post.posterior[j, letter_index(samples[i].answer)])
            new = letter(int(post.labels[j]))
            provenance[i].update(noisy=bool(post.noisy[j]), posterior_given=p_given, relabel=new,
                                 reliability=float(post.reliability[j]))
            if post.noisy[j]:
                provenance[i].update(stage=SELECTED, label=new)
        stats["noise_rate"] = float(post.noise_rate)
    kept = training_set(samples, provenance)
    return kept, provenance, stats


def training_set(samples: Sequence[Sample], provenance: Sequence[dict]) -> list[Sample]:
    """The samples a run trains on, in input order: clean ones as given, selected ones with
    their new label; dropped (and skipped) ones left out. The one rule for every strategy and
    baseline that writes provenance rows."""
    return [s if p["stage"] == CLEAN else s.with_answer(p["label"])
            for s, p in zip(samples, provenance) if p["stage"] in (CLEAN, SELECTED)]


def _num(v):
    return float(v) if np.isfinite(v) else None


def detection_report(samples: Sequence[Sample], provenance: Sequence[dict]) -> dict:
    """How well each stage did, against the true labels (`Sample.clean_answer`).

    Returns a dict of fractions (nan where a stage saw no sample):
        precision, recall, f1: of the noisy flags against the truly noisy labels;
        relabel_accuracy: new labels equal to the true one, over the flagged samples;
        selection_accuracy: the same over the selected samples;
        clean_accuracy: given labels right, over the samples the checker kept as clean;
        label_accuracy: training labels right, over the final training set;
        and counts: n, noisy (truly), flagged, selected, kept (= clean + selected).
    """
    truth = np.array([s.is_noisy for s in samples], dtype=bool)
    flagged = np.array([p["noisy"] for p in provenance], dtype=bool)
    right = lambda y, s: answers_match(y, s.clean_answer, s.task)  # noqa: E731
    relabel_ok = [right(p["relabel"], s) for s, p in zip(samples, provenance) if p["noisy"]]
    selected_ok = [right(p["label"], s) for s, p in zip(samples, provenance) if p["stage"] == SELECTED]
    clean_ok = [right(p["label"], s) for s, p in zip(samples, provenance) if p["stage"] == CLEAN]
    tp = int((truth & flagged).sum())
    precision = tp / flagged.sum() if flagged.any() else float("nan")
    recall = tp / truth.sum() if truth.any() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
    mean = lambda xs: float(np.mean(xs)) if len(xs) else float("nan")  # noqa: E731
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1),
            "relabel_accuracy": mean(relabel_ok), "selection_accuracy": mean(selected_ok),
            "clean_accuracy": mean(clean_ok), "label_accuracy": mean(clean_ok + selected_ok),
            "n": len(samples), "noisy": int(truth.sum()), "flagged": int(flagged.sum()),
            "selected": len(selected_ok), "kept": len(clean_ok) + len(selected_ok)}
