"""RobustFT's denoising chain in one place: detect → relabel → select → clean ∪ selected.

    result = robustft.denoise(samples, lm, robustft.DenoiseConfig(k=3, beta=0.5), out="runs/arc30")
    result.samples      # the training set: clean samples and the selected relabels
    result.provenance   # per input sample: each expert's answer, neighbours, entropy, stage
    result.report       # precision/recall/F1 of the noise flags etc., when true labels are known

Every stage is a pure function over arrays (`detect_noise`, `nearest_clean`,
`response_entropy`, `select_by_entropy`, `detection_report`); this module only runs the
model passes (`robustft.experts`) and wires the arrays through. With ``out=`` each expert
batch is stored as it finishes, so a re-run resumes; the config is saved beside it. Several
processes can share the passes (``torchrun``, ``accelerate launch``, ``shard=``; see
`robustft.shards`).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import diagnose
from .backends import Backend, backend_warnings, require
from .detect import CHECKERS, detect_noise, detection_needs, llm_checker, run_detection_experts
from .experts import PassStore
from .files import write_json
from .metrics import answers_match
from .prompts import direct_prompt, reasoning_prompt
from .relabel import REVIEWS, embed, relabel, relabel_needs, resolve_embedder
from .sample import MC, Sample
from .selection import MEASURES, response_entropy, select_by_entropy, supporting_entropy
from .shards import Shard

CLEAN, SELECTED, DROPPED, SKIPPED = "clean", "selected", "dropped", "skipped"
CHECKER_NAMES = (*CHECKERS, "llm")
ENTROPY_FROM = ("context", "review", "experts")
STRATEGIES = ("robustft", "noise_aware")
EMBEDDERS = ("auto", "minilm", "tfidf", "llm")  # or any sentence-transformers id or folder
# The paper's ablations (Table 3) as changes to a config (see `DenoiseConfig.ablation`).
ABLATIONS = {
    "wo_selection": {"beta": 1.0},
    "wo_checker": {"checker": "reasoning"},
    "wo_reviewer": {"review": "none"},
    "wo_cer": {"cer": False},
    "wo_rel": {"checker": "direct", "review": "none", "entropy_from": "context"},
}


class ConfigError(ValueError):
    """A bad `DenoiseConfig` value; `field` names the setting."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _setting(default, help: str, choices=None, aliases=()):
    """A config field with what its command-line flag needs (`DenoiseConfig.add_arguments`)."""
    return field(default=default, metadata={"help": help, "choices": choices, "aliases": tuple(aliases)})


