"""LoRA SFT: the loss mask, the effect of training, seeding, accumulation, adapter files."""
import numpy as np
import pytest
import torch

from robustft.evaluate import evaluate
from robustft.finetune import finetune, score_responses, training_examples
from robustft.inference import IGNORE, predict_letters, score_options
from robustft.model import load_model
from robustft.prompts import answer_line, direct_prompt
from tiny_lm import make_lm, make_samples

FAST = dict(epochs=30, lr=1e-2, batch_size=4, lora_r=8, lora_dropout=0.0, progress=False)


@pytest.fixture(scope="module")
def samples():
    return make_samples(12)


@pytest.mark.parametrize("chat", [False, True])
def test_loss_mask_covers_the_response_only(samples, chat):
    lm = make_lm(chat=chat)
    for s, (ids, labels) in zip(samples, training_examples(lm, samples, by="letter")):
        prompt_ids = lm._encode([lm.render(direct_prompt(s))])[0]
        assert ids[:len(prompt_ids)] == prompt_ids  # the inference prompt, token for token
        assert labels[:len(prompt_ids)] == [IGNORE] * len(prompt_ids)
        response = [t for t in labels if t != IGNORE]
        assert response == ids[len(prompt_ids):]
        answer = lm.tokenizer(answer_line(s), add_special_tokens=False)["input_ids"]
        end = lm.tokenizer.convert_tokens_to_ids("<|im_end|>" if chat else "</s>")
        # "Answer: B" then the end marker (chat: "<|im_end|>\n"; raw: "</s>").
        assert response[:len(answer)] == answer and response[len(answer)] == end
        assert len(response) == len(answer) + (2 if chat else 1)


@pytest.mark.parametrize("by", ["letter", "text"])
def test_finetune_learns_the_labels(samples, by):
    lm = make_lm()
    nll_before = score_responses(lm, samples, by=by)
    acc_before = evaluate(lm, samples, by=by, progress=False).accuracy
    tuned = finetune(lm, samples, by=by, **FAST)
    nll_after = score_responses(tuned, samples, by=by)
    assert nll_after.mean() < 0.25 * nll_before.mean()
    assert evaluate(tuned, samples, by=by, progress=False).accuracy == 1.0
    assert acc_before < 0.5
    losses = tuned.info["train_loss"]
    assert len(losses) == 30 * 3 and np.mean(losses[-5:]) < 0.2 * losses[0]
    # The base model is untouched (the LoRA layers went into a copy).
    assert evaluate(lm, samples, by=by, progress=False).accuracy == acc_before
    np.testing.assert_allclose(score_responses(lm, samples, by=by), nll_before, atol=1e-6)


def test_the_tuned_model_shares_the_base_weights_and_trains_as_a_full_copy_would(samples):
    """No second set of weights: the tuned model's frozen base tensors are lm's own, lm keeps
    its modules, and training is the same as on a deep copy."""
    from robustft.model import copy_model

    lm = make_lm()
    flags = [p.requires_grad for p in lm.model.parameters()]
    kw = dict(FAST, epochs=3)
    tuned = finetune(lm, samples, **kw)
    base = dict(lm.model.named_parameters())
    shared = {n: p for n, p in tuned.model.named_parameters() if "lora_" not in n}
    assert len(shared) == len(base) > 0
    assert {p.data_ptr() for p in shared.values()} == {p.data_ptr() for p in base.values()}
    assert not any("lora_" in n for n, _ in lm.model.named_modules())
    # One flag per shared tensor: frozen, as the tuned model's base must be.
    assert any(flags) and not any(p.requires_grad for p in lm.model.parameters())
    full = finetune(copy_model(make_lm()), samples, inplace=True, **kw)
    assert tuned.info["train_loss"] == full.info["train_loss"]
    assert tuned.info["adapter"] == full.info["adapter"]


def test_training_on_noisy_labels_teaches_them(samples):
    """The labels, not the truth, are learned: SFT on flipped answers predicts the flips."""
    flipped = [s.with_answer("ABCD"[("ABCD".index(s.answer) + 1) % 4]) for s in samples]
    tuned = finetune(make_lm(), flipped, by="text", **FAST)
    preds = predict_letters(score_options(tuned, samples, progress=False))
    assert preds == [s.answer for s in flipped]


def test_finetune_is_seeded(samples):
    kw = dict(FAST, epochs=3, lora_dropout=0.1)
    a = finetune(make_lm(), samples, seed=1, **kw).info["train_loss"]
    b = finetune(make_lm(), samples, seed=1, **kw).info["train_loss"]
    c = finetune(make_lm(), samples, seed=2, **kw).info["train_loss"]
    assert a == b and a != c


