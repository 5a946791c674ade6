"""Scoring from hidden states and the lm_head weight (`linear_token_stats`) gives what the
logits path gives: option log-probs, entropies and response NLLs, by letter and by text."""
import numpy as np
import pytest

from robustft.finetune import score_responses
from robustft.inference import FUSED_ENV, fused_head, score_options
from tiny_lm import make_lm, make_samples


@pytest.mark.parametrize("by", ["letter", "text"])
def test_fused_head_scores_match_the_logits_path(monkeypatch, by):
    lm, samples = make_lm(), make_samples(12)
    monkeypatch.setenv(FUSED_ENV, "0")
    assert fused_head(lm) is None
    ref = score_options(lm, samples, by=by, batch_size=5, progress=False)
    nll_ref = score_responses(lm, samples, batch_size=5)
    monkeypatch.setenv(FUSED_ENV, "1")
    assert fused_head(lm) is not None
    got = score_options(lm, samples, by=by, batch_size=5, progress=False)
    nll = score_responses(lm, samples, batch_size=5)
    assert np.allclose(got.logprobs, ref.logprobs, atol=2e-4, rtol=0)
    assert np.allclose(got.entropy, ref.entropy, atol=2e-4, rtol=0, equal_nan=True)
    assert (got.n_tokens == ref.n_tokens).all() and (got.best() == ref.best()).all()
    assert np.allclose(nll, nll_ref, atol=2e-4, rtol=0)


def test_fused_head_is_off_on_cpu_by_default_and_for_post_processed_logits(monkeypatch):
    lm = make_lm()
    monkeypatch.delenv(FUSED_ENV, raising=False)
    assert fused_head(lm) is None  # CPU: the logits path (small vocabularies, no kernel to win)
    monkeypatch.setenv(FUSED_ENV, "1")
    lm.base_model.config.final_logit_softcapping = 30.0  # Gemma 2: logits are squashed after the head
    assert fused_head(lm) is None
