"""The real model of the book (SmolLM2-135M-Instruct, `load_model("smollm2")`) on the paper's
own ARC files: the chain reads its answers, a 16-sample denoise runs end to end with its
warnings and parse rates, and a fine-tuning step trains its LoRA adapter.

The GGUF loading itself (cache, chat template, letter tokens) is tested in test_gguf.py; this
file is the chain on top of it. Budget: about a minute of CI after the model is converted."""
import math

import numpy as np
import pytest

import robustft
from robustft.denoise import DenoiseConfig


@pytest.fixture(scope="module")
def smol():
    return robustft.load_model("smollm2")


@pytest.fixture
def arc(official):
    return robustft.load_official(official / "arc", noise=30)


def test_a_16_sample_denoise_reads_real_answers_and_reports_on_itself(smol, arc, tmp_path):
    train = arc.train[:16]
    result = robustft.denoise(train, smol, DenoiseConfig(batch_size=16), out=tmp_path / "run", progress=False)
    rates = result.stats["parse_rate"]
    assert rates["direct"] == 1.0  # multiple choice is scored: every answer is an option
    # The reader gets most answers from the replies themselves; the answer step the rest, so
    # no sample is flagged only because its reply could not be read.
    assert 0.6 <= rates["reasoning"] <= 1.0, rates
    stepped = result.stats["answer_step"].get("reasoning", 0)
    assert stepped == sum(bool(p.get("reasoning_extracted")) for p in result.provenance)
    assert stepped <= 16 * (1 - rates["reasoning"]) + 1e-9
    assert not any("unread" in p for p in result.provenance)
    assert "unreadable" not in [w["check"] for w in result.stats["warnings"]]
    assert len(result.provenance) == 16 and all(p["stage"] in ("clean", "selected", "dropped") for p in result.provenance)
    assert all(p["direct"] in "ABCD" for p in result.provenance)
    # Every check ran and each warning names its check.
    assert all(set(w) == {"check", "message"} for w in result.stats["warnings"])
    r = result.report
    assert r["n"] == 16 and r["noisy"] == sum(s.is_noisy for s in train)
    assert 0 <= r["label_accuracy"] <= 1 and r["kept"] == len(result.samples)
    # A second run resumes from the stored passes and gives the same labels.
    again = robustft.denoise(train, smol, DenoiseConfig(batch_size=16), out=tmp_path / "run", progress=False)
    assert again.stats["computed_batches"] == 0 and [s.answer for s in again.samples] == [s.answer for s in result.samples]


def test_one_finetune_step_trains_the_adapter_and_changes_the_scores(smol, arc):
    samples = arc.train[:8]
    before = robustft.score_options(smol, samples, progress=False)
    tuned = robustft.finetune(smol, samples, epochs=1, batch_size=8, lr=1e-3, progress=False)
    assert len(tuned.info["train_loss"]) == 1 and math.isfinite(tuned.info["train_loss"][0])
    after = robustft.score_options(tuned, samples, progress=False)
    assert np.abs(after.logprobs - before.logprobs).max() > 1e-3  # the adapter moved the scores
    # The base model is untouched and keeps its scores.
    np.testing.assert_allclose(robustft.score_options(smol, samples, progress=False).logprobs, before.logprobs,
                               atol=1e-5)
