"""A tiny random Llama and a byte-level BPE tokenizer built in-process, for model-layer tests.

No downloads: the tokenizer is trained on the prompt texts of the test questions, the model
is randomly initialised from a config.
"""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from robustft import prompts
from robustft.model import LanguageModel
from robustft.sample import LETTERS, Sample

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

COLORS = ["red", "green", "blue", "yellow", "black", "white", "purple", "orange"]
ANIMALS = ["cat", "dog", "fox", "owl", "bee", "cow", "eel", "yak", "ant", "bat", "elk", "emu"]


def make_samples(n: int = 12, n_options: int = 4, seed: int = 0) -> list[Sample]:
    """n questions "What color is the <animal>?" with random colour options and answers."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        opts = [COLORS[j] for j in torch.randperm(len(COLORS), generator=g)[:n_options].tolist()]
        # Some options are two words, so text scoring sees multi-token options.
        if i % 3 == 0:
            opts[1] = f"light {opts[1]}"
        ans = LETTERS[int(torch.randint(n_options, (1,), generator=g))]
        out.append(Sample(id=f"q{i}", question=f"What color is the {ANIMALS[i % len(ANIMALS)]} {i}?",
                          options=tuple(opts), answer=ans,
                          category=["zoo", "farm", "wild"][i % 3]))
    return out


def _corpus() -> list[str]:
    texts = [prompts.DIRECT_INSTRUCTION, prompts.REASONING_INSTRUCTION, prompts.CONTEXT_INSTRUCTION,
             prompts.REVIEW_INSTRUCTION, prompts.CHECKER_INSTRUCTION,
             " ".join(LETTERS), " ".join(COLORS), " ".join(ANIMALS)]
    samples = make_samples(40)
    texts += [prompts.direct_prompt(s) + prompts.answer_line(s) for s in samples]
    texts += [prompts.direct_prompt(s) + prompts.answer_line(s, by="text") for s in samples]
    return texts


def make_tokenizer(chat: bool = False, vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """A byte-level BPE (as GPT-2/Qwen/Llama 3 use) trained on the prompt texts: every string
    round-trips exactly through encode/decode."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    if chat:
        fast.chat_template = CHAT_TEMPLATE
        fast.eos_token = "<|im_end|>"
    return fast


def make_model(vocab_size: int, seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
               pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    cfg.update(overrides)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    # A larger init than the default 0.02 so the random model's distributions are far from
    # uniform and comparisons between options are meaningful.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model.eval()


def make_lm(chat: bool = False, answer_by: str | None = None, seed: int = 0) -> LanguageModel:
    tok = make_tokenizer(chat)
    return LanguageModel(make_model(len(tok), seed), tok, answer_by=answer_by)
