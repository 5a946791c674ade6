"""LoRA supervised fine-tuning with the loss on the response tokens only.

A training example is the inference prompt, rendered exactly as at inference
(`LanguageModel.render`), followed by the response ``Answer: X`` and the end-of-turn / eos
token; the labels are -100 on the prompt, so only the response is learned. Rows are
left-padded like inference batches, so the response sits at the end of every row and only
its positions go through the lm_head (`logits_to_keep`) — the loss never builds [B, T, V]
logits for a 150k vocabulary.

On CUDA, a model loaded with ``quantize="4bit"`` is trained as QLoRA (the 4-bit base is
frozen, the LoRA weights train in bf16/fp32).
"""
from __future__ import annotations

import math
import os
import random
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .inference import IGNORE, left_pad, length_sorted_batches, response_logits, response_stats_of
from .model import LanguageModel, adapter_hash, copy_model
from .progress import progress_bar
from .prompts import answer_line, direct_prompt
from .sample import Sample

# The LoRA SFT settings for a real model (the `finetune` defaults; the CLI's and the chapters'
# GPU branch too): the paper fine-tunes with LoRA through LLaMA-Factory. The toy model of the
# offline benchmark has its own, `robustft.offline.TOY_SFT`.
SFT = dict(epochs=3, lr=2e-4, batch_size=16, lora_r=16, lora_alpha=32)

