"""LoRA supervised fine-tuning with the loss on the response tokens only.

A training example is the inference prompt, rendered exactly as at inference
(`LanguageModel.render`), followed by the response ``Answer: X`` and the end-of-turn / eos
token; the labels are -100 on the prompt, so only the response is learned. Rows are
left-padded like inference batches, so the response sits at the end of every row and only
its positions go through the lm_head (`logits_to_keep`) — the loss never builds [B, T, V]
logits for a 150k vocabulary.

The training loop is the transformers `Trainer` (AdamW, warm-up + cosine schedule, gradient
clipping and accumulation, seeding, activation checkpointing, and DDP under ``torchrun`` or
``accelerate launch``): `finetune` hands it the examples, a collator that builds the
left-padded batch and its response labels, and a loss over those labels only.

On CUDA, a model loaded with ``quantize="4bit"`` is trained as QLoRA (the 4-bit base is
frozen, the LoRA weights train in bf16/fp32).
"""
from __future__ import annotations

import math
import os
import tempfile
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .inference import (IGNORE, _keep_kwargs, left_pad, length_sorted_batches, response_logits,
                        response_stats_of)
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
    """Seed Python's, numpy's and torch's generators (every device), as the `Trainer` does."""
    from transformers import set_seed

    set_seed(seed)


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


