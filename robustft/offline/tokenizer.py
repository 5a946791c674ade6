"""The toy model's tokenizer: a byte-level BPE built offline with `tokenizers`.

Byte-level BPE is what GPT-2, Llama 3 and Qwen use: any string round-trips exactly through
encode/decode, so `extract_answer` reads the toy model's generations like a real model's.
It is trained on the domain's own text with no merge limit, so every word of the domain —
each person, house, city and trade — is a single token (with its leading space). That
makes copying a name from the question into a generated reasoning step one lookup for a
tiny model, and option scoring one next-token distribution per question.
"""
from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from .. import prompts

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]


def prompt_texts() -> list[str]:
    """Every fixed string of `robustft.prompts`, so the prompts' words are whole tokens too."""
    return [prompts.DIRECT_INSTRUCTION, prompts.REASONING_INSTRUCTION, prompts.CONTEXT_INSTRUCTION,
            prompts.REVIEW_INSTRUCTION, prompts.CHECKER_INSTRUCTION,
            "Question: Answer: Expert 1 (step by step): Expert 2 (from similar examples): "
            "Given label: Noisy label: Yes No", "A. B. C. D. E. F. G. H."]


def build_tokenizer(texts: Iterable[str], words: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` (plus `words`, each as " word") until every word in
    them is a single token; wrap it as a `PreTrainedTokenizerFast` with pad/bos/eos.

    Encoding prepends <s> (as Llama tokenizers do); eos is </s>, pad is <pad> (id 0).
    Deterministic: the same texts give the same vocabulary and ids.
    """
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1_000_000, min_frequency=1, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    corpus = [*prompt_texts(), *texts, " ".join(f" {w}" for w in words)]
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, unk_token=UNK, model_max_length=512)
