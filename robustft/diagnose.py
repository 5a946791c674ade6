"""Degenerate runs: the checks that say when a denoising run cannot be trusted, and why.

A weak model can make the chain worse than doing nothing, silently: its reasoning replies are
cut off before their ``Answer:`` line, so nothing is read and every label is flagged; the
clean pool is then empty and CER runs without examples; a letter bias turns every relabel
into "C". Each check here is a pure function over the passes' outputs that returns warnings
as plain dicts ``{"check": name, "message": text}``; `robustft.denoise` runs them, lists them
in ``DenoiseResult.stats["warnings"]`` (and the CLI in ``summary.json``), and reports each
once as a `DegenerateRunWarning`; ``robustft denoise --strict`` exits non-zero on any.

- ``unreadable``: more than `UNREADABLE` of a generated pass's samples are left without an
  answer (neither read from the response nor given by the answer step).
- ``no_signal``: before the chain, an expert agrees with the given labels no more than its
  own answer distribution would by chance, and the two experts agree with each other no
  more than chance either (the *model check*, `model_check`).
- ``answer_bias``: an expert gives one answer to most multiple-choice questions.
- ``few_clean``: fewer clean samples than the k worked examples CER asks for.
- ``collapse``: the kept relabels are nearly all one answer.
- ``nothing_kept``: the denoised training set is empty, so there is nothing to fine-tune on
  (`nothing_kept`; `robustft.experiments.Experiment` then scores the base model).
- ``approximate_scores``: the backend scores options from top-k next-token log-probs, not
  from each option's whole continuation (a server that refuses ``echo``;
  `robustft.backends.backend_warnings`).
"""
from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import Sequence

import numpy as np

from .experts import ExpertOutputs
from .prompts import states_answer
from .sample import MC

UNREADABLE = 0.05  # largest share of unreadable answers a generated pass may have
BIAS = 0.5  # one answer given for more than this share (and twice its share in the labels): a bias
COLLAPSE = 0.8  # kept relabels with one answer above this share (of at least COLLAPSE_MIN) collapse
COLLAPSE_MIN = 8
Z_SIGNAL = 2.0  # agreement with the labels must exceed chance by this many standard errors
KAPPA = 0.2  # ... unless the experts agree with each other beyond chance by this Cohen's kappa
MIN_CHECKED = 8  # fewer answered samples than this: too few to check


class DegenerateRunWarning(UserWarning):
    """A denoising run whose experts or stages carry no usable signal (see the module)."""


def _warning(check: str, message: str) -> dict:
    return {"check": check, "message": message}


def asked(outputs: ExpertOutputs) -> list[int]:
    """The rows a pass asked the model about: scored ones, and generated ones (with or
    without a readable answer); not the rows it skipped (a review too long for the model)."""
    finished = outputs.finished or [None] * len(outputs.answers)
    return [i for i, (a, f) in enumerate(zip(outputs.answers, finished)) if a is not None or f is not None]


def unread(outputs: ExpertOutputs) -> list[int]:
    """The asked rows whose response gives no answer the reader can find: no option, and no
    answer statement either. (A stated answer that names none of the options — a model's
    guess outside them — is an answer, just not one of the labels.)"""
    return [i for i in asked(outputs) if outputs.answers[i] is None and not states_answer(outputs.texts[i])]


def extracted(outputs: ExpertOutputs) -> list[int]:
    """The rows whose answer the answer step gave (`robustft.detect.answer_step`), not the
    response's text."""
    return [i for i, e in enumerate(outputs.extracted or []) if e]


def parse_rate(outputs: ExpertOutputs | None) -> float | None:
    """The share of a pass's asked samples whose response itself gives an answer (read or
    stated; not `unread`, and not given by the answer step); None when it asked none."""
    rows = asked(outputs) if outputs is not None else []
    if not rows:
        return None
    return 1 - (len(unread(outputs)) + len(extracted(outputs))) / len(rows)


def unreadable(name: str, outputs: ExpertOutputs | None, budget: int) -> list[dict]:
    """A warning when the chain is left without an answer for more than `UNREADABLE` of a
    generated pass's samples (after the answer step, where one ran), saying how many
    responses the generation budget cut off."""
    n = len(asked(outputs)) if outputs is not None else 0
    missing = unread(outputs) if n else []
    if not n or len(missing) / n <= UNREADABLE:
        return []
    rate = 1 - len(missing) / n
    cut = sum(1 for i in missing if outputs.finished is not None and outputs.finished[i] is False)
    why = (f"{cut} of them {'was' if cut == 1 else 'were'} cut off by the {budget}-token budget (raise "
           "max_new_tokens)" if cut else "the replies name no option the reader recognises")
    return [_warning("unreadable", f"the {name} expert's answer could not be read for {len(missing)} of {n} samples "
                                   f"(parse rate {rate:.0%}): {why}; an unread answer counts as disagreeing with the "
                                   "label, so these samples are flagged as noisy")]


