"""Every prompt RobustFT sends to a model, and how an answer is read back. One place for each.

The same strings are used for inference, for fine-tuning (the training prompt is identical to
the inference prompt) and for the offline benchmark's pre-training text, so a model that
learned the format in one place can follow it everywhere.

Response format: every expert ends its response with ``Answer: X`` (X an option letter, or the
short answer text), as the official RobustFT code expects. Option *scoring* conditions on the
prompt followed by ``Answer:`` and scores each candidate continuation (`` B`` or `` <option
text>``).
"""
from __future__ import annotations

import re

from .sample import MC, Sample

ANSWER_PREFIX = "Answer:"

DIRECT_INSTRUCTION = "Answer the following question. Reply with the answer only."
REASONING_INSTRUCTION = (
    "Answer the following question. Think step by step, then give the final answer "
    f"on the last line as '{ANSWER_PREFIX} X'."
)
CONTEXT_INSTRUCTION = (
    "Here are solved examples of similar questions. Use them, then answer the last question. "
    "Reply with the answer only."
)
REVIEW_INSTRUCTION = (
    "Two experts answered the question below. Review their answers and give the correct "
    "final answer. Reply with the answer only."
)
CHECKER_INSTRUCTION = (
    "Decide whether the given label of the question below is wrong. Two experts' answers are "
    "shown. Reply 'Yes' if the label is noisy, otherwise 'No'."
)
SELF_SELECT_INSTRUCTION = (
    "Is the given answer to the question below correct? Reply 'Yes' if it is correct, otherwise 'No'."
)


def format_question(sample: Sample) -> str:
    """The question and its lettered options, one per line."""
    lines = [f"Question: {sample.question.strip()}"]
    if sample.task == MC:
        lines += [f"{l}. {o}" for l, o in zip(sample.letters, sample.options)]
    return "\n".join(lines)


def answer_line(sample: Sample, answer: str | None = None, by: str = "letter") -> str:
    """`Answer: B` (by="letter") or `Answer: <option text>` (by="text") for a given answer.

    answer defaults to the sample's given label; for short-answer samples it is the text.
    """
    answer = sample.answer if answer is None else answer
    if sample.task == MC and by == "text":
        from .sample import letter_index

        answer = sample.options[letter_index(answer)]
    return f"{ANSWER_PREFIX} {answer}"


def direct_prompt(sample: Sample) -> str:
    """Vanilla expert: answer directly."""
    return f"{DIRECT_INSTRUCTION}\n\n{format_question(sample)}\n"


def reasoning_prompt(sample: Sample) -> str:
    """Reasoning-enhanced expert: reason step by step, then `Answer: X`."""
    return f"{REASONING_INSTRUCTION}\n\n{format_question(sample)}\n"


def context_prompt(sample: Sample, examples: list[Sample], by: str = "letter") -> str:
    """Context-enhanced relabeling (CER): k retrieved clean samples as worked examples."""
    shots = "\n\n".join(f"{format_question(e)}\n{answer_line(e, by=by)}" for e in examples)
    return f"{CONTEXT_INSTRUCTION}\n\n{shots}\n\n{format_question(sample)}\n"


def review_prompt(sample: Sample, reasoning: str, reasoning_answer: str, context_answer: str) -> str:
    """Review agent: sees the reasoning expert's and the CER expert's answers, gives the final one."""
    return (
        f"{REVIEW_INSTRUCTION}\n\n{format_question(sample)}\n"
        f"Expert 1 (step by step): {reasoning.strip()}\n{ANSWER_PREFIX} {reasoning_answer}\n"
        f"Expert 2 (from similar examples): {ANSWER_PREFIX} {context_answer}\n"
    )


def checker_prompt(sample: Sample, direct_answer: str, reasoning_answer: str) -> str:
    """The paper's LLM checker: is the given label noisy? The verdict follows as
    ``Answer: Yes`` / ``Answer: No`` (scored, like an option text)."""
    return (
        f"{CHECKER_INSTRUCTION}\n\n{format_question(sample)}\n"
        f"Given label: {sample.answer}\n"
        f"Expert 1: {direct_answer}\nExpert 2: {reasoning_answer}\n"
    )


def self_select_prompt(sample: Sample) -> str:
    """SelfSelect (a baseline): the model judges the given label alone, no experts. The
    verdict follows as ``Answer: Yes`` / ``Answer: No`` (scored, like an option text)."""
    given = answer_line(sample, by="text")[len(ANSWER_PREFIX):].strip()
    return f"{SELF_SELECT_INSTRUCTION}\n\n{format_question(sample)}\nGiven answer: {given}\n"


_ANSWER_RE = re.compile(rf"{ANSWER_PREFIX}\s*\(?\s*([^\n]*)", re.IGNORECASE)


def extract_answer(text: str, sample: Sample) -> str | None:
    """Read the answer from a model response, as the official code does (`Answer: X`).

    Multiple choice: the letter after the *last* `Answer:` when it names one of the sample's
    options; failing that, an option text that the answer line reproduces exactly. Short
    answer: the rest of that line. Returns None when nothing usable is found.
    """
    matches = _ANSWER_RE.findall(text)
    if not matches:
        return None
    raw = matches[-1].strip()
    if sample.task != MC:
        return raw.rstrip(".").strip() or None
    m = re.match(r"\(?([A-Za-z])\)?(?:[.):,\s]|$)", raw)
    if m and m.group(1).upper() in sample.letters:
        return m.group(1).upper()
    for l, o in zip(sample.letters, sample.options):
        if raw.rstrip(".").strip().lower() == o.strip().lower():
            return l
    return None


def reasoning_steps(text: str) -> str:
    """A reasoning response without its final ``Answer:`` line: the steps alone, as the
    review prompt shows them before restating the answer."""
    cut = list(_ANSWER_RE.finditer(text))
    return (text[:cut[-1].start()] if cut else text).strip()


def states_answer(text: str) -> bool:
    """Whether a response states a final answer (an ``Answer:`` line), readable or not: an
    answer that names none of the options is stated; a reply cut off before its last line,
    or one that never commits, is not."""
    return _ANSWER_RE.search(text) is not None
