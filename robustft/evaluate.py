"""Accuracy of a model on a test set, overall and per category.

Two ways to get a model's answer, both with the inference prompt used in fine-tuning:

- ``method="score"`` (multiple choice): the option with the highest log-likelihood after
  ``Answer:`` (by letter or by option text, `score_options`) — no generation, no parsing;
- ``method="generate"``: greedy generation, then the ``Answer: X`` line is read back
  (`extract_answer`); short answers are matched DROP-style (`metrics.fuzzy_match`).

The scoring of predictions is `metrics.accuracy_report`, which takes predictions from any
source.
"""
from __future__ import annotations

from typing import Callable, Sequence

from .inference import generate, score_options
from .metrics import EvalResult, accuracy_report
from .model import LanguageModel
from .prompts import direct_prompt, extract_answer
from .sample import MC, Sample

METHODS = ("score", "generate")


def evaluate(lm: LanguageModel, samples: Sequence[Sample], *, method: str | None = None,
             by: str | None = None, prompt: Callable[[Sample], str] = direct_prompt,
             batch_size: int = 64, max_new_tokens: int = 64,
             progress: bool = True) -> EvalResult:
    """Accuracy of `lm` on `samples` (gold: each sample's clean answer when known, else its
    given answer).

    Args:
        method: "score" or "generate"; default "score" when every sample is multiple choice,
            "generate" otherwise.
        by: "letter" or "text" for scoring and for the generated answer's form; default
            `lm.answer_by`.
        prompt: builds the prompt text of a sample (default: the vanilla expert's).
        batch_size: sequences per forward pass.
        max_new_tokens: generation budget per answer (method="generate").

    Returns an `EvalResult` (accuracy, per-sample `correct`, `predictions`, `by_category`).
    """
    samples = list(samples)
    if method is None:
        method = "score" if all(s.task == MC for s in samples) else "generate"
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    prompts = [prompt(s) for s in samples]
    if method == "score":
        predictions = score_options(lm, samples, prompts, by=by, batch_size=batch_size,
                                    progress=progress).predictions
    else:
        outs = generate(lm, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        ids=[s.id for s in samples], progress=progress)
        predictions = [extract_answer(g.text, s) for g, s in zip(outs, samples)]
    return accuracy_report(samples, predictions)