@dataclass(frozen=True)
class DenoiseConfig:
    """Every setting of a denoising run (saved as ``config.json`` with the run; each is also a
    flag of `robustft denoise`, named after the field).

    The defaults are the paper's except where marked *ours*: the review (``"confidence"``;
    the paper's review agent is ``"agent"``), the entropy that ranks the relabels
    (``"experts"``; the paper's is the CER answer's, ``"context"``) and the reasoning budget
    (`max_new_tokens`, which the paper does not state). `DenoiseConfig.paper()` gives the
    paper's choices throughout.

    Attributes:
        checker: "agree" (the paper's rule: clean when both experts agree with the label),
            "either" (clean when at least one agrees), "llm" (the paper's Y/N prompt), or one
            expert alone, "reasoning" or "direct" (the ablations w/o Checker and w/o REL).
        k: clean worked examples retrieved per noisy sample (the paper: 3).
        embedder: retrieval embeddings: "auto", "minilm", "tfidf", "llm", or a
            sentence-transformers id/folder (see `robustft.relabel.embed`).
        review: how the CER and reasoning answers become the new label: "agent" (the paper's
            review agent, an LLM prompt), "confidence" (ours, the default: agreement stands,
            else the surer expert; `relabel.review_by_confidence`), or "none" (the CER
            answer).
        beta: fraction of the relabeled samples kept, lowest entropy first (the paper: 0.5).
        entropy: "nll" (the paper's response entropy, the mean token NLL), "shannon" or
            "options" (see `robustft.selection`).
        entropy_from: whose answer's entropy ranks the relabels: "context" (the paper: the
            CER answer under the CER prompt), "review" (the new label under the review
            agent's prompt; the CER answer's when no agent ran), or "experts" (ours, the
            default: the new label under the experts that gave it,
            `selection.supporting_entropy`).
        reasoning_paths: 1 (the paper): the reasoning-enhanced expert writes one greedy
            response. More: it samples that many responses and answers by majority vote, its
            confidence being the vote's share (self-consistency, an option of ours;
            `robustft.detect.run_reasoning_expert`). On the offline benchmark 8 paths raised
            the training labels' accuracy on seeds 0-2 but not on held-out seeds 3-5, so it
            is off by default (`results/self-consistency-8-paths/`).
        temperature: the sampling temperature of those paths (used when reasoning_paths > 1).
        max_new_tokens: generation budget of the reasoning expert and of short answers (ours:
            the paper does not state one). 256: the smallest budget whose parse rate on real
            SmolLM2-135M-Instruct responses (ARC, FPB, PubMedQA) was within 1 point of the
            best measured: 0.80 at 256 and 512, 0.77 at 128 and 0.76 at 64, which cut 21 % and
            56 % of the ARC responses before their end (``results/real-smollm2/parse-rate.md``).
            A response that ends sooner costs nothing more.
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

    checker: str = _setting("agree", "noise detection rule", CHECKER_NAMES)
    k: int = _setting(3, "worked examples retrieved per noisy sample")
    embedder: str = _setting("auto", f"retrieval embeddings: {', '.join(EMBEDDERS)}, or a sentence-transformers "
                                     "id or folder")
    review: str = _setting("confidence", "how the CER and reasoning answers become the label (ours: confidence; "
                                         "the paper's: agent)", REVIEWS)
    beta: float = _setting(0.5, "fraction of the relabels kept, lowest entropy first")
    entropy: str = _setting("nll", "the entropy that ranks relabels (nll: the paper's mean token NLL)", MEASURES)
    entropy_from: str = _setting("experts", "whose answer's entropy ranks the relabels (ours: experts; the paper's: "
                                            "context)", ENTROPY_FROM)
    reasoning_paths: int = _setting(1, "reasoning responses sampled per question, answer by majority vote "
                                       "(self-consistency; 1: one greedy response, the paper's)", aliases=("--paths",))
    temperature: float = _setting(0.7, "sampling temperature of those responses (with --reasoning-paths > 1)")
    max_new_tokens: int = _setting(256, "generation budget of the reasoning expert and of short answers")
    batch_size: int = _setting(64, "samples per stored batch and forward pass")
    skip_long: bool = _setting(False, "leave out samples too long for the model's context (else: stop with an "
                                      "error naming the first)")
    strategy: str = _setting("robustft", "robustft (the paper's chain) or noise_aware (ours: keep, relabel or flag "
                                         "each label by its posterior)", STRATEGIES)
    cer: bool = _setting(True, "retrieve worked examples for relabeling (--no-cer: the ablation w/o CER)")

    def __post_init__(self):
        def bad(name, rule):
            raise ConfigError(name, f"{name} must be {rule}, got {getattr(self, name)!r}")

        for name in ("checker", "review", "entropy", "entropy_from", "strategy"):
            choices = CONFIG_FIELDS[name].metadata["choices"]
            if getattr(self, name) not in choices:
                bad(name, f"one of {list(choices)}")
        if self.k < 1:
            bad("k", ">= 1")
        if not 0.0 <= self.beta <= 1.0:
            bad("beta", "in [0, 1]")
        if self.reasoning_paths < 1:
            bad("reasoning_paths", ">= 1")
        if not (self.temperature > 0 and np.isfinite(self.temperature)):
            bad("temperature", "finite and > 0")
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                bad(name, ">= 1")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field, named after it (``--entropy-from``; booleans as ``--cer`` /
        ``--no-cer``), with the field's default, choices and help."""
        for f in dataclasses.fields(cls):
            flags = ["--" + f.name.replace("_", "-"), *f.metadata["aliases"]]
            help_ = f.metadata["help"] + " (default: %(default)s)"
            if isinstance(f.default, bool):
                parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                    help=help_)
            else:
                parser.add_argument(*flags, dest=f.name, type=type(f.default), default=f.default,
                                    choices=f.metadata["choices"], help=help_)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DenoiseConfig":
        """The config the flags of `add_arguments` give; a ValueError names the flag of a
        bad value."""
        try:
            return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
        except ConfigError as e:
            f = CONFIG_FIELDS[e.field]
            flags = "/".join(["--" + f.name.replace("_", "-"), *f.metadata["aliases"]])
            raise ValueError(f"{flags} {getattr(args, f.name)}: {e}") from None

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


CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(DenoiseConfig)}


@dataclass
class DenoiseResult:
    """The output of `denoise`.

    Attributes:
        samples: the training set — clean samples with their labels and selected samples
            with their new labels — in input order.
        provenance: one dict per *input* sample: id, given label, each expert's answer,
            noisy flag, retrieved neighbours (ids), CER and review answers, entropy, the
            stage it ended in ("clean", "selected", "dropped"; "skipped" when too long for
            the model), its training label, and ``unread``: the experts whose response
            could not be read (absent when every answer was read).
        config: the `DenoiseConfig` used.
        report: `detection_report` when every sample's true label is known, else None.
        stats: per expert pass (direct, reasoning, context, review) the seconds it computed
            (``seconds``), the share of its responses that give an answer themselves
            (``parse_rate``) and how many answers the answer step gave instead
            (``answer_step``, `robustft.detect.answer_step`);
            the run's ``warnings`` (`robustft.diagnose`: dicts with ``check`` and
            ``message``); the noise-aware strategy's estimated ``noise_rate``; the expert
            batches computed and reused.
    """

    samples: list[Sample]
    provenance: list[dict]
    config: DenoiseConfig
    report: dict | None = None
    stats: dict = field(default_factory=dict)