def chance_agreement(a: Sequence, b: Sequence) -> tuple[float, float, float]:
    """How often two sequences of answers agree, against chance: (observed agreement, the
    agreement their own answer distributions give by chance ``Σ_k p_a(k) p_b(k)``, and the
    standard error of an observed agreement at that chance level)."""
    n = len(a)
    observed = float(np.mean([x == y for x, y in zip(a, b)]))
    pa, pb = Counter(a), Counter(b)
    chance = sum(pa[k] * pb[k] for k in pa) / n**2
    return observed, chance, math.sqrt(max(chance * (1 - chance), 1e-12) / n)


def model_check(labels: Sequence[str], direct: Sequence[str | None], reasoning: Sequence[str | None],
                tasks: Sequence[str], n_options: Sequence[int]) -> list[dict]:
    """Before the chain: are the experts better than the label prior?

    For each expert, over the multiple-choice samples it answered, its agreement with the
    given labels against the agreement its own answer distribution would have by chance
    (``Σ_k p(answer = k) p(label = k)``). Label noise weakens this test (with K options and
    uniform flips the labels carry no signal at a rate of (K - 1) / K, and little at 70 %
    with K = 4), so an expert that fails it is reported as ``no_signal`` only when the two
    experts also agree with each other no more than chance (Cohen's κ below `KAPPA`): two
    experts that know something agree on the questions they know, whatever the labels say.
    Also ``answer_bias`` when one answer covers more than `BIAS` of an expert's answers and
    twice both the uniform share and the given labels' share of that answer (so a skew the
    data has is not taken for the model's).
    """
    mc = [i for i, t in enumerate(tasks) if t == MC]
    both = [i for i in mc if direct[i] is not None and reasoning[i] is not None]
    kappa = None
    if len(both) >= MIN_CHECKED:
        observed, chance, _ = chance_agreement([direct[i] for i in both], [reasoning[i] for i in both])
        kappa = (observed - chance) / (1 - chance) if chance < 1 else 0.0
    out = []
    for name, answers in (("direct", direct), ("reasoning", reasoning)):
        rows = [i for i in mc if answers[i] is not None]
        if len(rows) < MIN_CHECKED:
            continue
        got = [answers[i] for i in rows]
        agree, chance, se = chance_agreement(got, [labels[i] for i in rows])
        if agree < chance + Z_SIGNAL * se and (kappa is None or kappa < KAPPA):
            between = ("the two experts rarely both answer" if kappa is None
                       else f"the two experts agree with each other no more than chance (κ = {kappa:.2f})")
            out.append(_warning("no_signal", f"the {name} expert agrees with the given labels on {agree:.0%} of "
                                             f"{len(rows)} samples, within {Z_SIGNAL:g} standard errors of the "
                                             f"{chance:.0%} its own answer distribution gives by chance, and {between}: "
                                             "its answers are no better than the label prior, so its flags are not "
                                             "evidence of noise"))
        top, count = Counter(got).most_common(1)[0]
        share = count / len(rows)
        uniform = float(np.mean([1 / n_options[i] for i in rows]))
        given = sum(labels[i] == top for i in rows) / len(rows)  # the labels' share of that answer
        if share > max(BIAS, 2 * max(uniform, given)):
            out.append(_warning("answer_bias", f"the {name} expert answered {top} for {count} of {len(rows)} "
                                               f"questions ({share:.0%}, where {given:.0%} of the given labels "
                                               f"are {top} and one option of {round(1 / uniform)} is "
                                               f"{uniform:.0%}): a bias towards one answer, not knowledge"))
    return out


def few_clean(n_clean: int, k: int, n_flagged: int) -> list[dict]:
    """A warning when CER cannot have its k worked examples, saying what it did instead."""
    if n_flagged == 0 or k == 0 or n_clean >= k:
        return []
    instead = ("asked each flagged question alone, with no worked example" if n_clean == 0
               else f"used the {n_clean} clean sample{'s' if n_clean > 1 else ''} there are as examples")
    return [_warning("few_clean", f"only {n_clean} sample{'s' if n_clean != 1 else ''} passed the checker as clean, "
                                  f"fewer than the k={k} worked examples context-enhanced relabeling asks for: it "
                                  f"{instead}")]


def collapse(kept_relabels: Sequence[str], tasks: Sequence[str]) -> list[dict]:
    """A warning when the kept multiple-choice relabels are nearly all one answer."""
    mc = [y for y, t in zip(kept_relabels, tasks) if t == MC and y is not None]
    if len(mc) < COLLAPSE_MIN:
        return []
    top, count = Counter(mc).most_common(1)[0]
    if count / len(mc) < COLLAPSE:
        return []
    return [_warning("collapse", f"{count} of the {len(mc)} kept relabels are {top} ({count / len(mc):.0%}): the "
                                 "relabels collapse onto one answer, which is a model's bias rather than the "
                                 "truth")]


def nothing_kept(method: str, n_train: int) -> list[dict]:
    """``nothing_kept`` when `method` kept none of its `n_train` training samples."""
    return [_warning("nothing_kept", f"{method} kept none of the {n_train} training samples: there is "
                                     "nothing to fine-tune on, so its row is the base model's")]


def report(found: Sequence[dict]) -> None:
    """Report each warning once, as a `DegenerateRunWarning` (printed by Python's warnings)."""
    for w in found:
        warnings.warn(f"{w['check']}: {w['message']}", DegenerateRunWarning, stacklevel=3)
