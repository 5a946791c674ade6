"""Degenerate runs warn (`robustft.diagnose`): each check on a small fixture, and the whole
chain on a toy run that is broken on purpose (a 2-token reasoning budget)."""
import numpy as np
import pytest

import robustft
from robustft import diagnose
from robustft.experts import ExpertOutputs
from robustft.offline import make_benchmark
from robustft.sample import MC, SHORT


def _generated(answers, texts, finished):
    out = ExpertOutputs.empty(len(answers))
    out.answers, out.texts, out.finished = list(answers), list(texts), list(finished)
    return out


def test_unreadable_counts_replies_without_an_answer_and_says_why():
    # 2 of 10 unread: one cut off by the budget, one that never commits; an answer that
    # names no option ("Answer: Fosve") is stated, so it is not unread.
    answers = ["A"] * 7 + [None, None, None]
    texts = ["Answer: A"] * 7 + ["Step 1: the", "It could be A or B.", "Answer: Fosve"]
    out = _generated(answers, texts, [True] * 7 + [False, True, True])
    assert diagnose.unread(out) == [7, 8]
    assert diagnose.parse_rate(out) == pytest.approx(0.8)
    (w,) = diagnose.unreadable("reasoning", out, budget=64)
    assert w["check"] == "unreadable" and "2 of 10" in w["message"] and "1 of them was cut off" in w["message"]
    assert "64-token budget" in w["message"]
    # At most 5 % unread: no warning. Rows a pass skipped are not counted.
    fine = _generated(["A"] * 20, ["Answer: A"] * 20, [True] * 20)
    fine.answers[0], fine.texts[0], fine.finished[0] = None, "", None  # skipped, never asked
    assert diagnose.unreadable("review", fine, 64) == [] and diagnose.parse_rate(fine) == 1.0
    assert diagnose.parse_rate(ExpertOutputs.empty(0)) is None


def test_model_check_flags_experts_no_better_than_the_label_prior():
    rng = np.random.default_rng(0)
    n = 200
    truth = rng.integers(0, 4, n)
    labels = ["ABCD"[t] if rng.random() > 0.3 else "ABCD"[(t + 1) % 4] for t in truth]  # 30 % noise
    knows = ["ABCD"[t] if rng.random() < 0.8 else "ABCD"[rng.integers(4)] for t in truth]
    guesses = ["ABCD"[g] for g in rng.integers(0, 4, n)]
    biased = ["C" if rng.random() < 0.9 else "ABCD"[rng.integers(4)] for _ in range(n)]
    tasks, options = [MC] * n, [4] * n
    assert diagnose.model_check(labels, knows, knows, tasks, options) == []  # experts with knowledge
    found = diagnose.model_check(labels, guesses, biased, tasks, options)
    checks = [(w["check"], w["message"].split(" expert")[0]) for w in found]
    assert ("no_signal", "the direct") in checks and ("no_signal", "the reasoning") in checks
    assert ("answer_bias", "the reasoning") in checks and ("answer_bias", "the direct") not in checks
    # At a high noise rate the labels say little, but two experts that know something agree
    # with each other: no false alarm.
    noisy = ["ABCD"[(t + 1 + rng.integers(3)) % 4] if rng.random() < 0.7 else "ABCD"[t] for t in truth]
    assert [w for w in diagnose.model_check(noisy, knows, knows, tasks, options) if w["check"] == "no_signal"] == []
    # Short answers and too few samples are not checked.
    assert diagnose.model_check(labels[:5], guesses[:5], biased[:5], tasks[:5], options[:5]) == []
    assert diagnose.model_check(labels, guesses, biased, [SHORT] * n, options) == []


def test_few_clean_and_collapse():
    assert diagnose.few_clean(n_clean=10, k=3, n_flagged=5) == []
    (w,) = diagnose.few_clean(n_clean=0, k=3, n_flagged=48)
    assert "only 0 samples" in w["message"] and "alone" in w["message"]
    (w,) = diagnose.few_clean(n_clean=2, k=3, n_flagged=46)
    assert "used the 2 clean samples" in w["message"]
    assert diagnose.few_clean(n_clean=0, k=3, n_flagged=0) == []  # nothing to relabel
    assert diagnose.collapse(["C"] * 24, [MC] * 24)[0]["message"].startswith("24 of the 24 kept relabels are C")
    assert diagnose.collapse(list("ABCDABCDAB"), [MC] * 10) == []
    assert diagnose.collapse(["C"] * 7, [MC] * 7) == []  # too few to tell


def test_the_answer_step_answers_what_a_cut_reply_does_not(tmp_path):
    """The toy with a 2-token reasoning budget: every reply is cut before its answer. The
    answer step (the model completes "Answer:" after its own reply) answers each one, so no
    sample is flagged only for an unread reply; the parse rate says the replies gave none."""
    lm = robustft.load_model("toy", seed=0)
    train, _ = robustft.inject_noise(make_benchmark(seed=0).train[:48], 0.3, seed=0)
    result = robustft.denoise(train, lm, robustft.DenoiseConfig(max_new_tokens=2, batch_size=16), progress=False)
    assert result.stats["parse_rate"]["reasoning"] == 0.0 and result.stats["answer_step"] == {"reasoning": 48}
    assert all(p["reasoning"] in "ABCD" and p["reasoning_extracted"] for p in result.provenance)
    assert "unreadable" not in [w["check"] for w in result.stats["warnings"]]
    full = robustft.denoise(train, lm, robustft.DenoiseConfig(batch_size=16), progress=False)
    assert full.stats["parse_rate"]["reasoning"] == 1.0 and full.stats["answer_step"] == {"reasoning": 0}
    # The stepped answers are the model's, not noise: the labels come out about as right.
    assert result.report["label_accuracy"] >= full.report["label_accuracy"] - 0.05


def test_a_degenerate_run_warns_once_lists_it_and_strict_exits_3(tmp_path):
    """16 toy samples at 70 % noise with k=8 worked examples asked for: fewer clean samples
    than that pass the checker. The run warns once per check and lists it; the CLI's
    --strict exits 3 after writing its outputs."""
    lm = robustft.load_model("toy", seed=0)
    train, _ = robustft.inject_noise(make_benchmark(seed=0).train[:16], 0.7, seed=0)
    config = robustft.DenoiseConfig(k=8, batch_size=16)
    with pytest.warns(diagnose.DegenerateRunWarning) as record:
        result = robustft.denoise(train, lm, config, progress=False)
    checks = [w["check"] for w in result.stats["warnings"]]
    assert checks == ["few_clean"] and len(record) == 1
    clean = sum(p["stage"] == "clean" for p in result.provenance)
    assert clean < 8 and f"only {clean} sample" in result.stats["warnings"][checks.index("few_clean")]["message"]

    from robustft import cli

    data = tmp_path / "noisy70.csv"
    robustft.to_official_csv(train, data)
    out = tmp_path / "run"
    argv = ["denoise", "--data", str(data), "--model", "toy", "--out", str(out), "--no-progress", "--k", "8",
            "--batch-size", "16"]
    assert cli.main(argv + ["--strict"]) == 3
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert [w["check"] for w in summary["warnings"]] == checks and summary["parse_rate"]["reasoning"] == 1.0
    assert (out / "denoise70.csv").exists()
    # Without --strict the same run exits 0 (and resumes from the stored passes).
    assert cli.main(argv) == 0
