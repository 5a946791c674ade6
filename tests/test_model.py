"""load_model and the LanguageModel conventions (rendering, tokenisation, defaults)."""
import json
import types

import numpy as np
import pytest
import torch

from robustft.inference import score_options
from robustft.model import LanguageModel, load_model
from robustft.prompts import direct_prompt
from tiny_lm import make_lm, make_model, make_samples, make_tokenizer

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error path")


@no_cuda
@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_quantize_on_cpu_is_a_clear_error(quantize, tmp_path):
    with pytest.raises(RuntimeError, match="CUDA"):
        load_model(str(tmp_path), quantize=quantize)


def test_unknown_quantize_and_answer_by_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="quantize"):
        load_model(str(tmp_path), quantize="3bit")
    tok = make_tokenizer()
    with pytest.raises(ValueError, match="answer_by"):
        LanguageModel(make_model(len(tok)), tok, answer_by="index")


def test_local_folder_round_trip(tmp_path):
    lm = make_lm(chat=True)
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.chat and loaded.answer_by == "letter" and loaded.model.dtype == torch.float32
    ids = torch.tensor(lm._encode([lm.render("Question: What color is the cat?")]))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, lm.model(ids).logits)
    samples = make_samples(4)
    np.testing.assert_allclose(score_options(loaded, samples, progress=False).logprobs,
                               score_options(lm, samples, progress=False).logprobs, atol=1e-6)


def test_remote_code_is_not_run_unless_asked(tmp_path):
    """A checkpoint that ships its own modelling code is refused with trust_remote_code off,
    and that code is never imported."""
    lm = make_lm()
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    marker = tmp_path / "remote_code_ran"
    (tmp_path / "modeling_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil-llama'\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "evil-llama"
    cfg["auto_map"] = {"AutoConfig": "modeling_evil.EvilConfig",
                      "AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="trust_remote_code|evil-llama"):
        load_model(str(tmp_path), device="cpu")
    assert not marker.exists()
    # Asked for explicitly, the shipped code does run.
    evil = load_model(str(tmp_path), device="cpu", trust_remote_code=True)
    assert marker.exists() and type(evil.model).__name__ == "EvilModel"


def test_defaults_follow_the_chat_template():
    plain, chat = make_lm(), make_lm(chat=True)
    assert (plain.chat, plain.answer_by) == (False, "text")
    assert (chat.chat, chat.answer_by) == (True, "letter")
    assert plain.tokenizer.padding_side == "left" and plain.tokenizer.pad_token == "<pad>"
    # The raw prompt is used as is; the chat prompt is the user turn plus the assistant header.
    p = direct_prompt(make_samples(1)[0])
    assert plain.render(p) == p
    assert chat.render(p) == f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n"
    assert chat.render_response(p, "Answer: B") == "Answer: B<|im_end|>\n"
    assert chat.tokenizer.convert_tokens_to_ids("<|im_end|>") in chat.eos_token_ids
    assert plain.max_length == 512


def test_missing_pad_token_falls_back_to_eos():
    tok = make_tokenizer()
    tok.pad_token = None
    lm = LanguageModel(make_model(len(tok)), tok)
    assert lm.tokenizer.pad_token_id == lm.tokenizer.eos_token_id


def test_toy_model_through_the_same_interface():
    lm = load_model("toy")
    assert lm.name == "toy" and lm.answer_by == "text" and not lm.chat
    with pytest.raises(ValueError, match="quantize"):
        load_model("toy", quantize="4bit")


def test_quantize_auto_is_full_precision_without_cuda_and_for_the_toy():
    lm = load_model("toy", quantize="auto")
    assert not lm.is_quantized and next(lm.model.parameters()).dtype == torch.float32
    assert lm.info["load_args"]["quantize"] == "auto"


def test_finetune_of_a_quantized_base_trains_a_freshly_loaded_copy(monkeypatch):
    """A 4-bit model cannot be deep-copied: `finetune` without inplace loads a fresh base from
    the recorded load arguments (checked here on CPU with the toy model marked quantized)."""
    from robustft.finetune import finetune
    from robustft.model import copy_model
    from robustft.offline import make_benchmark

    lm = load_model("toy", seed=0)
    # The Trainer asks the quantizer whether it can be trained, as bitsandbytes' can.
    quantizer = types.SimpleNamespace(is_trainable=True, is_qat_trainable=False)
    monkeypatch.setattr(type(lm.model), "hf_quantizer", quantizer, raising=False)
    assert lm.is_quantized
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    with pytest.warns(UserWarning, match="quantized: loading a fresh copy"):
        tuned = finetune(lm, make_benchmark(seed=0).train[:32], epochs=1, progress=False)
    assert tuned.base_model is not lm.model and len(tuned.info["train_loss"]) == 2
    assert not hasattr(lm.model, "peft_config")  # the caller's model is untouched
    assert all(torch.equal(v, lm.model.state_dict()[k]) for k, v in before.items())
    # Without recorded load arguments there is nothing to reload from: a clear error.
    lm.info.pop("load_args")
    with pytest.raises(ValueError, match="inplace=True"):
        copy_model(lm)


def test_fingerprint_tells_apart_the_loads_and_libraries_that_change_outputs(tmp_path, monkeypatch):
    """The key of stored expert passes (`LanguageModel.fingerprint`): one model saved to a
    folder and loaded in float32, in bfloat16, and as bitsandbytes would load it in 4 bits
    (its config then carries the quantization config: the only part of a 4-bit load this
    CPU can build), with an adapter, and under another transformers version."""
    import transformers
    from transformers import BitsAndBytesConfig

    lm = make_lm(chat=True)
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    fp32 = load_model(str(tmp_path), device="cpu")
    assert fp32.fingerprint == load_model(str(tmp_path), device="cpu").fingerprint  # stable
    bf16 = load_model(str(tmp_path), device="cpu", dtype=torch.bfloat16)
    four = load_model(str(tmp_path), device="cpu", dtype=torch.bfloat16)
    four.model.config.quantization_config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16)
    revision = load_model(str(tmp_path), device="cpu", revision="main")
    keys = [fp32.fingerprint, bf16.fingerprint, four.fingerprint, revision.fingerprint]
    assert len(set(keys)) == 4, keys
    # Another transformers (or torch, peft, robustft) version: another key.
    monkeypatch.setattr(transformers, "__version__", "0.0.1")
    assert fp32.fingerprint != keys[0]
    monkeypatch.undo()
    assert fp32.fingerprint == keys[0]
    # An adapter's weights are part of the key: two adapters, two keys.
    from robustft.finetune import finetune

    samples = make_samples(8)
    a = finetune(fp32, samples, epochs=1, batch_size=4, seed=0, progress=False)
    b = finetune(fp32, samples, epochs=1, batch_size=4, seed=1, progress=False)
    assert len({a.fingerprint, b.fingerprint, fp32.fingerprint}) == 3
    a.model.save_pretrained(tmp_path / "adapter")
    reloaded = load_model(str(tmp_path), device="cpu", adapter=tmp_path / "adapter")
    assert reloaded.info["adapter"] == a.info["adapter"]