def _collate(lm: LanguageModel, examples, device=None):
    """Left-padded batch and the labels of its last `keep` positions: input_ids,
    attention_mask, position_ids [B, T], labels [B, keep], and keep, on `device` (default:
    the model's)."""
    device = lm.device if device is None else device
    ids, mask, pos = left_pad([e[0] for e in examples], lm.tokenizer.pad_token_id, device)
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
        # (Checkpointing of a full-precision base is turned on by the Trainer.)
        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
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
    """LoRA SFT of `lm` on `samples` (their given answers are the targets), on the
    transformers `Trainer`.

    Under ``torchrun --nproc_per_node N`` or ``accelerate launch --multi_gpu --num_processes N``
    every process calls `finetune` with the same arguments: the Trainer wraps the model in
    DistributedDataParallel (gloo on CPUs, NCCL on GPUs) and each process trains on its
    share of every batch. (``accelerate launch --cpu --num_processes N`` starts one process.)

    Args:
        lm: the base model; left untouched unless `inplace`. The LoRA layers go into a
            copy of its modules that shares its weights (``copy_model(share_weights=True)``:
            no second set of weights in memory), or a full copy when the Trainer will move
            the model to another device. The shared weights are the tuned model's frozen
            base, so they are left with ``requires_grad=False``.
            A 4-bit/8-bit model cannot be deep-copied: without `inplace` a fresh copy is
            loaded from the arguments `load_model` recorded (a second base in GPU memory,
            with a warning); inplace=True trains `lm` itself (QLoRA, half the memory).
        samples: the training set.
        prompts, responses, by: see `training_examples` (defaults: the direct prompt, the
            ``Answer: X`` response in `lm.answer_by` form).
        output_dir: where to save the adapter (``adapter_model.safetensors`` +
            ``adapter_config.json``; by the first process only); reload with
            ``load_model(base, adapter=output_dir)``. No Trainer checkpoints are written.
        epochs: passes over the data (fractions allowed): the Trainer runs
            ceil(epochs x len(samples) / global batch) optimizer steps, reshuffling the
            data on every pass (the last batch of a pass may be short).
        lr, weight_decay, warmup_ratio, max_grad_norm: AdamW with linear warm-up over
            int(warmup_ratio x steps) steps, then cosine decay to 0 (the Trainer's
            "cosine" schedule), gradient clipping. Rounded down, not up as the Trainer
            rounds a ratio: its warm-up starts at learning rate 0, so a run shorter than
            1 / warmup_ratio steps (one step; the real mode's four) would spend a step,
            or all of it, learning nothing.
        batch_size, grad_accum: examples per forward pass in each process, passes per
            optimizer step; the global batch is batch_size x grad_accum x processes. The
            loss is the mean over all response tokens of the global batch.
        lora_r, lora_alpha, lora_dropout, target_modules: the LoRA adapter (default targets:
            the attention and MLP projections).
        seed: seeds LoRA initialisation, shuffling and dropout.
        gradient_checkpointing: recompute activations in the backward pass (less memory,
            30-50 % slower). Default None: on when a batch's activations would exceed
            CHECKPOINT_ABOVE_BYTES (1 GiB), estimated as batch_size x the longest example x
            hidden size x layers x ACTIVATION_VALUES_PER_HIDDEN values, e.g. SmolLM2-135M at
            batch 8 on ARC prompts (1.7 GB of activations; the measured peaks are in
            ``results/real-smollm2/rss``), and off for the tiny offline model. On a Linux
            CPU, glibc keeps freed memory for reuse, so the resident peak is well above
            what training holds; ``MALLOC_MMAP_THRESHOLD_=1048576`` in the environment
            returns freed blocks over 1 MiB to the system.
        progress: a "fine-tuning" bar (first process only).

    Returns a `LanguageModel` whose `model` is the peft model (in eval mode; its base weights
    are `lm`'s, so merging the adapter into them would change `lm`: merge into
    ``copy_model(tuned)`` instead), with in `info`:
    ``train_loss`` (the loss of every optimizer step: mean NLL of the global batch's
    response tokens), ``learning_rate`` (the rate of every step), ``adapter`` (the hash of
    the LoRA weights), ``adapter_dir`` (when saved) and ``trainer`` (world_size, the model
    wrapper's class name, e.g. "DistributedDataParallel", distributed_type, global_batch,
    steps).
    """
    if not samples:
        raise ValueError("no training samples")
    if hasattr(lm.model, "peft_config"):
        raise ValueError("lm already carries a LoRA adapter: fine-tune the base model, or "
                         "merge the adapter into a copy first "
                         "(robustft.model.copy_model(lm).model.merge_and_unload())")
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio={warmup_ratio}: give a fraction of the steps in [0, 1)")
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    by = by or lm.answer_by
    examples = training_examples(lm, samples, prompts, responses, by)
    if gradient_checkpointing is None:
        gradient_checkpointing = _activation_bytes(lm, examples, batch_size) > CHECKPOINT_ABOVE_BYTES
    # torchrun and accelerate launch both set WORLD_SIZE; the Trainer's own count is checked below.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    global_batch = batch_size * grad_accum * world
    total_steps = max(1, math.ceil(epochs * len(examples) / global_batch))
    with tempfile.TemporaryDirectory(prefix="robustft-trainer-") as scratch:
        args = TrainingArguments(**_training_arguments(
            output_dir=str(output_dir) if output_dir is not None else scratch,
            use_cpu=lm.device.type == "cpu", max_steps=total_steps, batch_size=batch_size,
            grad_accum=grad_accum, lr=lr, weight_decay=weight_decay,
            warmup_steps=int(warmup_ratio * total_steps), max_grad_norm=max_grad_norm,
            seed=seed, gradient_checkpointing=gradient_checkpointing))
        if args.world_size != world:
            raise RuntimeError(f"WORLD_SIZE={world} in the environment but the Trainer sees "
                               f"{args.world_size} processes: launch with torchrun or "
                               "accelerate launch, which set both")
        if not inplace:
            # The LoRA layers go into a copy of the modules that shares lm's frozen weights:
            # one set of weights in memory instead of two. Only where the Trainer will not
            # move the model, since moving a shared weight would move lm's.
            lm = copy_model(lm, share_weights=_same_device(lm.device, args.device))
        seed_everything(seed)  # the LoRA initialisation; the Trainer seeds again for training
        model = _lora_model(lm, lora_r, lora_alpha, lora_dropout, target_modules,
                            gradient_checkpointing)
        record = type("StepRecord", (_StepRecord, TrainerCallback), {})(
            desc="fine-tuning", total=total_steps, enabled=progress)
        trainer = Trainer(model=model, args=args, train_dataset=examples,
                          data_collator=_ResponseCollator(lm), compute_loss_func=record.loss,
                          callbacks=[record])
        # Our bar and loss record replace the Trainer's printing of every log.
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        record.reduce = lambda t: trainer.accelerator.reduce(t, reduction="sum")
        with warnings.catch_warnings():
            # peft reads an attribute that transformers 5 renamed; nothing for a user to do.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            trainer.train()
            if output_dir is not None and trainer.is_world_process_zero():
                model.save_pretrained(str(output_dir), safe_serialization=True)
        model = trainer.model  # the peft model itself, outside any DDP wrapper
        model.eval()
        tuned = LanguageModel(model, lm.tokenizer, answer_by=lm.answer_by, chat=lm.chat,
                              name=f"{lm.name}+lora", info=dict(lm.info))
        tuned.info["train_loss"] = record.losses
        tuned.info["learning_rate"] = record.rates
        tuned.info["trainer"] = dict(
            world_size=args.world_size, wrapper=type(trainer.model_wrapped).__name__,
            distributed_type=str(trainer.accelerator.distributed_type.value), global_batch=global_batch,
            steps=trainer.state.global_step)
        # Outputs stored for the base model must not be taken for the tuned one's.
        tuned.info["adapter"] = adapter_hash(model)
        if output_dir is not None:
            trainer.accelerator.wait_for_everyone()  # every process returns a saved adapter
            tuned.info["adapter_dir"] = str(output_dir)
        del trainer  # the optimizer state
    return tuned


def _same_device(a: torch.device, b: torch.device) -> bool:
    """`a` and `b` are one device ("cuda" and "cuda:0" are, when 0 is the current one)."""
    def full(d: torch.device) -> tuple:
        d = torch.device(d)
        return d.type, (d.index if d.index is not None else
                        torch.cuda.current_device() if d.type == "cuda" else None)
    return full(a) == full(b)