def denoise(samples: Sequence[Sample], lm: Backend, config: DenoiseConfig | None = None, *,
            out: str | os.PathLike | None = None, force: bool = False, progress: bool = True,
            on_batch=None, shard: Shard | None = None) -> DenoiseResult:
    """Run RobustFT's denoising chain on a noisy SFT set.

    Args:
        samples: the noisy training samples (multiple choice and/or short answer).
        lm: the model that plays every expert.
        config: the settings (default `DenoiseConfig()`: the paper's, but for the choices
            its docstring marks as ours; `DenoiseConfig.paper()` for the paper's throughout).
        out: a run folder: expert batches are stored there as they finish (a re-run resumes
            and recomputes only what a changed config or input changes) and ``config.json``
            is written. None keeps nothing.
        force: recompute every expert batch even when stored.
        on_batch: called after each computed and stored expert batch, with the count so far
            (tests use it to interrupt a run; needs `out`).
        shard: compute only this `robustft.shards.Shard`'s share of each expert pass and
            gather the other shards' batches from `out` (needs `out`). None: the launcher's
            shard under torchrun / accelerate launch (`Shard.from_env`), else every batch.
            A shard that does not wait raises `robustft.shards.ShardPending` at the first
            pass the other shards have not finished. The result is the same as in one process.

    Returns a `DenoiseResult`.
    """
    config = config or DenoiseConfig()
    samples = list(samples)
    if not samples:
        raise ValueError("no samples to denoise")
    require(lm, *denoise_needs(samples, config), stage=f"denoise ({config.strategy})")
    store = None
    if shard is not None and out is None:
        raise ValueError(f"shard {shard}: a sharded run needs a run folder (out=) where the shards store their batches")
    if out is not None:
        store = PassStore(out, force=force, on_batch=on_batch, shard=shard)
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


def denoise_needs(samples: Sequence[Sample], config: DenoiseConfig) -> list[str]:
    """The backend capabilities a `denoise` run of `config` over `samples` needs
    (`robustft.backends.require`, called before any work): token counts (which samples fit
    the context), the detection experts' (`detect.detection_needs`), the LLM checker's
    option scores, relabeling's (`relabel.relabel_needs`: the "llm" embedder needs hidden
    states) and, to rank relabels by Shannon entropy, exact token entropies."""
    needs = ["count_tokens", *detection_needs(samples)]
    if config.strategy == "robustft":
        if config.checker == "llm":
            needs.append("score_options")
        needs += relabel_needs(samples, k=config.k if config.cer else 0, embedder=config.embedder)
        if config.entropy == "shannon":
            needs.append("token_entropy")
    return list(dict.fromkeys(needs))


