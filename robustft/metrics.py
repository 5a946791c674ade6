"""Answer matching and accuracy, from predictions given as plain data.

Multiple choice: the predicted letter equals the gold letter. Short answers (DROP): the
RobustFT evaluation's fuzzy match — after normalisation (lower case, no punctuation, no
articles, single spaces, numbers in one canonical form), one answer contains the other —
against any of the gold spans. The DROP token F1 is here too, for reports that want it.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .sample import MC, Sample

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _number(token: str) -> float | None:
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return None


def _normalize_token(token: str) -> str:
    if _number(token) is None:  # keep "3.5" and "1,000" whole; strip "$5" / "men."
        token = "".join(ch for ch in token if ch not in _PUNCT)
    n = _number(token)
    return str(n) if n is not None else token  # "1,000", "1000", "1000.0": one answer


def normalize_answer(text: str) -> str:
    """DROP-style normalisation: lower case, numbers canonical, punctuation and articles
    removed, whitespace collapsed. "The 1,000 men." -> "1000.0 men"."""
    tokens = re.split(r"[\s-]+", text.lower())
    tokens = [_ARTICLES.sub(" ", _normalize_token(t)).strip() for t in tokens]
    return " ".join(t for t in tokens if t)


def exact_match(prediction: str, gold: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(gold)


def fuzzy_match(prediction: str, gold: str, whole_words: bool = False) -> bool:
    """Normalised containment either way (RobustFT's short-answer check); two empty
    answers match, an empty and a non-empty one do not.

    As in the official check, containment is by characters, so "7" matches "17";
    whole_words=True requires whole normalised tokens ("brady" in "tom brady" only).
    """
    p, g = normalize_answer(prediction), normalize_answer(gold)
    if not p or not g:
        return p == g
    if whole_words:
        p, g = f" {p} ", f" {g} "
    return p in g or g in p


def f1_score(prediction: str, gold: str) -> float:
    """DROP token F1 between two answers: bag-of-token overlap after normalisation, and 0
    when the gold answer has numbers none of which the prediction gives."""
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p and not g:
        return 1.0
    gold_numbers = {t for t in g if _number(t) is not None}
    if gold_numbers and not gold_numbers & set(p):
        return 0.0
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def gold_answers(sample: Sample) -> list[str]:
    """The answers that count as correct: the clean label when known, else the given one.

    For short-answer samples whose given label is not known to be noisy, every annotated
    span in ``extra["answers"]`` (DROP's alternatives) counts too.
    """
    gold = sample.clean_answer if sample.clean_answer is not None else sample.answer
    golds = [gold]
    if sample.task != MC and sample.is_noisy is not True:
        golds += [a for a in sample.extra.get("answers", ()) if a not in golds]
    return golds


def answers_match(a: str | None, b: str | None, task: str = MC) -> bool:
    """Whether two answers to the same question agree: equal letters (multiple choice), or
    the fuzzy match of normalised texts (short answers). No answer (None) agrees with
    nothing."""
    if a is None or b is None:
        return False
    if task == MC:
        return a.strip().upper() == b.strip().upper()
    return fuzzy_match(a, b)


def is_correct(prediction: str | None, sample: Sample) -> bool:
    """Whether a prediction (a letter for mc, text for short answers) is right."""
    if prediction is None:
        return False
    golds = gold_answers(sample)
    if sample.task == MC:
        return prediction.strip().upper() == golds[0].strip().upper()
    return any(fuzzy_match(prediction, g) for g in golds)


@dataclass
class EvalResult:
    """Accuracy of n predictions, overall and per category.

    Attributes:
        accuracy: fraction correct, in [0, 1].
        correct: [n] bool, per sample.
        predictions: the n predictions (None where no answer could be read).
        by_category: category -> accuracy (samples without a category under "all").
        counts: category -> number of samples.
    """

    accuracy: float
    correct: np.ndarray
    predictions: list
    by_category: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"EvalResult(accuracy={self.accuracy:.4f}, n={len(self.correct)}, "
                f"categories={len(self.by_category)})")


def accuracy_report(samples: Sequence[Sample], predictions: Sequence[str | None]) -> EvalResult:
    """Score predictions (from any model or API) against the samples' gold answers."""
    if len(samples) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(samples)} samples")
    correct = np.array([is_correct(p, s) for p, s in zip(predictions, samples)], dtype=bool)
    groups: dict[str, list[bool]] = {}
    for s, c in zip(samples, correct):
        groups.setdefault(s.category if s.category is not None else "all", []).append(bool(c))
    return EvalResult(
        accuracy=float(correct.mean()) if len(correct) else float("nan"),
        correct=correct,
        predictions=list(predictions),
        by_category={k: float(np.mean(v)) for k, v in sorted(groups.items())},
        counts={k: len(v) for k, v in sorted(groups.items())},
    )