def test_gradient_accumulation_matches_one_big_batch(samples):
    """4 x 2 accumulated == 8 in one batch: the loss is averaged over all response tokens."""
    kw = dict(FAST, epochs=1, warmup_ratio=0.0)
    eight = samples[:8]
    big = finetune(make_lm(), eight, batch_size=8, grad_accum=1, **{k: v for k, v in kw.items() if k != "batch_size"})
    acc = finetune(make_lm(), eight, batch_size=4, grad_accum=2, **{k: v for k, v in kw.items() if k != "batch_size"})
    assert big.info["train_loss"] == pytest.approx(acc.info["train_loss"], abs=1e-5)
    for (n1, p1), (n2, p2) in zip(big.model.named_parameters(), acc.model.named_parameters()):
        if p1.requires_grad:
            torch.testing.assert_close(p1, p2, atol=1e-5, rtol=1e-4, msg=n1)


def test_adapter_is_saved_and_reloads(samples, tmp_path):
    lm = make_lm()
    lm.model.save_pretrained(tmp_path / "base")
    lm.tokenizer.save_pretrained(tmp_path / "base")
    tuned = finetune(lm, samples, output_dir=tmp_path / "adapter", **dict(FAST, epochs=2))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    reloaded = load_model(str(tmp_path / "base"), adapter=tmp_path / "adapter", device="cpu")
    a = score_options(tuned, samples, by="text", progress=False).logprobs
    b = score_options(reloaded, samples, by="text", progress=False).logprobs
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert reloaded.answer_by == "text"


def test_lora_targets_attention_and_mlp(samples):
    tuned = finetune(make_lm(), samples[:4], **dict(FAST, epochs=1))
    names = {n for n, p in tuned.model.named_parameters() if p.requires_grad}
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert any(f"{proj}.lora_A" in n for n in names), proj
    assert all("lora_" in n for n in names)  # the base weights stay frozen


def test_gradient_checkpointing_gives_the_same_training(samples):
    kw = dict(FAST, epochs=2)
    plain = finetune(make_lm(), samples, **kw).info["train_loss"]
    ckpt = finetune(make_lm(), samples, gradient_checkpointing=True, **kw).info["train_loss"]
    np.testing.assert_allclose(ckpt, plain, atol=1e-5)


def test_checkpointing_is_on_by_default_only_for_large_activations(samples, monkeypatch):
    import sys

    ft = sys.modules["robustft.finetune"]
    kw = dict(FAST, epochs=2)

    def checkpointed(tuned):
        return any(getattr(m, "gradient_checkpointing", False) for m in tuned.model.modules())

    small = finetune(make_lm(), samples, **kw)  # a tiny model: KBs of activations
    assert not checkpointed(small)
    monkeypatch.setattr(ft, "CHECKPOINT_ABOVE_BYTES", 0)
    large = finetune(make_lm(), samples, **kw)
    assert checkpointed(large)
    np.testing.assert_allclose(large.info["train_loss"], small.info["train_loss"], atol=1e-5)
    assert not checkpointed(finetune(make_lm(), samples, gradient_checkpointing=False, **kw))


def test_custom_responses_are_the_targets(samples):
    lm = make_lm()
    responses = [f"The {s.options[0]} one.\n{answer_line(s)}" for s in samples]
    for r, (ids, labels) in zip(responses, training_examples(lm, samples, responses=responses)):
        target = [t for t in labels if t != IGNORE]
        assert lm.tokenizer.decode(target) == r + "</s>"


def test_a_tuned_model_is_not_tuned_again(samples):
    tuned = finetune(make_lm(), samples[:4], **dict(FAST, epochs=1))
    with pytest.raises(ValueError, match="merge"):
        finetune(tuned, samples[:4], **dict(FAST, epochs=1))


def test_schedule_is_warmup_then_cosine_over_fractional_epochs(samples):
    """10/3 epochs of 12 examples at batch 4: ceil(10) = 10 optimizer steps; warm-up over
    ceil(0.2 x 10) = 2 steps from 0, then cosine decay towards 0 (the Trainer's "cosine")."""
    import math

    kw = dict(FAST, epochs=10 / 3, lr=1e-2, warmup_ratio=0.2)
    tuned = finetune(make_lm(), samples, **kw)
    assert len(tuned.info["train_loss"]) == 10 and tuned.info["trainer"]["steps"] == 10
    expected = [0.0, 0.5] + [0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 10)]
    np.testing.assert_allclose(tuned.info["learning_rate"], [1e-2 * f for f in expected], atol=1e-9)
    assert tuned.info["trainer"] == dict(world_size=1, wrapper=type(tuned.model).__name__,
                                         distributed_type="NO", global_batch=4, steps=10)


def test_a_run_writes_only_the_adapter_and_prints_nothing(samples, tmp_path, capfd):
    """No Trainer checkpoints, logs or training arguments in output_dir, and no output
    with progress=False (the Trainer would print a dict of metrics)."""
    finetune(make_lm(), samples[:8], output_dir=tmp_path / "adapter", **dict(FAST, epochs=1))
    names = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert names == ["README.md", "adapter_config.json", "adapter_model.safetensors"], names
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)


def test_warmup_ratio_is_checked(samples):
    with pytest.raises(ValueError, match=r"warmup_ratio=1.5.*\[0, 1\)"):
        finetune(make_lm(), samples[:4], **dict(FAST, epochs=1, warmup_ratio=1.5))
