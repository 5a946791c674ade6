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
# A multiple-choice answer *statement*: an `Answer:` line (also "Final Answer:", "**Answer:**")
# or "the (final / correct / best) answer (option, choice) is ...". Its value is the rest of
# the line (the next line when the statement ends its own). "The given answer is ..." or "the
# other answer is ..." quote an option without choosing it, so they are not statements.
_STATEMENT_RE = re.compile(
    rf"(?:{ANSWER_PREFIX}|\b(?:the|my)\s+(?:(?:final|correct|best|right)\s+)?(?:answer|option|choice)\s+"
    r"(?:is|would\s+be|will\s+be)\b\s*:?)[\s*_]*([^\n]*)", re.IGNORECASE)
# An option letter opening a value: "(b)" in any case; a capital followed by punctuation, a
# space or the end ("B.", "B)", "B:", "B because", "B"); a small letter only with punctuation or
# alone ("b)", "b"), since "a" before a word is the article ("a lizard shedding its skin").
# `strict` (a response's opening line, with no statement) drops "B because": "A chemical..." is
# prose there.
_LETTER_RE = re.compile(r"\(([A-Za-z])\)|([A-Z])(?=$|[.):,]|\s)|([a-z])(?=$|[.):])")
_STRICT_LETTER_RE = re.compile(r"\(([A-Za-z])\)|([A-Z])(?=$|[.):])|([a-z])(?=$|[.):])")
_MORE_LETTERS_RE = re.compile(r"\s*(?:,|/|\bor\b|\band\b)\s*\(?[A-Za-z]\)?(?=$|[.):,\s])", re.IGNORECASE)
_OPTION_LINE_RE = re.compile(r"^[\s*_]*\(?([A-Z])[.)]\s", re.MULTILINE)  # "B. text", "(B) text"
_AMBIGUOUS = object()  # a value naming one option by its letter and another by its words, or several letters


def _plain(text: str) -> str:
    """Lower-case text without markdown, quotes, outer punctuation or repeated spaces."""
    text = re.sub(r"[*_`\"\u201c\u201d]|(?<!\w)'|'(?!\w)", "", text)
    return " ".join(text.split()).strip(" .,;:!").lower()


def _overlap(a: str, b: str) -> float:
    """Jaccard similarity of the two texts' sets of lower-case words."""
    wa, wb = set(re.findall(r"\w+", a.lower())), set(re.findall(r"\w+", b.lower()))
    return len(wa & wb) / len(wa | wb) if wa | wb else 0.0


def _read_option(value: str, sample: Sample, strict: bool = False):
    """The option a value names: its letter, `_AMBIGUOUS`, or None when it names none.

    The value is an option's text (any case); or a letter, optionally followed by text. A
    letter followed by more letters ("A or C"), or by words closer to another option than to
    its own (word-set Jaccard similarity at least 0.25 and above the own option's: "B.
    positive" when B is neutral), is ambiguous.
    """
    v = re.sub(r"^(?:option|choice)\s+", "", value.strip().strip("*_ \"'\u201c\u201d"), flags=re.IGNORECASE)
    plain = _plain(v)
    texts = [_plain(o) for o in sample.options]
    if plain and plain in texts:
        return sample.letters[texts.index(plain)]
    m = (_STRICT_LETTER_RE if strict else _LETTER_RE).match(v)
    if m is None:
        return None
    letter = next(g for g in m.groups() if g).upper()
    if letter not in sample.letters:
        return None
    rest = v[m.end():]
    if _MORE_LETTERS_RE.match(rest):
        return _AMBIGUOUS
    # SmolLM2 writes e.g. "C. Sickle cell anemia: ..." where D is sickle cell anemia: the
    # letter says one option, the words another.
    sims = [_overlap(rest, o) for o in sample.options]
    own = sims[sample.letters.index(letter)]
    if any(x >= 0.25 and x > own for l, x in zip(sample.letters, sims) if l != letter):
        return _AMBIGUOUS
    return letter


def extract_answer(text: str, sample: Sample) -> str | None:
    """Read the answer from a model response.

    Short answer: the rest of the last ``Answer:`` line (the official code's rule).

    Multiple choice, in the forms instruct models write (the table in
    ``tests/data/smollm2_reasoning.jsonl`` holds real SmolLM2 responses):

    1. The last answer *statement* that names an option decides: ``Answer: B``, ``**Answer:**
       (b)``, ``Final Answer: B. <text>``, ``The answer is <option text>``, ``The correct option
       is C``. An option's text counts as its letter; a letter with words closer to another
       option's text, or with several letters ("A or C"), is ambiguous: None.
    2. With no such statement, a response that opens with an option ("C. <text>", "(C)", the
       option's text alone) answers it, unless it goes on to list other options in the same
       form (an enumeration of the choices is no answer).

    Returns an option letter (mc) or the answer text (short); None when the response commits
    to no option. The toy model's ``Answer: <option text>`` lines read as they always did.
    """
    if sample.task != MC:
        matches = _ANSWER_RE.findall(text)
        return (matches[-1].strip().rstrip(".").strip() or None) if matches else None
    for value in reversed(_STATEMENT_RE.findall(text)):
        named = _read_option(value, sample)
        if named is not None:
            return None if named is _AMBIGUOUS else named
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    named = _read_option(lines[0], sample, strict=True)
    if named is None or named is _AMBIGUOUS:
        return None
    if any(letter != named for letter in _OPTION_LINE_RE.findall(text)):
        return None
    return named


# Why a multiple-choice response gives no option (`unread_reason`), in the words warnings use.
UNREAD_REASONS = {
    "stated": "state an answer that is not one option (its letter and its words name different "
              "options, or it names several)",
    "lists": "list the options and pick none",
    "none": "state no answer",
}


def unread_reason(text: str, sample: Sample) -> str | None:
    """Why `extract_answer` reads no option from a multiple-choice response: "stated" (an
    answer statement that names no single option: "Answer: C. Evaporation" where D is
    evaporation, "A or C"), "lists" (the reply enumerates the options without choosing),
    or "none" (no answer statement at all); None when an option is read, or for a short
    answer. Keys of `UNREAD_REASONS`."""
    if sample.task != MC or extract_answer(text, sample) is not None:
        return None
    if _STATEMENT_RE.search(text):
        return "stated"
    if len(set(_OPTION_LINE_RE.findall(text))) > 1:
        return "lists"
    return "none"


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
