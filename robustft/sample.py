"""The one sample type every stage passes around, and the option-letter mapping.

A sample is plain data: a question, its options (empty for short-answer tasks such as DROP),
the *given* answer (possibly noisy) and, when known, the clean answer. Stages never mutate a
sample in place; they return new ones (`dataclasses.replace`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

MC = "mc"  # multiple choice: `answer` is an option letter
SHORT = "short"  # short free-text answer (DROP): `answer` is the text itself
TASK_TYPES = (MC, SHORT)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def letter(index: int) -> str:
    """Option letter for a 0-based option index: 0 -> 'A'."""
    if not 0 <= index < len(LETTERS):
        raise ValueError(f"option index {index} has no letter (at most {len(LETTERS)} options)")
    return LETTERS[index]


def letter_index(answer: str) -> int:
    """0-based option index of a letter: 'A' -> 0. Accepts ' b' / 'B.' / '(B)'."""
    key = answer.strip().strip("().:").upper()
    if len(key) != 1 or key not in LETTERS:
        raise ValueError(f"{answer!r} is not an option letter")
    return LETTERS.index(key)


def option_letters(n_options: int) -> str:
    """The letters of n options: 4 -> 'ABCD'."""
    return LETTERS[:n_options]


@dataclass(frozen=True)
class Sample:
    """One SFT example.

    Attributes:
        id: unique within a dataset (the official CSV's `id`, or the row number).
        question: the question text (may contain newlines).
        options: option texts, in order (A = first); empty for short-answer tasks.
        answer: the given label — an option letter for `task == "mc"`, free text for "short".
            May be noisy.
        task: "mc" or "short".
        category: optional grouping (MMLU `Subject`, the offline benchmark's domain).
        clean_answer: the true label when known (from `labeled.csv`, or the noise injector).
        extra: dataset-specific fields kept for export (e.g. FPB `gt`), never read as labels.
    """

    id: str
    question: str
    options: tuple[str, ...] = ()
    answer: str = ""
    task: str = MC
    category: str | None = None
    clean_answer: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        # Accept any sequence of options but store a tuple so samples stay hashable/frozen.
        if not isinstance(self.options, tuple):
            object.__setattr__(self, "options", tuple(self.options))

    @property
    def letters(self) -> str:
        return option_letters(len(self.options))

    @property
    def answer_index(self) -> int:
        """0-based index of the given answer (multiple choice only)."""
        return letter_index(self.answer)

    @property
    def answer_text(self) -> str:
        """The text of the given answer: the option text for mc, the answer itself for short."""
        return self.options[self.answer_index] if self.task == MC else self.answer

    @property
    def is_noisy(self) -> bool | None:
        """True when the given answer differs from the known clean one; None when unknown."""
        if self.clean_answer is None:
            return None
        return self.answer != self.clean_answer

    def with_answer(self, answer: str) -> "Sample":
        return dataclasses.replace(self, answer=answer)
