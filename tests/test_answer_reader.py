"""`prompts.extract_answer` on the forms real models write: a table of responses SmolLM2-135M-Instruct
wrote to the reasoning prompt (tests/data/smollm2_reasoning.jsonl, recorded by
scripts/parse_rate.py, each read by a person: `expected` is the option the response commits to,
null when it commits to none), and the common forms of other instruct models."""
import json
from pathlib import Path

import pytest

from robustft.offline import make_benchmark
from robustft.prompts import UNREAD_REASONS, answer_line, extract_answer, unread_reason
from robustft.sample import SHORT, Sample

RECORDED = Path(__file__).parent / "data" / "smollm2_reasoning.jsonl"
FOX = Sample(id="fox", question="What color is the fox?", options=("black", "light red", "blue", "green"),
             answer="B")


def _recorded() -> list[dict]:
    return [json.loads(line) for line in RECORDED.read_text().splitlines()]


def test_every_recorded_smollm2_response_reads_as_a_person_reads_it():
    rows = _recorded()
    assert len(rows) >= 48 and {r["dataset"] for r in rows} == {"arc", "fpb", "pubmedqa"}
    assert all("expected" in r for r in rows), "label new responses by reading them (see scripts/parse_rate.py)"
    wrong = []
    for r in rows:
        s = Sample(id=r["id"], question="", options=tuple(r["options"]), answer="A")
        got = extract_answer(r["response"], s)
        if got != r["expected"]:
            wrong.append((r["dataset"], r["id"], r["expected"], got))
    assert wrong == []
    # Both kinds are in the table: responses that commit and responses that do not.
    n_none = sum(r["expected"] is None for r in rows)
    assert 0 < n_none < len(rows)


@pytest.mark.parametrize("text, want", [
    # an answer statement, in its usual forms
    ("Step 1: foxes are red.\nAnswer: B", "B"),
    ("The answer is (B)", "B"),
    ("The answer is (b).", "B"),
    ("**Answer:** B", "B"),
    ("**Answer: B**", "B"),
    ("Answer:\nB", "B"),
    ("Final Answer: B. light red", "B"),
    ("The correct answer is C. blue", "C"),
    ("The final answer is: D", "D"),
    ("The answer is option B.", "B"),
    ("So the best choice is B because foxes are red.", "B"),
    ('The answer is "light red".', "B"),
    ("Answer: Light Red.", "B"),
    ("answer: b", "B"),
    # the last statement decides
    ("Answer: A\nOn reflection...\nAnswer: (c)", "C"),
    ("A. black\n\nThe answer is B.", "B"),
    ("Answer: B\nThe answer is not obvious, but it fits.", "B"),  # a statement naming no option
    # a response that opens with its answer
    ("B. light red", "B"),
    ("B) light red\n\nFoxes of this kind are red.", "B"),
    ("(B) light red", "B"),
    ("light red", "B"),
    ("Light red.", "B"),
    ("b", "B"),
    ("**B. light red**", "B"),
    # no commitment: None
    ("A. black\nB. light red\nC. blue\nD. green", None),  # the options listed back
    ("The answer is A or C.", None),
    ("The answer is A, B.", None),
    ("B. blue", None),                     # letter B with C's text: which one?
    ("The answer is A.\nFinal Answer: B. blue", None),  # the last statement is ambiguous
    ("A fox is usually red.", None),       # "A" is an article here
    ("a light red fox", None),
    ("I think B.", None),
    ("The given answer is light red.", None),  # quotes an option, chooses none
    ("To decide, compare A and B.", None),
    ("Answer: E", None),                   # not an option
    ("Answer: purple", None),
    ("", None),
])
def test_common_forms(text, want):
    assert extract_answer(text, FOX) == want


def test_the_toy_models_answer_lines_read_as_before():
    """The offline model answers by option text (``Answer: <text>``) after its steps; lettered
    lines read too. Every benchmark sample's line gives back its label."""
    bench = make_benchmark(seed=0)
    for s in bench.train[:200] + bench.test[:100]:
        steps = f"{s.question.split('?')[0]} is in the record.\n"
        assert extract_answer(steps + answer_line(s, by="text"), s) == s.answer
        assert extract_answer(steps + answer_line(s, by="letter"), s) == s.answer
        assert extract_answer(steps + "Answer: Zzyzx", s) is None


def test_short_answers_are_the_last_answer_line():
    s = Sample(id="d", question="Who threw it?", answer="Brady", task=SHORT)
    assert extract_answer("He threw far.\nAnswer: Tom Brady.", s) == "Tom Brady"
    assert extract_answer("Answer: x\nAnswer: Manning", s) == "Manning"
    assert extract_answer("Tom Brady threw it.", s) is None


def test_unread_reason_says_why_a_recorded_reply_gives_no_option():
    rows = _recorded()
    reasons = [unread_reason(r["response"], Sample(id=r["id"], question="", options=tuple(r["options"]), answer="A"))
               for r in rows]
    # A reason exactly where a person read no option, and each kind occurs in SmolLM2's replies.
    assert [w is None for w in reasons] == [r["expected"] is not None for r in rows]
    assert {w for w in reasons if w is not None} == set(UNREAD_REASONS)


@pytest.mark.parametrize("text, want", [
    ("Answer: C. Evaporation", "stated"),  # C is conduction: letter and words disagree
    ("The answer is A or C.", "stated"),
    ("A. convection\nB. radiation\nC. conduction", "lists"),
    ("Heat moves from the tea to the spoon.", "none"),
    ("Answer: D. evaporation", None),
])
def test_unread_reason_forms(text, want):
    s = Sample(id="tea", question="", options=("convection", "radiation", "conduction", "evaporation"), answer="C")
    assert unread_reason(text, s) == want
