"""RobustFT's stages as pure functions over arrays: no model runs here."""
import math

import numpy as np
import pytest

from robustft.denoise import DenoiseConfig, detection_report
from robustft.detect import detect_noise
from robustft.experts import ExpertOutputs
from robustft.kernels import OptionScores
from robustft.metrics import answers_match
from robustft.prompts import reasoning_steps
from robustft.relabel import nearest_clean
from robustft.sample import SHORT, Sample
from robustft.selection import response_entropy, select_by_entropy


# ------------------------------------------------------------------------- detection
def test_agree_checker_flags_unless_both_experts_agree_with_the_label():
    labels = ["A", "B", "C", "D", "A"]
    direct = ["A", "B", "A", None, "B"]
    reasoning = ["A", "C", "C", "D", "B"]
    assert detect_noise(labels, direct, reasoning).tolist() == [False, True, True, True, True]
    assert detect_noise(labels, direct, reasoning, checker="either").tolist() == [False, False, False, False, True]


def test_short_answers_are_compared_by_normalised_fuzzy_match():
    labels = ["The 1,000 men", "Paris", "blue"]
    direct = ["1000 men.", "paris", "red"]
    reasoning = ["1000 men", "Paris, France", "blue"]
    flags = detect_noise(labels, direct, reasoning, tasks=[SHORT] * 3)
    assert flags.tolist() == [False, False, True]
    assert answers_match("b", "B") and not answers_match(None, "B") and not answers_match("A", "B")


def test_a_custom_checker_is_a_function_of_arrays():
    def only_direct(labels, direct, reasoning, tasks):
        return np.array([d != y for y, d in zip(labels, direct)])

    assert detect_noise(["A", "B"], ["A", "A"], ["C", "C"], checker=only_direct).tolist() == [False, True]
    with pytest.raises(ValueError, match="unknown checker"):
        detect_noise(["A"], ["A"], ["A"], checker="nope")
    with pytest.raises(ValueError, match="2 labels, 1 direct"):
        detect_noise(["A", "B"], ["A"], ["A", "B"])
    with pytest.raises(ValueError, match="shape"):
        detect_noise(["A", "B"], ["A", "B"], ["A", "B"], checker=lambda *a: np.zeros(3, bool))


# ------------------------------------------------------------------------- retrieval
def test_nearest_clean_ranks_by_cosine_among_clean_samples_only():
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.7, 0.7], [1, 0.01], [-1, 0]], dtype=float)
    clean = np.array([False, True, True, True, False, True])
    nb = nearest_clean(emb * [[3], [1], [2], [5], [1], [1]], clean, [0, 4], k=3)  # norms do not matter
    assert nb.tolist() == [[1, 3, 2], [1, 3, 2]]
    # A clean query never retrieves itself; too few clean samples pad with -1.
    assert nearest_clean(emb, clean, [1], k=5).tolist() == [[3, 2, 5, -1, -1]]
    assert nearest_clean(emb, np.zeros(6, bool), [0], k=2).tolist() == [[-1, -1]]


def test_nearest_clean_breaks_ties_by_index():
    emb = np.ones((5, 3))
    assert nearest_clean(emb, np.ones(5, bool), [2], k=3).tolist() == [[0, 1, 3]]
    with pytest.raises(ValueError, match="k must be"):
        nearest_clean(emb, np.ones(5, bool), [0], k=0)


# ------------------------------------------------------------------------- selection
def _scored(logprobs, n_tokens, entropy=None):
    lp = np.array(logprobs, dtype=float)
    nt = np.array(n_tokens)
    ent = np.full(lp.shape, 0.5) if entropy is None else np.array(entropy, dtype=float)
    nan = np.full(len(lp), np.nan)
    return ExpertOutputs(answers=[None] * len(lp), scores=OptionScores(lp, nt, ent), texts=[""] * len(lp),
                         response_entropy=nan, token_entropy=nan.copy(), max_token_nll=nan.copy())


