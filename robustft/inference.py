"""Batched inference: option scoring and generation with per-token log-probs.

Both reduce the model's logits with `robustft.kernels`. Option scoring runs the model and
keeps the last ``max option length + 1`` positions of each left-padded row
(`logits_to_keep`). Generation is transformers' own ``model.generate`` (greedy or sampled),
asked for each step's raw logits, from which the kernels take the token log-probs and
entropies. Outputs are plain arrays, so a stage downstream can equally take option
log-probs or token log-probs from vLLM or an API.

Option scoring conditions on the rendered prompt followed by ``Answer:`` and scores each
candidate continuation: `` B`` (answer by letter) or `` <option text>`` (answer by text).
The score of an option is the sum of its tokens' log-probs, log p(option | prompt).

The prompts of one scoring pass share a token prefix (the chat template's system prompt and
the instruction; for CER with fixed examples, the examples too). Its keys and values are
computed once per pass and every batch continues from them (`_SharedPrefix`): exact, since a
causal model's prefix states do not depend on what follows, and it removes a third (direct
prompts) to three quarters (CER prompts) of the tokens each forward pass would otherwise
recompute.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .kernels import OptionScores, linear_token_stats, option_logprobs, response_stats, token_stats
from .kernels.dispatch import reduce_response, shift_labels
# `LanguageModel` (robustft.model) appears in annotations only (strings, never evaluated):
# robustft.model imports this module, its Backend methods delegating here, so no import back.
from .progress import progress_bar
from .prompts import ANSWER_PREFIX, answer_line, direct_prompt
from .sample import MC, Sample, letter, letter_index

IGNORE = -100


# --------------------------------------------------------------------------- batching
def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device=None):
    """Left-pad token id lists into a batch.

    Returns:
        input_ids [B, T] int64, attention_mask [B, T] int64 (0 on padding), position_ids
        [B, T] int64 (0 at each row's first real token, so a padded row sees the same
        positions as the row alone).
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.as_tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (fail fast on memory)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


# Most tokens (rows x padded width) per forward pass on a CPU. Large batches of left-padded
# rows waste compute on padding (length-sorted batches of 64 ARC prompts were half padding)
# and push activations out of cache, while small ones pay a fixed cost per pass (the
# dispatch of ~100 ops per layer, and matmuls lose efficiency below a few hundred rows),
# about as much as FORWARD_COST_TOKENS more tokens would. Measured on SmolLM2-135M with
# 2 threads (python -m robustft.perf, results/real-smollm2/speed-after).
CPU_TOKENS_PER_FORWARD = 1024
FORWARD_COST_TOKENS = 64