def _chain(samples: list[Sample], lm: Backend, config: DenoiseConfig, store, progress):
    """detect → relabel → select over samples that fit the model: (training set, provenance, stats)."""
    kw = dict(batch_size=config.batch_size, store=store, progress=progress)
    direct, reasoning = run_detection_experts(lm, samples, max_new_tokens=config.max_new_tokens,
                                              paths=config.reasoning_paths, temperature=config.temperature, **kw)
    labels = [s.answer for s in samples]
    tasks = [s.task for s in samples]
    # The backend's own limits first (approximate option scores), then the experts' checks.
    found = backend_warnings(lm) + _check_experts(samples, direct, reasoning, config.max_new_tokens)
    if config.strategy == "noise_aware":
        kept, provenance, stats = _noise_aware(samples, direct, reasoning)
        passes = {"direct": direct, "reasoning": reasoning}
        relabels = [(p["label"], s.task) for p, s in zip(provenance, samples) if p["stage"] == SELECTED]
        found += diagnose.collapse([y for y, _ in relabels], [t for _, t in relabels])
        return kept, _mark_unread(provenance, passes, range(len(samples))), _stats(stats, passes, found)
    if config.checker == "llm":
        noisy = llm_checker(lm, samples, direct.answers, reasoning.answers, **kw)
    else:
        noisy = detect_noise(labels, direct.answers, reasoning.answers, tasks, config.checker)
    found += diagnose.few_clean(int((~noisy).sum()), config.k if config.cer else 0, int(noisy.sum()))

    embeddings = embed(samples, config.embedder, lm, config.batch_size) if noisy.any() and config.cer else None
    rel = relabel(lm, samples, noisy, reasoning, k=config.k if config.cer else 0, review=config.review, embeddings=embeddings,
                  max_new_tokens=config.max_new_tokens, **kw)
    if config.entropy_from == "review" and rel.review is not None:
        entropy = response_entropy(rel.review, rel.labels, config.entropy)
    elif config.entropy_from == "experts":
        entropy = supporting_entropy(rel.labels, rel.context, response_entropy(rel.context, rel.labels, config.entropy),
                                     [reasoning.answers[i] for i in rel.indices],
                                     reasoning.answer_uncertainty[rel.indices],
                                     [tasks[i] for i in rel.indices])
    else:
        entropy = response_entropy(rel.context, rel.context.answers, config.entropy)
    keep = select_by_entropy(entropy, config.beta)
    for name in ("context", "review"):
        found += diagnose.unreadable(name, getattr(rel, name), config.max_new_tokens)
    found += diagnose.collapse([y for y, k in zip(rel.labels, keep) if k], [tasks[i] for i in rel.indices[keep]])

    provenance = []
    pos = {int(i): j for j, i in enumerate(rel.indices)}
    for i, s in enumerate(samples):
        row = {"id": s.id, "given": s.answer, "direct": direct.answers[i], "reasoning": reasoning.answers[i],
               "reasoning_text": reasoning.texts[i], "noisy": bool(noisy[i])}
        if reasoning.agreement is not None:
            row["reasoning_agreement"] = _num(reasoning.agreement[i])
        if reasoning.extracted and reasoning.extracted[i]:
            row["reasoning_extracted"] = True  # the answer step gave it, not the response's text
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
    provenance = _mark_unread(provenance, {"direct": direct, "reasoning": reasoning}, range(len(samples)))
    provenance = _mark_unread(provenance, {"context": rel.context, "review": rel.review}, rel.indices)
    return kept, provenance, _stats({}, passes, found)


def _check_experts(samples, direct, reasoning, budget: int) -> list[dict]:
    """The model check of both detection experts before the chain goes on, and their parse
    rates (`robustft.diagnose`)."""
    labels, tasks = [s.answer for s in samples], [s.task for s in samples]
    options = [len(s.options) for s in samples]
    found = []
    for name, out in (("direct", direct), ("reasoning", reasoning)):
        found += diagnose.unreadable(name, out, budget)
    return found + diagnose.model_check(labels, direct.answers, reasoning.answers, tasks, options)


def _mark_unread(provenance: list[dict], passes: dict, rows) -> list[dict]:
    """Add to each provenance row the experts that were asked but whose answer could not be
    read (``unread``)."""
    rows = list(rows)
    for name, out in passes.items():
        for j in diagnose.unread(out) if out is not None else ():
            provenance[int(rows[j])].setdefault("unread", []).append(name)
    return provenance


def _stats(stats: dict, passes: dict, found: list[dict]) -> dict:
    """Seconds and parse rate per expert pass, and the run's warnings (each reported once)."""
    diagnose.report(found)
    return {**stats, "seconds": {k: round(v.seconds, 2) for k, v in passes.items() if v is not None},
            "parse_rate": {k: diagnose.parse_rate(v) for k, v in passes.items() if v is not None},
            "answer_step": {k: len(diagnose.extracted(v)) for k, v in passes.items() if v is not None and v.extracted},
            "warnings": found}


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
    stats = {}
    if len(rows):
        sub = [samples[i] for i in rows]
        post = label_posterior([letter_index(s.answer) for s in sub], direct.probs[rows],
                               [letter_index(reasoning.answers[i]) if reasoning.answers[i] else -1 for i in rows],
                               -reasoning.answer_uncertainty[rows], [len(s.options) for s in sub])
        for j, i in enumerate(rows):
            y = letter_index(samples[i].answer)  # beyond the options: never right
            p_given = float(post.posterior[j, y]) if y < len(samples[i].options) else 0.0
            new = letter(int(post.labels[j]))
            provenance[i].update(noisy=bool(post.noisy[j]), posterior_given=p_given, relabel=new,
                                 reliability=float(post.reliability[j]))
            if post.noisy[j]:
                provenance[i].update(stage=SELECTED, label=new)
        stats["noise_rate"] = float(post.noise_rate)
    kept = training_set(samples, provenance)
    return kept, provenance, stats


def too_long(lm: Backend, samples: Sequence[Sample], max_new_tokens: int) -> np.ndarray:
    """[n] bool: the samples the chain cannot ask the model: their direct prompt with room
    for the answer (`LanguageModel.answer_room`), or their reasoning prompt with one
    generated token, does not fit the model's context."""
    direct = lm.fits([direct_prompt(s) for s in samples], lm.answer_room(samples, max_new_tokens))
    reasoning = lm.fits([reasoning_prompt(s) for s in samples], 1)
    return ~(direct & reasoning)


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
