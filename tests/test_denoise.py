"""`robustft.denoise` end to end on the toy model: provenance, resuming, what a re-run reuses."""
import json

import numpy as np
import pytest

import robustft
from robustft.denoise import CLEAN, DROPPED, SELECTED, DenoiseConfig, denoise
from robustft.detect import detect_noise
from robustft.offline import ToyConfig, make_benchmark

# A slice of the offline benchmark keeps these tests quick; small batches make many of them.
N, BATCH = 64, 16
CONFIG = DenoiseConfig(batch_size=BATCH, max_new_tokens=40)


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def toy():
    config = ToyConfig.for_seed(0)
    lm = robustft.load_model("toy", config=config, progress=False)
    train, _ = robustft.inject_noise(make_benchmark(config.world).train[:N], 0.5, seed=0)
    return lm, train


@pytest.fixture(scope="module")
def full_run(toy, tmp_path_factory):
    lm, train = toy
    out = tmp_path_factory.mktemp("full")
    return out, denoise(train, lm, CONFIG, out=out, progress=False)


def test_provenance_accounts_for_every_sample(toy, full_run):
    lm, train = toy
    _, result = full_run
    prov = result.provenance
    assert [p["id"] for p in prov] == [s.id for s in train]
    stages = [p["stage"] for p in prov]
    flagged = [p for p in prov if p["noisy"]]
    assert stages.count(CLEAN) == N - len(flagged)
    # beta = 0.5 of the relabeled samples are kept (round half up).
    assert stages.count(SELECTED) == int(np.floor(0.5 * len(flagged) + 0.5))
    assert len(result.samples) == stages.count(CLEAN) + stages.count(SELECTED)
    for p in flagged:
        assert len(p["neighbours"]) == CONFIG.k and p["id"] not in p["neighbours"]
        assert all(not prov[[q["id"] for q in prov].index(n)]["noisy"] for n in p["neighbours"])
        # The default review: where the experts agree their answer stands, else one of theirs.
        assert p["relabel"] in (p["context"], p["reasoning"]) and p["review"] is None
        if p["context"] == p["reasoning"]:
            assert p["relabel"] == p["context"]
        assert (p["label"] is None) == (p["stage"] == DROPPED)
    kept_entropy = [p["entropy"] for p in flagged if p["stage"] == SELECTED]
    dropped_entropy = [p["entropy"] for p in flagged if p["stage"] == DROPPED and p["entropy"] is not None]
    assert max(kept_entropy) <= min(dropped_entropy)
    # The training set: clean samples keep their label, selected ones carry the new label.
    labels = {s.id: s.answer for s in result.samples}
    assert all(labels[p["id"]] == p["label"] for p in prov if p["stage"] != DROPPED)
    # The toy model knows most seen facts, so detection on this slice is far above chance.
    r = result.report
    assert r["n"] == N and r["noisy"] == sum(s.is_noisy for s in train)
    assert r["recall"] >= 0.85 and r["precision"] >= 0.5
    assert json.loads((full_run[0] / "config.json").read_text())["k"] == CONFIG.k


def test_an_interrupted_run_resumes_without_recomputing_finished_batches(toy, full_run, tmp_path):
    lm, train = toy
    _, reference = full_run
    calls = []

    def stop_after_three(n):
        calls.append(n)
        if n == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        denoise(train, lm, CONFIG, out=tmp_path, progress=False, on_batch=stop_after_three)
    stored = (tmp_path / "experts.jsonl").read_text().splitlines()
    assert len(stored) == 3 and calls == [1, 2, 3]

    again = denoise(train, lm, CONFIG, out=tmp_path, progress=False)
    total = again.stats["computed_batches"] + again.stats["reused_batches"]
    assert again.stats["reused_batches"] == 3 and total == len(stored) + again.stats["computed_batches"]
    assert again.provenance == reference.provenance
    assert [s.answer for s in again.samples] == [s.answer for s in reference.samples]

    # Everything finished: a third run computes nothing.
    third = denoise(train, lm, CONFIG, out=tmp_path, progress=False)
    assert third.stats["computed_batches"] == 0 and third.provenance == reference.provenance