def _training_arguments(*, output_dir: str, use_cpu: bool, max_steps: int, batch_size: int,
                        grad_accum: int, lr: float, weight_decay: float, warmup_steps: int,
                        max_grad_norm: float, seed: int, gradient_checkpointing: bool) -> dict:
    """Keyword arguments of `TrainingArguments` for `finetune`."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    if "average_tokens_across_devices" not in fields:
        import transformers

        raise ImportError(f"finetune needs transformers >= 4.47 (TrainingArguments."
                          f"average_tokens_across_devices); this is {transformers.__version__}: "
                          "pip install -U transformers")
    # transformers 5 renamed gradient_checkpointing (the old name warns).
    ckpt = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {
        "output_dir": output_dir, "use_cpu": use_cpu, "max_steps": max_steps,
        "per_device_train_batch_size": batch_size, "gradient_accumulation_steps": grad_accum,
        "learning_rate": lr, "weight_decay": weight_decay, "optim": "adamw_torch",
        "lr_scheduler_type": "cosine", "warmup_steps": warmup_steps,
        "max_grad_norm": max_grad_norm, "seed": seed, "data_seed": seed,
        ckpt: gradient_checkpointing, f"{ckpt}_kwargs": {"use_reentrant": False},
        # The loss is normalised by the response tokens of the whole global batch (summed
        # over the processes), so DDP's gradient average equals one process's gradient.
        "average_tokens_across_devices": True,
        # Every LoRA weight gets a gradient in every step: DDP need not search for unused ones.
        "ddp_find_unused_parameters": False,
        "save_strategy": "no", "logging_strategy": "no", "report_to": "none",
        "disable_tqdm": True, "remove_unused_columns": False, "label_names": ["labels"],
        "dataloader_pin_memory": not use_cpu,
    }


class _ResponseCollator:
    """The Trainer's data collator: (input_ids, labels) examples -> a left-padded batch with
    input_ids, attention_mask, position_ids [B, T], labels [B, keep] (the last `keep`
    positions), and the model's `logits_to_keep` keyword, so that only those positions go
    through the lm_head."""

    def __init__(self, lm: LanguageModel):
        self.lm = lm

    def __call__(self, examples) -> dict:
        ids, mask, pos, labels, keep = _collate(self.lm, examples, device="cpu")
        return {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "labels": labels,
                "use_cache": False, **_keep_kwargs(self.lm, keep)}


class _StepRecord:
    """The loss function handed to the Trainer (`loss`), the per-step record of the loss and
    learning rate, and the progress bar (first process only). Its `on_*` methods are
    `TrainerCallback` events: `finetune` mixes it into that class (imported only then)."""

    def __init__(self, desc: str, total: int, enabled: bool):
        self.desc, self.total, self.enabled = desc, total, enabled
        self.losses: list[float] = []
        self.rates: list[float] = []
        self.reduce = lambda t: t  # sum over the processes; set once the Trainer exists
        self._step = torch.zeros(())
        self._bar = None

    def loss(self, outputs, labels, num_items_in_batch=None) -> torch.Tensor:
        """NLL of the response tokens of a batch (labels [B, keep], -100 elsewhere) divided
        by `num_items_in_batch`, the Trainer's count of response tokens in the global batch
        (all accumulation steps and processes): the parts add up to the global mean."""
        if num_items_in_batch is None:
            raise RuntimeError("the Trainer gave no num_items_in_batch: finetune needs "
                               "transformers >= 4.47")
        logits = outputs.logits[:, -labels.shape[1]:]  # a no-op where logits_to_keep was honoured
        part = _summed_nll(logits, labels) / num_items_in_batch
        self._step = self._step.to(part.device) + part.detach()
        return part

    def on_train_begin(self, args, state, control, **kw):
        self._bar = progress_bar(desc=self.desc, total=self.total,
                                 enabled=self.enabled and state.is_world_process_zero)

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kw):
        self.rates.append(float(optimizer.param_groups[0]["lr"]))  # the rate of this step

    def on_step_end(self, args, state, control, **kw):
        loss = float(self.reduce(self._step))
        self._step = torch.zeros(())
        self.losses.append(loss)
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def on_train_end(self, args, state, control, **kw):
        if self._bar is not None:
            self._bar.close()


def response_token_nll(lm: LanguageModel, examples) -> torch.Tensor:
    """Summed NLL of the response tokens of a batch of (input_ids, labels) examples
    (differentiable; the logits at position t predict the token at t + 1)."""
    ids, mask, pos, labels, keep = _collate(lm, examples)
    return _summed_nll(response_logits(lm, ids, mask, pos, keep), labels)


def _summed_nll(logits, labels) -> torch.Tensor:
    """Summed NLL of the labelled tokens: logits [B, keep, V] (position t predicts t + 1),
    labels [B, keep] (-100 where nothing is learned)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                           ignore_index=IGNORE, reduction="sum")