def test_response_entropy_is_the_mean_token_nll_of_the_label():
    out = _scored([[-0.2, -3.0, -4.0], [-6.0, -1.0, -2.0]], [[1, 2, 2], [3, 2, 1]],
                  entropy=[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    assert np.allclose(response_entropy(out, ["A", "C"]), [0.2, 2.0])
    assert np.allclose(response_entropy(out, ["B", None], "shannon"), [0.2, np.nan], equal_nan=True)
    p = np.exp([-0.2, -3.0, -4.0]) / np.exp([-0.2, -3.0, -4.0]).sum()
    assert response_entropy(out, ["A", "A"], "options")[0] == pytest.approx(-(p * np.log(p)).sum())
    with pytest.raises(ValueError, match="measure"):
        response_entropy(out, ["A", "A"], "bits")


def test_generated_rows_use_their_own_response_statistics():
    out = ExpertOutputs(answers=["x", "y"],
                        scores=OptionScores(np.zeros((2, 0)), np.zeros((2, 0), int), np.zeros((2, 0))),
                        texts=["Answer: x", "Answer: y"], response_entropy=np.array([0.3, 1.2]),
                        token_entropy=np.array([0.7, 0.9]), max_token_nll=np.array([1.0, 2.0]))
    assert response_entropy(out, ["x", "y"]).tolist() == [0.3, 1.2]
    assert response_entropy(out, ["x", "y"], "shannon").tolist() == [0.7, 0.9]


def test_select_by_entropy_keeps_the_lowest_beta_fraction():
    h = [0.9, 0.1, np.nan, 0.5, 0.1, 2.0]
    assert select_by_entropy(h, 0.5).tolist() == [False, True, False, True, True, False]
    assert select_by_entropy(h, 0.25).tolist() == [False, True, False, False, True, False]  # round(1.5) = 2
    assert select_by_entropy(h, 1.0).sum() == 5  # nan is never kept
    assert select_by_entropy(h, 0.0).sum() == 0
    assert select_by_entropy([], 0.5).tolist() == []
    with pytest.raises(ValueError, match="beta"):
        select_by_entropy(h, 1.5)


# ------------------------------------------------------------------------- report & config
def test_detection_report_counts():
    samples = [Sample(id=str(i), question="q", options=("a", "b", "c"), answer=given, clean_answer=clean)
               for i, (given, clean) in enumerate([("A", "A"), ("B", "A"), ("C", "C"), ("A", "B"), ("B", "B")])]
    prov = [
        {"noisy": False, "stage": "clean", "label": "A"},  # right
        {"noisy": True, "stage": "selected", "relabel": "A", "label": "A"},  # noisy, fixed
        {"noisy": True, "stage": "dropped", "relabel": "A", "label": None},  # clean but flagged
        {"noisy": True, "stage": "selected", "relabel": "C", "label": "C"},  # noisy, wrong relabel
        {"noisy": False, "stage": "clean", "label": "B"},
    ]
    r = detection_report(samples, prov)
    assert (r["noisy"], r["flagged"], r["selected"], r["kept"]) == (2, 3, 2, 4)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == 1.0 and r["f1"] == pytest.approx(0.8)
    assert r["relabel_accuracy"] == pytest.approx(1 / 3) and r["selection_accuracy"] == 0.5
    assert r["label_accuracy"] == 0.75 and r["clean_accuracy"] == 1.0


def test_config_round_trips_and_rejects_bad_values():
    c = DenoiseConfig(k=5, beta=0.3, checker="either")
    assert DenoiseConfig.from_dict(c.to_dict()) == c
    for bad in ({"k": 0}, {"beta": 2.0}, {"checker": "vote"}, {"entropy": "bits"}, {"entropy_from": "x"},
                {"reasoning_paths": 0}, {"temperature": 0.0}, {"temperature": float("nan")}):
        with pytest.raises(ValueError):
            DenoiseConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        DenoiseConfig.from_dict({"kk": 3})
    assert DenoiseConfig.paper().reasoning_paths == DenoiseConfig().reasoning_paths == 1  # one response


def test_reasoning_steps_drop_the_answer_line():
    text = "We know that X lives in Y.\nAnswer: Y"
    assert reasoning_steps(text) == "We know that X lives in Y."
    assert reasoning_steps("no answer here") == "no answer here"
    assert math.isclose(len(reasoning_steps("a\nAnswer: b\nAnswer: c")), len("a\nAnswer: b"))


def test_supporting_entropy_ranks_a_label_by_the_experts_that_gave_it():
    from robustft.selection import supporting_entropy

    ctx = _scored([[-0.1, -3.0], [-2.0, -0.2], [-0.5, -1.0], [-1.0, -1.0]], [[1, 1]] * 4)
    ctx.answers = ["A", "B", "A", "A"]
    h_ctx = response_entropy(ctx, ["A", "A", "A", "B"])
    reasoning = ["B", "A", "A", "A"]
    uncertainty = np.array([0.05, 0.4, 0.3, 0.2])
    got = supporting_entropy(["A", "A", "A", "B"], ctx, h_ctx, reasoning, uncertainty)
    # CER only; reasoning only; both (the lower); neither (nan: never selected)
    assert np.allclose(got, [0.1, 0.4, 0.3, np.nan], equal_nan=True)


def test_review_by_confidence_keeps_agreement_and_else_trusts_the_surer_expert():
    from robustft.relabel import review_by_confidence

    ctx, h_ctx = ["A", "B", "C", None, "D", "A"], np.array([0.5, 0.1, 2.0, np.nan, 0.3, 0.3])
    rsn, h_rsn = ["A", "C", "D", "B", None, "B"], np.array([0.1, 0.9, 0.2, 0.4, np.nan, 0.3])
    assert review_by_confidence(ctx, h_ctx, rsn, h_rsn) == ["A", "B", "D", "B", "D", "A"]  # tie -> CER
    short = review_by_confidence(["the 5 men"], np.array([3.0]), ["5 men"], np.array([0.1]), tasks=[SHORT])
    assert short == ["the 5 men"]  # the same answer after normalisation: agreement stands


def test_self_consistency_votes_and_reports_the_share_behind_the_answer():
    from robustft.detect import self_consistency

    paths = [["A", "B", None, "C", None],
             ["A", "C", None, "D", None],
             ["B", "C", "A", "C", None],
             ["A", "B", None, "D", None]]
    answers, agreement, source = self_consistency(paths, prefer=["B", "C", None, "D", "A"])
    # a majority; a tie broken by `prefer`; one vote of four; a tie `prefer` is part of; no answer at all
    assert answers == ["A", "C", "A", "D", None]
    assert np.allclose(agreement, [0.75, 0.5, 0.25, 0.5, np.nan], equal_nan=True)
    assert source.tolist() == [0, 1, 2, 1, -1]
    # Without `prefer` a tie goes to the answer reached first.
    assert self_consistency(paths)[0][1] == "B"
    # Short answers vote by normalised fuzzy match.
    short, share, _ = self_consistency([["the 5 men"], ["5 men"], ["six"]], tasks=[SHORT])
    assert short == ["the 5 men"] and math.isclose(share[0], 2 / 3)
    with pytest.raises(ValueError, match="every path"):
        self_consistency([["A", "B"], ["A"]])


def test_answer_uncertainty_is_minus_log_the_vote_share_with_several_paths():
    one = ExpertOutputs.from_rows([{"answer": "A", "text": "x", "response_entropy": 0.1, "token_entropy": 0.2,
                                    "max_token_nll": 0.7}])
    assert np.allclose(one.answer_uncertainty, [0.7])  # one response: its least sure token
    import dataclasses

    voted = dataclasses.replace(one, agreement=np.array([0.25]))
    assert np.allclose(voted.answer_uncertainty, [math.log(4)])
