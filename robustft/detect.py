"""Noise detection by multi-expert collaboration (RobustFT, section 3.2).

Two experts answer every training question:

- the **direct expert** (the paper's base LLM): option scoring of the direct prompt;
- the **reasoning-enhanced expert**: step-by-step generation ending in ``Answer: X``. As
  in the paper it writes one (greedy) response. With ``paths > 1`` (an option of this
  project, off by default; `DenoiseConfig.reasoning_paths`) the expert is
  *self-consistent* (Wang et al., 2023, arXiv 2203.11171): it samples that many responses
  and answers by majority vote, and the share of responses behind the answer is its
  confidence (`self_consistency`). A greedy chain of steps that copies a wrong name into
  its second hop answers wrongly however sure each token is; a vote over several chains
  can outweigh it.

The **checker** turns their answers and the given label into a flag per sample: *clean* or
*potentially noisy*. The paper's (and the official code's) rule marks a sample clean when
both experts agree with its label. The checker is a pluggable rule: any function
``(labels, direct, reasoning, tasks) -> noisy [n] bool``; the paper's LLM checker (a Y/N
prompt to the model) is `llm_checker`.

`detect_noise` is the pure core over answers given as data; `run_detection_experts` is
the thin wrapper that runs the model.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from .backends import Backend, require
from .experts import ExpertOutputs, PassStore, run_pass
from .metrics import answers_match
from .progress import progress_bar
from .prompts import checker_prompt, direct_prompt, reasoning_prompt, states_answer
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


def self_consistency(path_answers: Sequence[Sequence], tasks: Sequence[str] | None = None,
                     prefer: Sequence | None = None) -> tuple[list, np.ndarray, np.ndarray]:
    """Majority vote over several sampled answers per sample (self-consistency).

    Args:
        path_answers: P sequences (one per sampled path) of n answers each; None where a
            path gave no answer.
        tasks: n task types; answers count as the same when `metrics.answers_match` says so
            (short answers: normalised fuzzy match). Default: multiple choice.
        prefer: n answers that break ties when they are among the tied (e.g. the greedy
            response's); otherwise the tie goes to the answer reached first.

    Returns:
        A tuple (answers, agreement, source): the n voted answers (None where no path
        answered); [n] float64, the share of the P paths that gave the voted answer (nan
        where none answered); [n] int, the first path that gave it (-1 where none did).
    """
    paths = [list(p) for p in path_answers]
    if not paths:
        raise ValueError("self_consistency needs at least one path")
    n = len(paths[0])
    if any(len(p) != n for p in paths):
        raise ValueError(f"every path must answer all {n} samples, got lengths {[len(p) for p in paths]}")
    tasks = [MC] * n if tasks is None else list(tasks)
    answers, agreement, source = [], np.full(n, np.nan), np.full(n, -1, dtype=np.int64)
    for i in range(n):
        groups: list[list] = []  # [answer, count, first path]
        for j, p in enumerate(paths):
            a = p[i]
            if a is None:
                continue
            for g in groups:
                if answers_match(a, g[0], tasks[i]):
                    g[1] += 1
                    break
            else:
                groups.append([a, 1, j])
        if not groups:
            answers.append(None)
            continue
        top = max(g[1] for g in groups)
        tied = [g for g in groups if g[1] == top]
        pick = tied[0]
        if prefer is not None and prefer[i] is not None:
            pick = next((g for g in tied if answers_match(prefer[i], g[0], tasks[i])), pick)
        answers.append(pick[0])
        agreement[i], source[i] = top / len(paths), pick[2]
    return answers, agreement, source


def run_reasoning_expert(lm: Backend, samples: Sequence[Sample], *, paths: int = 1, temperature: float = 0.7,
                         max_new_tokens: int = 64, batch_size: int = 64, store: PassStore | None = None,
                         progress: bool = True) -> ExpertOutputs:
    """The reasoning-enhanced expert: one greedy step-by-step response per sample, or, with
    ``paths > 1``, `paths` responses sampled at `temperature` and a majority vote
    (`self_consistency`; ties go to the greedy response's answer, which is computed too).

    With several paths the returned pass holds the voted answers, their `agreement`, and the
    text and token statistics of one response that gave the voted answer (the greedy one
    when it did). Every path is stored as its own pass, so a re-run resumes mid-way.
    """
    prompts = [reasoning_prompt(s) for s in samples]
    kw = dict(generate_all=True, max_new_tokens=max_new_tokens, batch_size=batch_size, store=store)
    step = dict(batch_size=batch_size, store=store, progress=False)
    greedy = answer_step(lm, samples, prompts, run_pass("reasoning", lm, samples, prompts, progress=progress, **kw),
                         **step)
    if paths <= 1:
        return greedy
    sampled = [answer_step(lm, samples, prompts, run_pass("reasoning", lm, samples, prompts, temperature=temperature,
                                                          seed=path, progress=False, **kw), **step)
               for path in progress_bar(range(paths), desc=f"reasoning expert, {paths} sampled paths",
                                        enabled=progress)]
    answers, agreement, source = self_consistency([p.answers for p in sampled], [s.task for s in samples],
                                                  prefer=greedy.answers)
    names = ("response_entropy", "token_entropy", "max_token_nll")
    texts, stats = list(greedy.texts), {k: getattr(greedy, k).copy() for k in names}
    extracted = list(greedy.extracted or [False] * len(samples))
    for i, (a, j) in enumerate(zip(answers, source)):
        if j < 0 or answers_match(greedy.answers[i], a, samples[i].task):
            continue  # the greedy response gave the voted answer (or nothing was voted)
        texts[i], extracted[i] = sampled[j].texts[i], sampled[j].extracted[i]
        for k in stats:
            stats[k][i] = getattr(sampled[j], k)[i]
    return dataclasses.replace(greedy, answers=answers, texts=texts, agreement=agreement, extracted=extracted,
                               seconds=greedy.seconds + sum(p.seconds for p in sampled), **stats)


def answer_step(lm: Backend, samples: Sequence[Sample], prompts: Sequence[str], outputs: ExpertOutputs, *,
                batch_size: int = 64, store: PassStore | None = None, progress: bool = False) -> ExpertOutputs:
    """The second stage of zero-shot chain-of-thought prompting (Kojima et al., 2022): where a
    multiple-choice response states no answer (cut off by the budget, or never committing),
    the model completes ``Answer:`` after its own response, scored over the options
    (`score_options` with ``responses``). A response that states an answer, readable or
    not, keeps it.

    Returns `outputs` with those answers filled in and ``extracted`` [n] marking them; their
    `max_token_nll` becomes the larger of the response's and the chosen answer's NLL (the
    answer is now the response's last step).
    """
    rows = [i for i, s in enumerate(samples) if s.task == MC and outputs.answers[i] is None
            and not states_answer(outputs.texts[i])]
    extracted = [False] * len(samples)
    if not rows:
        return dataclasses.replace(outputs, extracted=extracted)
    picked = run_pass("reasoning answer", lm, [samples[i] for i in rows], [prompts[i] for i in rows],
                      responses=[outputs.texts[i] for i in rows], batch_size=batch_size, store=store,
                      progress=progress)
    answers, worst = list(outputs.answers), outputs.max_token_nll.copy()
    for j, i in enumerate(rows):
        answers[i], extracted[i] = picked.answers[j], True
        worst[i] = np.fmax(worst[i], picked.response_entropy[j])
    return dataclasses.replace(outputs, answers=answers, extracted=extracted, max_token_nll=worst,
                               seconds=outputs.seconds + picked.seconds)


def run_direct_expert(lm: Backend, samples: Sequence[Sample], *, max_new_tokens: int = 64,
                      batch_size: int = 64, store: PassStore | None = None, progress: bool = True) -> ExpertOutputs:
    """The direct expert alone (option scoring; short answers by generation). One call for
    every user of this pass, so the baselines share its stored batches with `denoise`."""
    return run_pass("direct", lm, samples, [direct_prompt(s) for s in samples],
                    max_new_tokens=max_new_tokens, batch_size=batch_size, store=store, progress=progress)


def detection_needs(samples: Sequence[Sample]) -> list[str]:
    """The backend capabilities the two detection experts need (`robustft.backends.require`):
    generation (the reasoning expert writes every sample's response) and, with multiple
    choice, option scores (the direct expert, and the answer step after a response)."""
    return [*(["score_options"] if any(s.task == MC for s in samples) else []), "generate"]


def run_detection_experts(lm: Backend, samples: Sequence[Sample], *, max_new_tokens: int = 64,
                          batch_size: int = 64, paths: int = 1, temperature: float = 0.7,
                          store: PassStore | None = None, progress: bool = True) -> tuple[ExpertOutputs, ExpertOutputs]:
    """The direct and the reasoning-enhanced expert over `samples`: (direct, reasoning).
    `paths` and `temperature` go to `run_reasoning_expert` (1: the paper's single response)."""
    require(lm, *detection_needs(samples), stage="noise detection")
    direct = run_direct_expert(lm, samples, max_new_tokens=max_new_tokens, batch_size=batch_size, store=store,
                               progress=progress)
    reasoning = run_reasoning_expert(lm, samples, paths=paths, temperature=temperature, max_new_tokens=max_new_tokens,
                                     batch_size=batch_size, store=store, progress=progress)
    return direct, reasoning


def llm_checker(lm: Backend, samples: Sequence[Sample], direct: Sequence, reasoning: Sequence, *,
                batch_size: int = 64, store: PassStore | None = None, progress: bool = True) -> np.ndarray:
    """The paper's LLM checker: the model reads the label and both experts' answers and says
    whether the label is noisy ("Yes"/"No", scored as two options). [n] bool."""
    judged = [Sample(id=s.id, question=checker_prompt(s, d or "none", r or "none"), options=("Yes", "No"),
                     answer="A") for s, d, r in zip(samples, direct, reasoning)]
    # The verdict is scored as the words themselves ("Answer: Yes" / "Answer: No"): no
    # lettered options are shown, so scoring letters would mean nothing.
    out = run_pass("checker", lm, judged, [j.question for j in judged], by="text",
                   batch_size=batch_size, store=store, progress=progress)
    lp = out.scores.logprobs
    return lp[:, 0] > lp[:, 1]
