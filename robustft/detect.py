"""Noise detection by multi-expert collaboration (RobustFT, section 3.1).

Two experts answer every training question:

- the **direct expert** (the paper's base LLM): option scoring of the direct prompt;
- the **reasoning-enhanced expert**: step-by-step generation ending in ``Answer: X``.

The **checker** turns their answers and the given label into a flag per sample: *clean* or
*potentially noisy*. The paper's (and the official code's) rule marks a sample clean when
both experts agree with its label. The checker is a pluggable rule: any function
``(labels, direct, reasoning, tasks) -> noisy [n] bool``; the paper's LLM checker (a Y/N
prompt to the model) is `llm_checker`.

`detect_noise` is the pure core over answers given as data; `run_detection_experts` is
the thin wrapper that runs the model.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .experts import ExpertOutputs, PassStore, run_pass
from .metrics import answers_match
from .model import LanguageModel
from .prompts import checker_prompt, direct_prompt, reasoning_prompt
from .sample import MC, Sample

Checker = Callable[[Sequence, Sequence, Sequence, Sequence], np.ndarray]


def agree_checker(labels, direct, reasoning, tasks) -> np.ndarray:
    """The paper's rule: noisy unless *both* experts agree with the label. [n] bool."""
    return np.array([not (answers_match(d, y, t) and answers_match(r, y, t))
                     for y, d, r, t in zip(labels, direct, reasoning, tasks)], dtype=bool)


def either_checker(labels, direct, reasoning, tasks) -> np.ndarray:
    """A looser rule: noisy only when *neither* expert agrees with the label. [n] bool."""
    return np.array([not (answers_match(d, y, t) or answers_match(r, y, t))
                     for y, d, r, t in zip(labels, direct, reasoning, tasks)], dtype=bool)


def reasoning_checker(labels, direct, reasoning, tasks) -> np.ndarray:
    """One expert, no checker (the paper's w/o Checker): noisy where the reasoning-enhanced
    expert disagrees with the label. [n] bool."""
    return np.array([not answers_match(r, y, t) for y, r, t in zip(labels, reasoning, tasks)], dtype=bool)


def direct_checker(labels, direct, reasoning, tasks) -> np.ndarray:
    """The direct expert alone (the paper's w/o REL): noisy where it disagrees with the label. [n] bool."""
    return np.array([not answers_match(d, y, t) for y, d, t in zip(labels, direct, tasks)], dtype=bool)


CHECKERS: dict[str, Checker] = {"agree": agree_checker, "either": either_checker,
                                "reasoning": reasoning_checker, "direct": direct_checker}


def detect_noise(labels: Sequence[str], direct: Sequence[str | None], reasoning: Sequence[str | None],
                 tasks: Sequence[str] | None = None, checker: str | Checker = "agree") -> np.ndarray:
    """Flag potentially noisy labels from the two experts' answers.

    Args:
        labels: the n given labels (option letters, or answer texts for short answers).
        direct: the direct expert's n answers (None: no answer).
        reasoning: the reasoning-enhanced expert's n answers.
        tasks: n task types ("mc" compares letters, "short" fuzzy-matches normalised text);
            default all "mc".
        checker: "agree" (the paper's rule), "either", or a function
            ``(labels, direct, reasoning, tasks) -> [n] bool``.

    Returns:
        [n] bool, True where the sample is potentially noisy.
    """
    n = len(labels)
    if not len(direct) == len(reasoning) == n:
        raise ValueError(f"{n} labels, {len(direct)} direct and {len(reasoning)} reasoning answers")
    tasks = [MC] * n if tasks is None else list(tasks)
    rule = CHECKERS.get(checker) if isinstance(checker, str) else checker
    if rule is None:
        raise ValueError(f"unknown checker {checker!r}; use one of {sorted(CHECKERS)} or 'llm', or a function")
    flags = np.asarray(rule(list(labels), list(direct), list(reasoning), tasks), dtype=bool)
    if flags.shape != (n,):
        raise ValueError(f"the checker returned shape {flags.shape}, expected ({n},)")
    return flags


def run_direct_expert(lm: LanguageModel, samples: Sequence[Sample], *, max_new_tokens: int = 64,
                      batch_size: int = 64, store: PassStore | None = None, progress: bool = True) -> ExpertOutputs:
    """The direct expert alone (option scoring; short answers by generation). One call for
    every user of this pass, so the baselines share its stored batches with `denoise`."""
    return run_pass("direct", lm, samples, [direct_prompt(s) for s in samples],
                    max_new_tokens=max_new_tokens, batch_size=batch_size, store=store, progress=progress)


def run_detection_experts(lm: LanguageModel, samples: Sequence[Sample], *, max_new_tokens: int = 64,
                          batch_size: int = 64, store: PassStore | None = None,
                          progress: bool = True) -> tuple[ExpertOutputs, ExpertOutputs]:
    """The direct and the reasoning-enhanced expert over `samples`: (direct, reasoning)."""
    direct = run_direct_expert(lm, samples, max_new_tokens=max_new_tokens, batch_size=batch_size, store=store,
                               progress=progress)
    reasoning = run_pass("reasoning", lm, samples, [reasoning_prompt(s) for s in samples], generate_all=True,
                         max_new_tokens=max_new_tokens, batch_size=batch_size, store=store, progress=progress)
    return direct, reasoning


def llm_checker(lm: LanguageModel, samples: Sequence[Sample], direct: Sequence, reasoning: Sequence, *,
                batch_size: int = 64, store: PassStore | None = None, progress: bool = True) -> np.ndarray:
    """The paper's LLM checker: the model reads the label and both experts' answers and says
    whether the label is noisy ("Yes"/"No", scored as two options). [n] bool."""
    judged = [Sample(id=s.id, question=checker_prompt(s, d or "none", r or "none"), options=("Yes", "No"),
                     answer="A") for s, d, r in zip(samples, direct, reasoning)]
    # The verdict is scored as the words themselves ("Answer: Yes" / "Answer: No"): no
    # lettered options are shown, so scoring letters would mean nothing.
    out = run_pass("checker", lm, judged, [j.question for j in judged], by="text",
                   batch_size=batch_size, store=store, progress=progress)
    lp = out.logprobs
    return lp[:, 0] > lp[:, 1]