# Attention and MLP projections of Llama/Qwen/Mistral-style decoders.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def training_examples(lm: LanguageModel, samples: Sequence[Sample],
                      prompts: Sequence[str] | None = None,
                      responses: Sequence[str] | None = None,
                      by: str | None = None) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels of each training example.

    Args:
        samples: the SFT samples; their given `answer` is the target.
        prompts: prompt texts; default `direct_prompt` (the inference prompt of `evaluate`).
        responses: target responses; default `answer_line(sample, by=by)`, i.e.
            ``Answer: B`` or ``Answer: <option text>``.
        by: "letter" or "text"; default `lm.answer_by`.

    Returns a list of (input_ids, labels), labels -100 on the prompt tokens and equal to the
    input ids on the response tokens (end-of-turn / eos included).
    """
    by = by or lm.answer_by
    prompts = [direct_prompt(s) for s in samples] if prompts is None else list(prompts)
    if responses is None:
        responses = [answer_line(s, by=by) for s in samples]
    if not len(prompts) == len(responses) == len(samples):
        raise ValueError("samples, prompts and responses differ in length")
    contexts = [lm.render(p) for p in prompts]
    targets = [lm.render_response(p, r) for p, r in zip(prompts, responses)]
    out = []
    for s, (c, x) in zip(samples, lm.encode_pairs(contexts, targets, add_eos=True)):
        lm.check_length(len(c) + len(x), s.id)
        out.append((c + x, [IGNORE] * len(c) + x))
    return out


def _collate(lm: LanguageModel, examples):
    """Left-padded batch and the labels of its last `keep` positions ([B, keep])."""
    ids, mask, pos = left_pad([e[0] for e in examples], lm.tokenizer.pad_token_id, lm.device)
    n_resp = [len(e[1]) - next(i for i, t in enumerate(e[1]) if t != IGNORE) for e in examples]
    keep = max(n_resp) + 1
    labels = torch.full((len(examples), keep), IGNORE, dtype=torch.long, device=ids.device)
    for b, m in enumerate(n_resp):
        labels[b, keep - m:] = ids[b, -m:]
    return ids, mask, pos, labels, keep


@torch.inference_mode()
def score_responses(lm: LanguageModel, samples: Sequence[Sample], prompts=None, responses=None,
                    by: str | None = None, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """[n] float64 response entropy (the paper's mean token NLL) of each sample's target
    response given its prompt, teacher-forced: the training loss per sample. Prompts and
    responses default as in `training_examples` (the direct prompt, ``Answer: X``)."""
    examples = training_examples(lm, samples, prompts, responses, by)
    out = np.full(len(examples), np.nan)
    for batch in progress_bar(length_sorted_batches([len(e[0]) for e in examples], batch_size),
                              desc="scoring responses", enabled=progress):
        ids, mask, pos, labels, keep = _collate(lm, [examples[j] for j in batch])
        st = response_stats_of(lm, ids, mask, pos, labels, keep)
        out[batch] = st.response_entropy.double().cpu().numpy()
    return out


def _lora_model(lm: LanguageModel, r: int, alpha: int, dropout: float, target_modules,
                gradient_checkpointing: bool):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    base = lm.model
    if lm.is_quantized:  # QLoRA: freeze the 4-bit base, norms in fp32
        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gradient_checkpointing:
        # transformers 5 renamed it (the old name warns); older versions only have the old one.
        enable = getattr(base, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if target_modules is None:
        names = {n.rsplit(".", 1)[-1] for n, _ in base.named_modules()}
        target_modules = [t for t in LORA_TARGETS if t in names] or "all-linear"
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                        target_modules=target_modules, task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        # peft reads an attribute that transformers 5 renamed; nothing for a user to do.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        return get_peft_model(base, config)


# Bytes of activations kept per token, layer and hidden unit for the backward pass (float32:
# 4 x this many values): measured on SmolLM2-135M with LoRA, 59 MB per layer for a batch of
# 8 x 174 tokens, H = 576.
ACTIVATION_VALUES_PER_HIDDEN = 18
# Above this estimate `finetune` checkpoints activations by default.
CHECKPOINT_ABOVE_BYTES = 1 << 30


def _activation_bytes(lm: LanguageModel, examples, batch_size: int) -> int:
    """Estimated bytes of the activations one batch keeps for the backward pass without
    gradient checkpointing: batch_size x the longest example x hidden size x layers x
    ACTIVATION_VALUES_PER_HIDDEN values of the model's dtype."""
    cfg = lm.base_model.config
    hidden = getattr(cfg, "hidden_size", 0) or 0
    layers = getattr(cfg, "num_hidden_layers", 0) or 0
    dtype = getattr(lm.base_model, "dtype", torch.float32)
    value_bytes = 4 if dtype == torch.float32 else 2
    longest = max((len(e[0]) for e in examples), default=0)
    return batch_size * longest * hidden * layers * ACTIVATION_VALUES_PER_HIDDEN * value_bytes


def finetune(lm: LanguageModel, samples: Sequence[Sample], *,
             prompts: Sequence[str] | None = None, responses: Sequence[str] | None = None,
             by: str | None = None, output_dir: str | os.PathLike | None = None,
             epochs: float = SFT["epochs"], lr: float = SFT["lr"], batch_size: int = SFT["batch_size"],
             grad_accum: int = 1, lora_r: int = SFT["lora_r"], lora_alpha: int = SFT["lora_alpha"],
             lora_dropout: float = 0.0,
             target_modules: Sequence[str] | None = None, weight_decay: float = 0.0,
             warmup_ratio: float = 0.03, max_grad_norm: float = 1.0, seed: int = 0,
             gradient_checkpointing: bool | None = None, inplace: bool = False,
             progress: bool = True) -> LanguageModel:
    """LoRA SFT of `lm` on `samples` (their given answers are the targets).

    Args:
        lm: the base model; left untouched unless `inplace` (the LoRA layers go into a copy).
            A 4-bit/8-bit model cannot be deep-copied: without `inplace` a fresh copy is
            loaded from the arguments `load_model` recorded (a second base in GPU memory,
            with a warning); inplace=True trains `lm` itself (QLoRA, half the memory).
        samples: the training set.
        prompts, responses, by: see `training_examples` (defaults: the direct prompt, the
            ``Answer: X`` response in `lm.answer_by` form).
        output_dir: where to save the adapter (``adapter_model.safetensors`` +
            ``adapter_config.json``); reload with ``load_model(base, adapter=output_dir)``.
        epochs: passes over the data (fractions allowed).
        lr, weight_decay, warmup_ratio, max_grad_norm: AdamW with linear warm-up then cosine
            decay to 0, gradient clipping.
        batch_size, grad_accum: examples per forward pass, passes per optimizer step. The
            loss is the mean over all response tokens of the accumulated batch.
        lora_r, lora_alpha, lora_dropout, target_modules: the LoRA adapter (default targets:
            the attention and MLP projections).
        seed: seeds LoRA initialisation, shuffling and dropout.
        gradient_checkpointing: recompute activations in the backward pass (less memory,
            30-50 % slower). Default None: on when a batch's activations would exceed
            CHECKPOINT_ABOVE_BYTES (1 GiB), estimated as batch_size x the longest example x
            hidden size x layers x ACTIVATION_VALUES_PER_HIDDEN values, e.g. SmolLM2-135M at
            batch 8 on ARC prompts (1.7 GB of activations; peak RSS 5.0 GB without, 3.2 GB
            with), and off for the tiny offline model.

    Returns a `LanguageModel` whose `model` is the peft model (in eval mode), with the
    per-step training loss in ``info["train_loss"]``.
    """
    if not samples:
        raise ValueError("no training samples")
    if hasattr(lm.model, "peft_config"):
        raise ValueError("lm already carries a LoRA adapter: fine-tune the base model, or "
                         "merge the adapter first (lm.model.merge_and_unload())")
    by = by or lm.answer_by
    seed_everything(seed)
    if not inplace:
        lm = copy_model(lm)
    examples = training_examples(lm, samples, prompts, responses, by)
    if gradient_checkpointing is None:
        gradient_checkpointing = _activation_bytes(lm, examples, batch_size) > CHECKPOINT_ABOVE_BYTES
    model = _lora_model(lm, lora_r, lora_alpha, lora_dropout, target_modules,
                        gradient_checkpointing)
    tuned = LanguageModel(model, lm.tokenizer, answer_by=lm.answer_by, chat=lm.chat,
                          name=f"{lm.name}+lora", info=dict(lm.info))

    total_steps = max(1, math.ceil(epochs * len(examples) / (batch_size * grad_accum)))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, int(warmup_ratio * total_steps)))
    batches = shuffled_batches(len(examples), batch_size, random.Random(seed))
    losses: list[float] = []
    model.train()
    bar = progress_bar(range(total_steps), desc="fine-tuning", enabled=progress)
    for _ in bar:
        groups = [[examples[j] for j in next(batches)] for _ in range(grad_accum)]
        n_tokens = sum(sum(t != IGNORE for t in e[1]) for g in groups for e in g)
        loss = 0.0
        for group in groups:  # gradient accumulation: each part's share of the mean
            part = response_token_nll(tuned, group) / n_tokens
            part.backward()
            loss += part.item()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
    model.eval()
    tuned.info["train_loss"] = losses
    # Outputs stored for the base model must not be taken for the tuned one's.
    tuned.info["adapter"] = adapter_hash(model)
    if output_dir is not None:
        model.save_pretrained(str(output_dir), safe_serialization=True)
        tuned.info["adapter_dir"] = str(output_dir)
    return tuned


def response_token_nll(lm: LanguageModel, examples) -> torch.Tensor:
    """Summed NLL of the response tokens of a batch of (input_ids, labels) examples
    (differentiable; the logits at position t predict the token at t + 1)."""
    ids, mask, pos, labels, keep = _collate(lm, examples)
    logits = response_logits(lm, ids, mask, pos, keep)  # [B, keep, V]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                           ignore_index=IGNORE, reduction="sum")


def shuffled_batches(n: int, batch_size: int, rng: random.Random):
    """Endless batches of indices in 0..n-1, reshuffled on every pass (so a fractional
    number of epochs works, and no batch is short)."""
    order: list[int] = []
    while True:
        while len(order) < batch_size:
            fresh = list(range(n))
            rng.shuffle(fresh)
            order += fresh
        yield order[:batch_size]
        del order[:batch_size]


def warmup_cosine(total_steps: int, warmup: int):
    """Learning-rate factor per step: linear warm-up to 1, then cosine decay to 0."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))
    return factor