def _token_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first, like
    `length_sorted_batches`; with `max_tokens`, a batch's rows x its longest row also stay
    within `max_tokens` (a longer row goes alone), and the cut points minimise the padded
    tokens plus FORWARD_COST_TOKENS per batch (dynamic programming over the sorted rows)."""
    if not max_tokens:
        return length_sorted_batches(lengths, batch_size)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    widths = [lengths[i] for i in order]
    n = len(order)
    cost, start = [0] + [float("inf")] * n, [0] * (n + 1)
    for end in range(1, n + 1):  # best batching of the `end` longest rows
        for first in range(end - 1, max(-1, end - 1 - batch_size), -1):  # last batch = first..end-1
            rows = end - first
            if rows > 1 and rows * widths[first] > max_tokens:
                break  # growing the batch only adds rows and width
            c = cost[first] + rows * widths[first] + FORWARD_COST_TOKENS
            if c < cost[end]:
                cost[end], start[end] = c, first
    batches, end = [], n
    while end > 0:
        batches.append(order[start[end]:end])
        end = start[end]
    return batches[::-1]


def _max_tokens(lm: LanguageModel) -> int | None:
    return CPU_TOKENS_PER_FORWARD if lm.device.type == "cpu" else None


def _forward_params(model) -> set[str]:
    return set(inspect.signature(type(model).forward).parameters)


def _cache_kwarg(model) -> str:
    # transformers 5.x renamed `past_key_values` to `cache` (the old name is deprecated there,
    # and removed in 5.40); scoring's shared-prefix cache goes in under whichever name the
    # installed version's forward takes.
    return "cache" if "cache" in _forward_params(model) else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def response_logits(lm: LanguageModel, input_ids, attention_mask, position_ids, keep: int):
    """Logits of the last `keep` positions of a left-padded batch: [B, keep, V].

    Only those positions go through the lm_head, so a 150k-vocabulary model never builds
    [B, T, V].
    """
    out = lm.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False, **_keep_kwargs(lm, keep))
    return out.logits[:, -keep:]  # a no-op where the model honoured logits_to_keep


FUSED_ENV = "ROBUSTFT_FUSED_HEAD"


def fused_head(lm: LanguageModel):
    """(backbone, lm_head weight [V, H]) when scoring can go from hidden states straight to
    token statistics (`kernels.linear_token_stats`), never building [N, V] logits; else None.

    Used on CUDA by default (set ``ROBUSTFT_FUSED_HEAD=1`` to use it anywhere, ``0`` never).
    Needs a plain bias-free float lm_head and no logit post-processing (softcapping or
    scaling, as in Gemma 2 or Cohere), which the fused path would skip.
    """
    choice = os.environ.get(FUSED_ENV, "auto").lower()
    if choice in ("0", "false", "no", "off") or (choice == "auto" and lm.device.type != "cuda"):
        return None
    base = lm.base_model
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    backbone = getattr(base, "model", None)
    cfg = base.config
    if (head is None or backbone is None or not isinstance(head, torch.nn.Linear) or head.bias is not None
            or head.weight.dtype not in (torch.float16, torch.bfloat16, torch.float32)
            or getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None)):
        return None
    return backbone, head.weight


def last_hidden(backbone, input_ids, attention_mask, position_ids, keep: int) -> torch.Tensor:
    """The backbone's last hidden states of the last `keep` positions: [B, keep, H]."""
    out = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state[:, -keep:]


def response_stats_of(lm: LanguageModel, input_ids, attention_mask, position_ids, labels, keep: int):
    """`kernels.response_stats` of the last `keep` positions of a batch (labels [B, keep],
    Hugging Face convention), through the fused head when `fused_head` allows it."""
    fused = fused_head(lm)
    if fused is None:
        logits = response_logits(lm, input_ids, attention_mask, position_ids, keep)
        return response_stats(logits, labels, ignore_index=IGNORE)
    backbone, weight = fused
    hidden = last_hidden(backbone, input_ids, attention_mask, position_ids, keep)
    targets = shift_labels(labels, IGNORE)
    st = linear_token_stats(hidden.to(weight.dtype), weight, targets, IGNORE)
    return reduce_response(st.logp, st.entropy, targets != IGNORE)


def _response_stats_after(lm: LanguageModel, ids, mask, pos, extra: dict, labels, keep: int):
    """`response_stats_of` of a `_continue_batch` batch."""
    if not extra:
        return response_stats_of(lm, ids, mask, pos, labels, keep)
    fused = fused_head(lm)
    if fused is None:
        return response_stats(_logits_after(lm, ids, mask, pos, extra, keep), labels, ignore_index=IGNORE)
    backbone, weight = fused
    hidden = _hidden_after(backbone, ids, mask, pos, extra, keep)
    targets = shift_labels(labels, IGNORE)
    st = linear_token_stats(hidden.to(weight.dtype), weight, targets, IGNORE)
    return reduce_response(st.logp, st.entropy, targets != IGNORE)


def _keep_kwargs(lm: LanguageModel, keep: int) -> dict:
    # Not every architecture's forward takes `logits_to_keep`; those compute all positions.
    return {"logits_to_keep": keep} if "logits_to_keep" in _forward_params(lm.base_model) else {}


# ------------------------------------------------------------------ shared prompt prefix
def _shared_prefix_length(seqs: Sequence[Sequence[int]], limit: int) -> int:
    """Length of the token prefix all `seqs` share, at most `limit`."""
    first, n = seqs[0], limit
    for s in seqs[1:]:
        n = min(n, len(s))
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return n