def test_a_changed_setting_recomputes_only_what_it_changes(toy, full_run, tmp_path):
    lm, train = toy
    out, reference = full_run
    # Same folder, another k: the detection passes are reused, CER and review recomputed.
    k5 = denoise(train, lm, DenoiseConfig(batch_size=BATCH, max_new_tokens=40, k=2), out=out, progress=False)
    n_batches = -(-N // BATCH)
    # direct + reasoning
    assert k5.stats["reused_batches"] == 2 * n_batches
    n_flagged = sum(p["noisy"] for p in reference.provenance)
    assert k5.stats["computed_batches"] == -(-n_flagged // BATCH)  # every CER prompt changed; no review agent

    # beta changes no model pass at all.
    b = denoise(train, lm, DenoiseConfig(batch_size=BATCH, max_new_tokens=40, beta=0.25), out=out, progress=False)
    assert b.stats["computed_batches"] == 0
    assert sum(p["stage"] == SELECTED for p in b.provenance) < sum(p["stage"] == SELECTED for p in reference.provenance)
    # force recomputes everything, and gives the same answers.
    forced = denoise(train, lm, CONFIG, out=out, progress=False, force=True)
    assert forced.stats["reused_batches"] == 0 and forced.provenance == reference.provenance


def test_short_answers_go_through_every_stage_by_generation(toy, tmp_path):
    from robustft.sample import SHORT, Sample

    lm, train = toy
    # The same questions without options: every expert must write its answer.
    short = [Sample(id=s.id, question=s.question, answer=s.answer_text, task=SHORT) for s in train[:24]]
    short, changed = robustft.inject_noise(short, 0.5, seed=1)
    # Three sampled reasoning responses per question: short answers are voted on too.
    config = DenoiseConfig(batch_size=8, max_new_tokens=24, k=2, reasoning_paths=3)
    result = denoise(short, lm, config, out=tmp_path, progress=False)
    prov = result.provenance
    flags = detect_noise([p["given"] for p in prov], [p["direct"] for p in prov], [p["reasoning"] for p in prov],
                         tasks=[SHORT] * len(prov))
    assert [p["noisy"] for p in prov] == flags.tolist()
    flagged = [p for p in prov if p["noisy"]]
    n_clean = len(prov) - len(flagged)
    assert flagged and all(len(p["neighbours"]) == min(2, n_clean) for p in flagged)
    assert sum(p["stage"] == SELECTED for p in flagged) == int(np.floor(0.5 * len(flagged) + 0.5))
    assert all(isinstance(s.answer, str) and s.task == SHORT for s in result.samples)
    assert result.report["n"] == 24 and result.report["noisy"] == len(changed)
    # Generated passes were stored per batch: 3 batches each of direct, of the greedy reasoning
    # response and of every sampled one, and the relabel passes.
    stored = [json.loads(line)["pass"] for line in (tmp_path / "experts.jsonl").read_text().splitlines()]
    assert stored.count("direct") == 3 and stored.count("reasoning") == 3 * (1 + config.reasoning_paths)
    assert "context" in stored
    # Every row records the share of the paths behind its answer: 1/3, 2/3 or 1, and None
    # where no path answered (the toy often writes options out instead of an answer line).
    for p in prov:
        share = p["reasoning_agreement"]
        assert (share is None) == (p["reasoning"] is None)
        assert share is None or any(np.isclose(share, j / 3) for j in (1, 2, 3)), share


def test_the_llm_checker_is_a_config_switch(toy, tmp_path):
    lm, train = toy
    result = denoise(train[:16], lm, DenoiseConfig(checker="llm", batch_size=16, max_new_tokens=24), out=tmp_path,
                     progress=False)
    batches = [json.loads(line) for line in (tmp_path / "experts.jsonl").read_text().splitlines()]
    verdicts = [r for b in batches if b["pass"] == "checker" for r in b["rows"]]
    assert len(verdicts) == 16 and all(len(r["logprobs"]) == 2 for r in verdicts)
    # A sample is flagged exactly when the model finds "Yes" (the label is noisy) likelier than "No".
    assert [p["noisy"] for p in result.provenance] == [r["logprobs"][0] > r["logprobs"][1] for r in verdicts]
    assert result.report["flagged"] == sum(p["noisy"] for p in result.provenance)


def test_the_papers_review_agent_is_a_config_switch(toy, full_run, tmp_path):
    lm, train = toy
    _, reference = full_run
    paper = DenoiseConfig.paper(batch_size=BATCH, max_new_tokens=40)
    assert (paper.review, paper.entropy_from, paper.reasoning_paths) == ("agent", "context", 1)
    result = denoise(train, lm, paper, out=tmp_path, progress=False)
    stored = [json.loads(line)["pass"] for line in (tmp_path / "experts.jsonl").read_text().splitlines()]
    n_batches = -(-N // BATCH)
    assert stored.count("review") == -(-sum(p["noisy"] for p in result.provenance) // BATCH)
    flagged = [p for p in result.provenance if p["noisy"]]
    assert all(p["relabel"] == p["review"] for p in flagged)  # the agent's answer is the new label
    # The paper's reasoning expert: one greedy response, no vote, and the checker over it.
    prov = result.provenance
    assert [p["noisy"] for p in prov] == detect_noise([p["given"] for p in prov], [p["direct"] for p in prov],
                                                      [p["reasoning"] for p in prov]).tolist()
    assert all("reasoning_agreement" not in p for p in prov)
    assert [p["noisy"] for p in prov] == [p["noisy"] for p in reference.provenance]  # the same detection
    assert stored.count("direct") == stored.count("reasoning") == n_batches


def test_the_self_consistent_reasoning_expert_votes_over_stored_sampled_paths(toy, tmp_path):
    from robustft.detect import run_reasoning_expert, self_consistency
    from robustft.experts import PassStore

    lm, train = toy
    few = train[:BATCH]
    store = PassStore(tmp_path)
    greedy = run_reasoning_expert(lm, few, paths=1, max_new_tokens=40, store=store, progress=False)
    assert greedy.agreement is None and store.computed == 1
    voted = run_reasoning_expert(lm, few, paths=4, max_new_tokens=40, store=store, progress=False)
    assert store.computed == 1 + 4 and store.reused == 1  # the greedy pass is shared
    # The vote is `self_consistency` over the stored paths, ties to the greedy answer.
    paths = [[r["answer"] for r in rows] for rows in _stored_passes(tmp_path)[1:]]
    answers, agreement, _ = self_consistency(paths, prefer=greedy.answers)
    assert voted.answers == answers and np.allclose(voted.agreement, agreement, equal_nan=True)
    assert len({tuple(p) for p in paths}) > 1  # sampling: the paths differ
    # Each shown response reached the voted answer.
    from robustft.prompts import extract_answer

    assert all(extract_answer(t, s) == a for t, s, a in zip(voted.texts, few, voted.answers) if a is not None)
    # Sampling is seeded: a fresh store gives the same paths.
    again = run_reasoning_expert(lm, few, paths=4, max_new_tokens=40, store=PassStore(tmp_path / "again"), progress=False)
    assert again.answers == voted.answers and again.texts == voted.texts


def _stored_passes(folder):
    """The stored rows of each batch in `folder`, in the order they were written."""
    lines = (folder / "experts.jsonl").read_text().splitlines()
    return [json.loads(line)["rows"] for line in lines]
