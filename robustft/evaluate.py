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

import numpy as np

from .backends import require
from .inference import generate, predict_letters, score_options
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
    if not isinstance(lm, LanguageModel):  # another backend (a server): through its own methods
        require(lm, "score_options" if method == "score" else "generate", stage="evaluation")
        if method == "score":
            predictions = predict_letters(lm.score_options(samples, prompts, by=by, batch_size=batch_size))
        else:
            outs = lm.generate(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               ids=[s.id for s in samples])
            predictions = [extract_answer(g.text, s) for g, s in zip(outs, samples)]
        return accuracy_report(samples, predictions)
    if method == "score":
        predictions = predict_letters(score_options(lm, samples, prompts, by=by, batch_size=batch_size,
                                                    progress=progress))
    else:
        outs = generate(lm, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        ids=[s.id for s in samples], progress=progress)
        predictions = [extract_answer(g.text, s) for g, s in zip(outs, samples)]
    return accuracy_report(samples, predictions)


def perplexity(lm: LanguageModel, samples: Sequence[Sample], *, batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
    """[n] perplexity of each sample's gold answer line under `lm`: exp of the mean token NLL
    of the answer given the direct prompt, the form the model was fine-tuned on (gold: the
    clean answer when known, else the given one). The paper's Figure 4 compares these
    across fine-tuned models: lower means the model finds the right answers more natural.
    ``np.exp(np.log(ppl).mean())`` is the set's token-averaged-per-sample perplexity."""
    from .finetune import score_responses  # finetune imports peft; only load it when asked

    gold = [s if s.clean_answer is None or s.clean_answer == s.answer else s.with_answer(s.clean_answer)
            for s in samples]
    return np.exp(score_responses(lm, gold, batch_size=batch_size, progress=progress))