class _SharedPrefix:
    """Keys and values of the token prefix every sequence of a pass shares, computed once.

    Attributes:
        length: P, the prefix length in tokens.
        layers: per layer (keys, values), each [1, kv_heads, P, head_dim].
    """

    def __init__(self, length: int, layers):
        self.length, self.layers = length, layers

    def cache(self, batch: int):
        """A fresh cache holding the prefix for `batch` rows (a forward pass extends it)."""
        from transformers import DynamicCache

        return DynamicCache([(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
                             for k, v in self.layers])


def _prefix_cache(lm: LanguageModel, seqs: Sequence[Sequence[int]], limit: int) -> _SharedPrefix | None:
    """The shared prefix of `seqs` (at most `limit` tokens), run through the model once.

    None when there is nothing to share (fewer than two sequences, no common token) or when
    the model's cache is not a plain per-layer key/value cache this code knows how to extend
    (sliding-window or quantized caches): callers then run every
    sequence whole, as before.
    """
    if len(seqs) < 2 or limit < 1:
        return None
    length = _shared_prefix_length(seqs, limit)
    if length < 1:
        return None
    ids = torch.tensor([list(seqs[0][:length])], dtype=torch.long, device=lm.device)
    out = lm.model(input_ids=ids, use_cache=True, **_keep_kwargs(lm, 1))
    layers = _plain_layers(_cache_of(out))
    return None if layers is None else _SharedPrefix(length, layers)


def _plain_layers(cache):
    """(keys, values) per layer when `cache` is a list of plain DynamicLayers, else None."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


def _continue_batch(lm: LanguageModel, seqs: Sequence[Sequence[int]], prefix: _SharedPrefix | None):
    """Model inputs for a batch of sequences that start with `prefix`: their remaining tokens
    left-padded, the mask and positions counting the prefix, and a cache holding it.

    Returns (input_ids [B, S], attention_mask [B, P + S], position_ids [B, S], extra forward
    kwargs: the cache, empty without a prefix).
    """
    if prefix is None:
        return (*left_pad(seqs, lm.tokenizer.pad_token_id, lm.device), {})
    p = prefix.length
    ids, mask, pos = left_pad([s[p:] for s in seqs], lm.tokenizer.pad_token_id, lm.device)
    mask = torch.cat([torch.ones_like(mask[:, :1]).expand(-1, p), mask], dim=1)
    return ids, mask, pos + p, {_cache_kwarg(lm.base_model): prefix.cache(len(seqs)), "use_cache": True}


def _logits_after(lm: LanguageModel, ids, mask, pos, extra: dict, keep: int) -> torch.Tensor:
    """`response_logits` of a `_continue_batch` batch: [B, keep, V]."""
    if not extra:
        return response_logits(lm, ids, mask, pos, keep)
    out = lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, **extra, **_keep_kwargs(lm, keep))
    return out.logits[:, -keep:]


def _hidden_after(backbone, ids, mask, pos, extra: dict, keep: int) -> torch.Tensor:
    """`last_hidden` of a `_continue_batch` batch: [B, keep, H]."""
    if not extra:
        return last_hidden(backbone, ids, mask, pos, keep)
    out = backbone(input_ids=ids, attention_mask=mask, position_ids=pos, **extra)
    return out.last_hidden_state[:, -keep:]


# ---------------------------------------------------------------------- option scoring
def predict_letters(scores: OptionScores, length_normalize: bool = False) -> list[str]:
    """The letter of the best option per question of `scores` (from any source: these
    passes, vLLM, an API). `length_normalize` ranks by mean log-prob per token instead of
    the sum (lm-eval's `acc_norm`-like choice for options of very different lengths)."""
    return [letter(int(k)) if k >= 0 else None for k in scores.best(length_normalize)]


def answer_head(rendered: str, response: str | None = None) -> str:
    """What every backend scores an option's continuation after: the rendered prompt, what
    the model already wrote (a reasoning reply, on a line of its own; nothing when empty),
    then ``Answer:``."""
    said = response.rstrip() + "\n" if response is not None and response.strip() else ""
    return rendered + said + ANSWER_PREFIX


def option_continuations(sample: Sample, by: str) -> list[str]:
    """What follows ``Answer:`` for each option: `` A``, `` B``... or `` <option text>``."""
    if sample.task != MC:
        raise ValueError(f"sample {sample.id!r} is not multiple choice; use generate() for "
                         "short answers")
    return [answer_line(sample, letter(k), by=by)[len(ANSWER_PREFIX):]
            for k in range(len(sample.options))]


@torch.inference_mode()
def score_options(lm: LanguageModel, samples: Sequence[Sample],
                  prompts: Sequence[str] | None = None, *, by: str | None = None,
                  responses: Sequence[str] | None = None, batch_size: int = 64,
                  progress: bool = True) -> OptionScores:
    """Score every option of every multiple-choice sample in batched forward passes.

    Args:
        lm: the model.
        samples: n multiple-choice samples.
        prompts: the n prompt texts (before rendering); default `direct_prompt` of each sample
            (the vanilla expert). Pass `context_prompt(...)`/`review_prompt(...)` texts for the
            other experts.
        by: "letter" or "text"; default `lm.answer_by`.
        responses: n texts the model already wrote in its turn before ``Answer:`` (e.g. its
            step-by-step reasoning): each option is then scored as the continuation of that
            response, on a new line. Default: none, ``Answer:`` opens the turn.
        batch_size: sequences per forward pass (one sequence per option when scoring by text,
            one per question when scoring by letter).

    Returns the `OptionScores` of the n questions as numpy arrays ([n, K], K = the most
    options of any question; `predict_letters` gives the answers). Scoring by letter runs
    one sequence per question and reads all letters from its last position when every
    letter is a single token; otherwise each (question, option) pair is its own sequence.
    """
    by = by or lm.answer_by
    prompts = [direct_prompt(s) for s in samples] if prompts is None else list(prompts)
    if len(prompts) != len(samples) or (responses is not None and len(responses) != len(samples)):
        raise ValueError(f"{len(prompts)} prompts and {len(responses or prompts)} responses for {len(samples)} samples")
    n, width = len(samples), max((len(s.options) for s in samples), default=0)
    logprobs = np.full((n, width), -np.inf)
    n_tokens = np.zeros((n, width), dtype=np.int64)
    entropy = np.full((n, width), np.nan)
    if n == 0:
        return OptionScores(logprobs, n_tokens, entropy)

    # One row per (question, option): context ids + continuation ids.
    rows, contexts, conts = [], [], []
    for i, (s, p) in enumerate(zip(samples, prompts)):
        head = answer_head(lm.render(p), responses[i] if responses is not None else None)
        for k, c in enumerate(option_continuations(s, by)):
            rows.append((i, k))
            contexts.append(head)
            conts.append(c)
    pairs = lm.encode_pairs(contexts, conts)
    for (i, _), (c, x) in zip(rows, pairs):
        lm.check_length(len(c) + len(x), samples[i].id)

    shared = _single_token_options(rows, pairs)
    if shared is not None:
        _score_last_position(lm, shared, logprobs, n_tokens, entropy, batch_size, progress)
    else:
        _score_sequences(lm, rows, pairs, logprobs, n_tokens, entropy, batch_size, progress)
    return OptionScores(logprobs, n_tokens, entropy)


def _single_token_options(rows, pairs):
    """{question: (context ids, [(option, token id)])} when every option is one token after
    the same context (the usual letter case); else None."""
    shared: dict[int, tuple[list[int], list[tuple[int, int]]]] = {}
    for (i, k), (c, x) in zip(rows, pairs):
        if len(x) != 1:
            return None
        if i in shared:
            if shared[i][0] != c:
                return None
            shared[i][1].append((k, x[0]))
        else:
            shared[i] = (c, [(k, x[0])])
    return shared


def _score_last_position(lm, shared, logprobs, n_tokens, entropy, batch_size, progress):
    questions = list(shared)
    width = logprobs.shape[1]
    contexts = [shared[q][0] for q in questions]
    # Each row keeps at least its last token, whose logits are read.
    prefix = _prefix_cache(lm, contexts, min(len(c) for c in contexts) - 1)
    skip = prefix.length if prefix else 0
    batches = _token_batches([len(c) - skip for c in contexts], batch_size, _max_tokens(lm))
    for batch in progress_bar(batches, desc="scoring options", enabled=progress):
        qs = [questions[j] for j in batch]
        ids, mask, pos, extra = _continue_batch(lm, [shared[q][0] for q in qs], prefix)
        targets = torch.full((len(qs), width), IGNORE, dtype=torch.long)
        for b, q in enumerate(qs):
            for k, t in shared[q][1]:
                targets[b, k] = t
        fused = fused_head(lm)
        if fused is None:
            last = _logits_after(lm, ids, mask, pos, extra, keep=1)[:, -1]  # [B, V]
            scores = option_logprobs(last, targets.to(last.device), ignore_index=IGNORE)
            lp, nt, ent = scores.logprobs, scores.n_tokens, scores.entropy
        else:  # from [B, H] hidden states: the [B, V] logits never exist
            backbone, weight = fused
            hidden = _hidden_after(backbone, ids, mask, pos, extra, keep=1)[:, -1].to(weight.dtype)
            tgt = targets.to(hidden.device)
            present = tgt != IGNORE
            st = linear_token_stats(hidden, weight)  # one pass over the vocabulary: lse, entropy
            # The K option logits are K dot products with their rows of the head (float32,
            # as the kernel computes logits), not K more passes over V.
            z = torch.einsum("bh,bkh->bk", hidden.float(), weight[tgt.clamp(min=0)].float())
            lp = torch.where(present, z - st.lse[:, None], torch.full_like(z, float("-inf")))
            nt = present.to(torch.int64)
            ent = torch.where(present, st.entropy[:, None].expand_as(z), torch.full_like(z, float("nan")))
        logprobs[qs] = lp.double().cpu().numpy()
        n_tokens[qs] = nt.cpu().numpy()
        entropy[qs] = ent.double().cpu().numpy()


def _score_sequences(lm, rows, pairs, logprobs, n_tokens, entropy, batch_size, progress):
    seqs = [c + x for c, x in pairs]
    # The position before each option's first token is read, so the prefix stops before it.
    prefix = _prefix_cache(lm, seqs, min(len(c) for c, _ in pairs) - 1)
    skip = prefix.length if prefix else 0
    batches = _token_batches([len(s) - skip for s in seqs], batch_size, _max_tokens(lm))
    for batch in progress_bar(batches, desc="scoring options", enabled=progress):
        ids, mask, pos, extra = _continue_batch(lm, [seqs[j] for j in batch], prefix)
        n_cont = [len(pairs[j][1]) for j in batch]
        keep = max(n_cont) + 1  # the position before the first option token predicts it
        labels = torch.full((len(batch), keep), IGNORE, dtype=torch.long, device=ids.device)
        for b, m in enumerate(n_cont):
            labels[b, keep - m:] = ids[b, -m:]
        st = _response_stats_after(lm, ids, mask, pos, extra, labels, keep)
        lp = st.logp_sum.double().cpu().numpy()
        ent = st.entropy.double().cpu().numpy()
        for b, j in enumerate(batch):
            i, k = rows[j]
            logprobs[i, k], entropy[i, k], n_tokens[i, k] = lp[b], ent[b], n_cont[b]


# -------------------------------------------------------------- continuation scoring
@torch.inference_mode()
def continuation_logprobs(lm: LanguageModel, prompts: Sequence[str], continuations: Sequence[str], *,
                          batch_size: int = 16) -> list[np.ndarray]:
    """Teacher-forced log-probs of each continuation after its rendered prompt.

    Args:
        prompts: n prompt texts (before rendering; `LanguageModel.render` applies the chat
            template).
        continuations: n texts that follow the rendered prompts, tokenised with them as
            `LanguageModel.encode_pairs` does (so exactly the tokens option scoring reads).

    Returns n arrays, [L_i] float64 ``log p(token_j | prompt, tokens_<j)`` of the i-th
    continuation's L_i tokens (under the model's own temperature-1 distribution: what a
    server's ``echo`` + ``logprobs`` report for the same text).
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts for {len(continuations)} continuations")
    pairs = lm.encode_pairs([lm.render(p) for p in prompts], list(continuations))
    for i, (c, x) in enumerate(pairs):
        lm.check_length(len(c) + len(x), i)
    out: list[np.ndarray] = [np.zeros(0)] * len(pairs)
    for batch in length_sorted_batches([len(c) + len(x) for c, x in pairs], batch_size):
        width = max(len(pairs[j][1]) for j in batch)  # the longest continuation in the batch
        if width == 0:
            continue
        ids, mask, pos = left_pad([pairs[j][0] + pairs[j][1] for j in batch], lm.tokenizer.pad_token_id, lm.device)
        # Position t predicts token t + 1: the last width + 1 positions cover every continuation.
        logits = response_logits(lm, ids, mask, pos, width + 1)[:, :-1].float()  # [B, width, V]
        lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, -width:, None]).squeeze(-1)
        lp = lp.double().cpu().numpy()  # [B, width]
        for b, j in enumerate(batch):
            m = len(pairs[j][1])
            out[j] = lp[b, width - m:].copy()
    return out


# -------------------------------------------------------------------------- generation
@dataclass
class Generation:
    """One generated response.

    Attributes:
        text: the decoded response (special tokens and the final eos removed).
        token_ids: the generated ids, eos included when the model emitted it.
        logprobs: [L] float64 log p(token | prompt, previous tokens) under the model's own
            (temperature 1) distribution — what vLLM/OpenAI `logprobs` report.
        entropy: [L] float64 Shannon entropy (nats) of each step's next-token distribution.
        finished: True when the model emitted eos, False when max_new_tokens cut it off.
    """

    text: str
    token_ids: list[int]
    logprobs: np.ndarray
    entropy: np.ndarray
    finished: bool

    @property
    def response_entropy(self) -> float:
        """The paper's response entropy (mean token NLL): ``H = -(1/|y|) sum_j log p(y_j |
        q, y_<j)``; nan for an empty response."""
        return float(-self.logprobs.mean()) if len(self.logprobs) else float("nan")

    @property
    def max_token_nll(self) -> float:
        """The largest token NLL of the response: the step the model was least sure of
        (nan for an empty response)."""
        return float(-self.logprobs.min()) if len(self.logprobs) else float("nan")


# Decoding is greedy or plain multinomial sampling (temperature, nucleus top_p) and nothing
# else: `model.generate` fills every setting left unset from the model's own
# generation_config (a checkpoint may ship a repetition penalty, top_k, min_length...), so the
# settings that would add a logits processor are given their neutral values here.
# (min_new_tokens=0 also overrides a min_length.)
_NO_PROCESSORS = dict(repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0)
_NO_SAMPLING_FILTERS = dict(top_k=0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0)


@torch.inference_mode()
def generate(lm: LanguageModel, prompts: Sequence[str], *, max_new_tokens: int = 256,
             temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 16,
             seed: int = 0, ids: Sequence | None = None, progress: bool = True) -> list[Generation]:
    """Generate a response to each prompt, recording per-token log-probs and entropies.

    Args:
        lm: the model.
        prompts: prompt texts (before rendering; the chat template is applied here).
        max_new_tokens: most tokens per response.
        temperature: 0 for greedy decoding, > 0 to sample (with nucleus `top_p`).
        batch_size: prompts per batch; batches group prompts of similar length, left-padded.
        seed: seeds the sampler (a run is reproducible for a given batch_size).
        ids: names for the prompts in error messages (e.g. sample ids).

    Returns one `Generation` per prompt, in the prompts' order. A response stops at eos, at
    max_new_tokens, or where prompt + response reach the model's maximum length
    (`finished` False for the last two); a prompt that leaves no room is an error, and so
    are NaN/inf logits (FloatingPointError: no token can be chosen from them).

    Each batch is decoded by transformers' ``model.generate`` (its KV cache, its stopping at
    eos), asked for every step's raw logits (``output_logits=True``); `kernels.token_stats`
    then reads each step's [B, V] logits once for the log-probs and entropies. Those logits
    are held until the batch ends: batch_size x steps x V float32 (16 x 256 x 150k tokens of
    vocabulary = 2.5 GB), so lower batch_size for long responses of a large-vocabulary model.

    Sampling: ``model.generate`` takes no torch.Generator and draws from torch's global one.
    It is seeded with `seed` once per call, inside ``torch.random.fork_rng`` (the caller's
    random state is restored afterwards), and the batches draw from it in turn: the same
    prompts, batch_size and seed give the same tokens.
    """
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    ids = list(range(len(prompts))) if ids is None else list(ids)
    encoded = lm._encode([lm.render(p) for p in prompts])
    for name, e in zip(ids, encoded):
        lm.check_length(len(e) + 1, name)
    results: list[Generation | None] = [None] * len(prompts)
    batches = length_sorted_batches([len(e) for e in encoded], batch_size)
    with _seeded(seed, lm.device, enabled=temperature > 0):
        for batch in progress_bar(batches, desc="generating", enabled=progress):
            outs = _generate_batch(lm, [encoded[j] for j in batch], max_new_tokens, temperature, top_p)
            for j, g in zip(batch, outs):
                results[j] = g
    return results


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device, enabled: bool):
    """torch's global generators seeded with `seed` inside the block, restored after it."""
    if not enabled:
        yield
        return
    cuda = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


