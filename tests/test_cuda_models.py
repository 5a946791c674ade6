"""On CUDA: a randomly initialised model of Qwen2.5-0.5B's architecture, in bf16 and in 4-bit
(bitsandbytes), scored through the Triton kernels, and a QLoRA step. Skipped without a GPU."""
import time

import numpy as np
import pytest
import torch

from robustft.finetune import finetune
from robustft.inference import generate, score_options
from robustft.kernels import BACKEND_ENV, resolve_backend
from robustft.model import load_model
from robustft.prompts import ANSWER_PREFIX, answer_line, direct_prompt
from robustft.sample import letter
from tiny_lm import make_samples, make_tokenizer

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (bf16 Qwen2.5-0.5B-shaped model, bitsandbytes 4-bit, Triton kernels)")

# Qwen/Qwen2.5-0.5B-Instruct's config.json, written out (no download).
QWEN25_05B = dict(
    vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
    num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
    rope_theta=1000000.0, rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=True,
    use_sliding_window=False, bos_token_id=151643, eos_token_id=151645,
)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN25_05B)).to(torch.bfloat16)
    folder = tmp_path_factory.mktemp("qwen25-05b-random")
    model.save_pretrained(folder)
    # The tiny chat tokenizer's ids all lie inside Qwen's 151,936-token vocabulary, so the
    # logits are full width ([B, 151936]) while the text stays small.
    make_tokenizer(chat=True).save_pretrained(folder)
    return folder


@pytest.fixture
def triton_calls(monkeypatch):
    """Count calls into the Triton kernels (fails the test if triton is not installed)."""
    triton_ops = pytest.importorskip("robustft.kernels.triton_ops")
    calls = []
    for name in ("token_stats_triton", "linear_token_stats_triton"):
        if hasattr(triton_ops, name):
            orig = getattr(triton_ops, name)
            monkeypatch.setattr(triton_ops, name,
                                lambda *a, _orig=orig, **k: (calls.append(1), _orig(*a, **k))[1])
    return calls


def _brute(lm, samples, by):
    """float64 log-softmax of the full (untruncated) logits, one unpadded sequence at a time."""
    out = np.full((len(samples), 4), -np.inf)
    for i, s in enumerate(samples):
        head = lm.render(direct_prompt(s)) + ANSWER_PREFIX
        for k in range(len(s.options)):
            (c, x), = lm.encode_pairs([head], [answer_line(s, letter(k), by=by)[len(ANSWER_PREFIX):]])
            with torch.no_grad():
                logits = lm.model(input_ids=torch.tensor([c + x], device=lm.device)).logits[0]
            logp = torch.log_softmax(logits.double(), -1)
            out[i, k] = sum(logp[len(c) - 1 + j, t].item() for j, t in enumerate(x))
    return out


@pytest.mark.parametrize("by", ["letter", "text"])
def test_bf16_scoring_through_triton(qwen_dir, triton_calls, monkeypatch, by):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert resolve_backend(None, torch.device("cuda")) == "triton"
    lm = load_model(str(qwen_dir))
    assert lm.model.dtype == torch.bfloat16 and lm.device.type == "cuda" and lm.answer_by == "letter"
    samples = make_samples(24)
    got = score_options(lm, samples, by=by, batch_size=8, progress=False)
    assert triton_calls, "option scoring did not go through the Triton kernels"
    assert np.isfinite(got.logprobs).all()
    np.testing.assert_allclose(got.logprobs[:6], _brute(lm, samples[:6], by), atol=5e-2, rtol=0)
    # Same logits, PyTorch reduction: the two backends agree to float32 accumulation.
    monkeypatch.setenv(BACKEND_ENV, "torch")
    ref = score_options(lm, samples, by=by, batch_size=8, progress=False)
    np.testing.assert_allclose(got.logprobs, ref.logprobs, atol=2e-3, rtol=0)
    np.testing.assert_allclose(got.entropy, ref.entropy, atol=2e-3, rtol=0)
    # Batched == one at a time (left padding) within bf16 noise.
    one = score_options(lm, samples[:8], by=by, batch_size=1, progress=False)
    np.testing.assert_allclose(got.logprobs[:8], one.logprobs, atol=5e-2, rtol=0)


def test_bf16_generation_and_timing(qwen_dir):
    lm = load_model(str(qwen_dir))
    prompts = [direct_prompt(s) for s in make_samples(16)]
    batched = generate(lm, prompts, max_new_tokens=8, batch_size=16, progress=False)
    single = generate(lm, prompts[:4], max_new_tokens=8, batch_size=1, progress=False)
    # A random model's next-token distribution is nearly flat, so bf16 noise from padding
    # may flip the greedy choice; the first step's distribution must agree all the same.
    for g, h in zip(batched, single):
        assert g.entropy[0] == pytest.approx(h.entropy[0], abs=2e-2)
        assert g.logprobs[0] == pytest.approx(h.logprobs[0], abs=5e-2)
    samples = make_samples(40) * 25  # 1,000 questions
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    score_options(lm, samples, batch_size=64, progress=False)
    torch.cuda.synchronize()
    print(f"\nbf16 Qwen2.5-0.5B-shaped, 1000 questions by letter: {time.perf_counter() - t0:.2f} s")


def test_4bit_scoring_and_qlora_step(qwen_dir, triton_calls):
    pytest.importorskip("bitsandbytes")
    lm4 = load_model(str(qwen_dir), quantize="4bit")
    assert lm4.is_quantized
    samples = make_samples(16)
    got = score_options(lm4, samples, by="text", batch_size=8, progress=False)
    assert triton_calls and np.isfinite(got.logprobs).all()
    lm16 = load_model(str(qwen_dir))
    bf16 = score_options(lm16, samples, by="text", batch_size=8, progress=False)
    # The two loads of one folder keep their stored passes apart (the run store's key).
    assert lm4.fingerprint != lm16.fingerprint
    # NF4 rounding of random weights moves the scores a little, not wholesale.
    assert np.abs(got.logprobs - bf16.logprobs).mean() < 0.5
    tuned = finetune(lm4, samples[:8], epochs=1, batch_size=4, lr=1e-4, inplace=True,
                     gradient_checkpointing=True, progress=False)
    assert len(tuned.info["train_loss"]) == 2 and np.isfinite(tuned.info["train_loss"]).all()
    assert any("lora_A" in n for n, p in tuned.model.named_parameters() if p.requires_grad)


def test_auto_is_4bit_on_cuda_and_finetune_trains_a_fresh_copy(qwen_dir):
    """The README's call: quantize="auto" is 4-bit here, and finetune without inplace loads a
    fresh 4-bit base (with a warning) and leaves the caller's model without LoRA layers."""
    pytest.importorskip("bitsandbytes")
    lm = load_model(str(qwen_dir), quantize="auto")
    assert lm.is_quantized
    samples = make_samples(8)
    with pytest.warns(UserWarning, match="quantized: loading a fresh copy"):
        tuned = finetune(lm, samples, epochs=1, batch_size=4, lr=1e-4, progress=False)
    assert tuned.base_model is not lm.model and not hasattr(lm.model, "peft_config")
    assert len(tuned.info["train_loss"]) == 2 and np.isfinite(tuned.info["train_loss"]).all()
