"""Answer matching, accuracy reports, and evaluate() by scoring and by generation."""
import dataclasses

import numpy as np
import pytest

from robustft.evaluate import evaluate
from robustft.finetune import finetune
from robustft.inference import predict_letters, score_options
from robustft.metrics import (accuracy_report, exact_match, f1_score, fuzzy_match, gold_answers,
                              is_correct, normalize_answer)
from robustft.prompts import extract_answer
from robustft.sample import SHORT, Sample
from tiny_lm import COLORS, make_lm, make_samples

FAST = dict(epochs=30, lr=1e-2, batch_size=4, lora_r=8, lora_dropout=0.0, progress=False)


@pytest.mark.parametrize("text, want", [
    ("The 1,000 men.", "1000.0 men"),
    ("  an  Apple-pie!", "apple pie"),
    ("$5", "5.0"),
    ("3.50", "3.5"),
    ("", ""),
])
def test_normalize_answer(text, want):
    assert normalize_answer(text) == want


@pytest.mark.parametrize("pred, gold, fuzzy, exact", [
    ("Tom Brady", "Brady", True, False),          # containment either way
    ("the Patriots", "Patriots.", True, True),
    ("1,000", "1000", True, True),
    ("Denver", "Seattle", False, False),
    ("", "", True, True),
    ("", "Denver", False, False),
])
def test_fuzzy_and_exact_match(pred, gold, fuzzy, exact):
    assert fuzzy_match(pred, gold) is fuzzy
    assert exact_match(pred, gold) is exact


def test_fuzzy_match_by_characters_or_whole_words():
    assert fuzzy_match("7", "17")  # the official check compares characters
    assert not fuzzy_match("7", "17", whole_words=True)
    assert fuzzy_match("Brady", "Tom Brady", whole_words=True)


def test_drop_f1():
    assert f1_score("Tom Brady", "Brady") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1_score("3 yards", "4 yards") == 0.0      # the gold number is missing
    assert f1_score("4 yards", "4") == pytest.approx(2 / 3)
    assert f1_score("the end", "End.") == 1.0


def test_gold_answers_and_correctness():
    mc = Sample(id="1", question="q", options=("a", "b", "c"), answer="C", clean_answer="A")
    assert gold_answers(mc) == ["A"]  # the clean label, not the noisy given one
    assert is_correct("A", mc) and is_correct(" a", mc) and not is_correct("C", mc)
    assert not is_correct(None, mc)
    drop = Sample(id="2", question="q", answer="Brady", task=SHORT,
                  extra={"answers": ["Brady", "Tom Brady"]})
    assert gold_answers(drop) == ["Brady", "Tom Brady"]
    assert is_correct("Tom", drop) and is_correct("brady.", drop) and not is_correct("Manning", drop)
    noisy = dataclasses.replace(drop, answer="Manning", clean_answer="Brady")
    assert gold_answers(noisy) == ["Brady"]  # a flipped label's spans are not trusted


@pytest.mark.parametrize("text, want", [
    ("Step 1: the fox is red.\nAnswer: B", "B"),
    ("Answer: A\nOn reflection...\nAnswer: (c)", "C"),
    ("Answer: light red", "B"),      # an exact option text maps to its letter
    ("Answer: E", None),             # not an option
    ("I think B.", None),            # no answer line
])
def test_extraction_of_generated_answers(text, want):
    s = Sample(id="x", question="What color is the fox?", options=("black", "light red", "blue", "green"),
               answer="B")
    assert extract_answer(text, s) == want


def test_accuracy_report_per_category():
    samples = make_samples(9)  # categories cycle zoo, farm, wild
    preds = [s.answer if i in (0, 1, 2, 3) else None for i, s in enumerate(samples)]
    r = accuracy_report(samples, preds)
    assert r.accuracy == pytest.approx(4 / 9)
    assert r.counts == {"farm": 3, "wild": 3, "zoo": 3}
    assert r.by_category == pytest.approx({"zoo": 2 / 3, "farm": 1 / 3, "wild": 1 / 3})
    assert r.correct.tolist() == [True] * 4 + [False] * 5
    with pytest.raises(ValueError):
        accuracy_report(samples, preds[:-1])


def test_evaluate_by_scoring_agrees_with_score_options():
    lm, samples = make_lm(), make_samples(12)
    r = evaluate(lm, samples, progress=False)
    preds = predict_letters(score_options(lm, samples, progress=False))
    assert r.predictions == preds
    assert r.accuracy == pytest.approx(np.mean([p == s.answer for p, s in zip(preds, samples)]))
    assert sum(r.counts.values()) == 12


def test_evaluate_by_generation_and_extraction():
    """After SFT on `Answer: X`, greedy generation + extraction reproduces the labels."""
    samples = make_samples(12)
    tuned = finetune(make_lm(chat=True), samples, **dict(FAST, epochs=40))
    r = evaluate(tuned, samples, method="generate", max_new_tokens=6, progress=False)
    assert r.accuracy == 1.0 and r.predictions == [s.answer for s in samples]
    assert evaluate(tuned, samples, progress=False).accuracy == 1.0


def test_evaluate_short_answers_by_fuzzy_match():
    samples = [Sample(id=f"s{i}", question=f"What color is the fox {i}?", answer=COLORS[i % 8],
                      task=SHORT, category="drop") for i in range(8)]
    tuned = finetune(make_lm(), samples, **dict(FAST, epochs=60))
    r = evaluate(tuned, samples, max_new_tokens=6, progress=False)  # short -> generate
    assert r.accuracy == 1.0 and r.counts == {"drop": 8}


def test_perplexity_is_of_the_gold_answer_and_falls_after_training_on_it():
    """perplexity = exp(mean answer-token NLL) of the *clean* answer; SFT on the clean labels
    makes those answers far more likely than under the untrained model (vocabulary-sized)."""
    from robustft.evaluate import perplexity
    from robustft.finetune import score_responses

    samples = make_samples(12)
    lm = make_lm()
    noisy = [s.with_answer(next(o for o in s.options if o != s.answer)) for s in samples]
    noisy = [dataclasses.replace(n, clean_answer=s.answer) for n, s in zip(noisy, samples)]
    before = perplexity(lm, noisy)
    assert before.shape == (12,)
    np.testing.assert_allclose(before, np.exp(score_responses(lm, samples)), rtol=1e-6)
    assert np.all(before > 5)  # an untrained model spreads its mass over the vocabulary
    after = perplexity(finetune(lm, samples, **FAST), noisy)
    assert np.all(after < 1.5), after