@functools.cache
def _finite_rows():
    """A transformers LogitsProcessor that turns rows with no distribution (NaN, +inf, all
    -inf) into zeros, so that sampling does not stop inside ``torch.multinomial``;
    `_generate_batch` then reports the step from the raw logits (FloatingPointError)."""
    from transformers import LogitsProcessor

    class FiniteRows(LogitsProcessor):
        def __call__(self, input_ids, scores):
            bad = (torch.isnan(scores) | torch.isposinf(scores)).any(-1, keepdim=True)
            bad |= torch.isneginf(scores).all(-1, keepdim=True)
            return scores.masked_fill(bad, 0.0)

    return FiniteRows()


def _generate_batch(lm: LanguageModel, seqs, max_new_tokens: int, temperature: float,
                    top_p: float) -> list[Generation]:
    """One left-padded batch of prompt token ids through ``model.generate``."""
    from transformers import LogitsProcessorList

    pad = lm.tokenizer.pad_token_id
    eos = lm.eos_token_ids
    # Tokens each row may add: max_new_tokens, or what is left of the model's context. The
    # batch runs to the largest budget; a row is cut to its own afterwards.
    budget = [min(max_new_tokens, lm.max_length - len(s)) for s in seqs]
    input_ids, attention_mask, _ = left_pad(seqs, pad, lm.device)
    if temperature > 0:
        decoding = dict(do_sample=True, temperature=temperature, top_p=top_p, **_NO_SAMPLING_FILTERS,
                        logits_processor=LogitsProcessorList([_finite_rows()]))
    else:
        decoding = dict(do_sample=False)
    out = lm.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                            max_new_tokens=max(budget), **decoding, **_NO_PROCESSORS,
                            output_logits=True, return_dict_in_generate=True,
                            pad_token_id=pad, eos_token_id=sorted(eos))
    tokens = out.sequences[:, input_ids.shape[1]:]  # [B, L]; pad after a row's eos
    steps = len(out.logits)
    assert tokens.shape[1] == steps, (tokens.shape, steps)
    # Per step: the [B, V] raw logits (float32, before temperature and top_p) read once.
    stats = [token_stats(logits, tokens[:, t]) for t, logits in enumerate(out.logits)]
    del out
    logp = torch.stack([st.logp for st in stats], 1).double().cpu().numpy()
    entropy = torch.stack([st.entropy for st in stats], 1).double().cpu().numpy()
    valid = torch.stack([st.valid for st in stats], 1).cpu().numpy()
    greedy = torch.stack([st.argmax for st in stats], 1).cpu().numpy()
    rows = tokens.cpu().tolist()
    # Each row's live steps: up to its eos, within its budget.
    lengths = []
    for b, row in enumerate(rows):
        row = row[:budget[b]]
        lengths.append(next((j + 1 for j, t in enumerate(row) if t in eos), len(row)))
    bad = [int(np.argmin(valid[b, :n])) for b, n in enumerate(lengths) if not valid[b, :n].all()]
    if bad:
        raise FloatingPointError(f"the model's logits for generated token {min(bad) + 1} hold NaN or "
                                 "inf (or are all -inf): no next token can be chosen")
    if temperature == 0:
        for b, n in enumerate(lengths):
            if greedy[b, :n].tolist() != rows[b][:n]:
                step = next(j for j in range(n) if greedy[b, j] != rows[b][j])
                raise RuntimeError(f"model.generate chose token {rows[b][step]} at step {step + 1}, not "
                                   f"the most likely one ({greedy[b, step]}): a logits processor of "
                                   f"{type(lm.base_model).__name__}.generate changed greedy decoding")
    results = []
    for b, n in enumerate(lengths):
        row = rows[b][:n]
        finished = n > 0 and row[-1] in eos
        text = lm.tokenizer.decode(row[:-1] if finished else row, skip_special_tokens=True)
        results.append(Generation(text, row, logp[b, :n].copy(), entropy[b, :n].copy(), finished))
    return results
