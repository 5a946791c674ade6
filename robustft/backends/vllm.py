"""vLLM's offline engine (`vllm.LLM`) as a robustft backend.

Every request goes to vLLM as token ids that this module tokenised itself, with the model's
own tokenizer and exactly the rules of `robustft.model.LanguageModel` (`render` for the chat
template, `encode_pairs` for a context and its continuation), so the tokens vLLM scores are
the tokens the in-process model would score:

- option scoring: one request per (question, option), ``render(prompt) + "Answer:" +
  continuation``, with ``SamplingParams(prompt_logprobs=k)``. Each continuation token's
  log-prob is read from the prompt log-probs at its position (vLLM always reports the
  prompt's own token there, whatever its rank), so the option scores are exact.
- generation: ``SamplingParams(max_tokens, temperature, seed, logprobs=k)``; each generated
  token's log-prob is exact (vLLM reports the sampled token besides the top k).
- continuation scoring: as option scoring, for any text after the rendered prompt.

Entropies are the one approximation: vLLM reports the top k tokens of each distribution, and
``-sum p log p`` over them (`topk_entropy`) leaves out the tail, a lower bound of the Shannon
entropy; exact only with ``logprobs=-1`` (the whole vocabulary, slow and memory-hungry).
So the backend declares the "token_entropy" capability only then.

vLLM's logprobs are those of the raw model output (its default ``logprobs_mode
"raw_logprobs"``: before temperature and top-p), the temperature-1 distribution that
`robustft.inference.Generation.logprobs` records.

Output parsing is a set of pure functions over vLLM's output objects (`RequestOutput`,
`CompletionOutput`, `Logprob`; vllm/outputs.py and vllm/logprobs.py), tested on CPU with
stand-ins of those classes. vLLM itself needs a CUDA GPU: importing this module never imports
it; constructing a `VLLMBackend` without an ``llm=`` does, and says how to install it.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..inference import Generation, answer_head, option_continuations
from ..kernels import OptionScores
from ..model import LanguageModel
from ..prompts import direct_prompt
from ..sample import Sample

# The Backend seam's capability names (robustft.backends), as plain strings.
SCORE_OPTIONS = "score_options"
EXACT_OPTION_SCORES = "exact_option_scores"
GENERATE = "generate"
TOKEN_ENTROPY = "token_entropy"
SCORE_CONTINUATION = "score_continuation"
COUNT_TOKENS = "count_tokens"

FULL_VOCABULARY = -1  # logprobs=-1: vLLM reports every token of the vocabulary
VLLM_INSTALL = "pip install vllm"


def import_vllm():
    """The `vllm` module; an ImportError that says what vLLM needs and how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(
            "VLLMBackend runs vLLM's offline engine, and vLLM is not installed here. vLLM needs a "
            f"CUDA GPU (Linux); on such a machine install it with `{VLLM_INSTALL}`. Without a GPU, "
            "use the in-process model (robustft.load_model) or a model served elsewhere "
            "(robustft denoise --server URL --model NAME).") from e
    return vllm


def _sampling_params(**fields):
    """A `vllm.SamplingParams` (a seam: the CPU tests swap in a stand-in)."""
    return import_vllm().SamplingParams(**fields)


# ------------------------------------------------------------------------- output parsing
def token_logprob(position: Mapping[int, Any], token_id: int) -> float:
    """log p(token_id) from one position's ``{token id: Logprob}`` map (vLLM's
    `LogprobsOnePosition`). vLLM puts the prompt's own token, or the sampled one, in every
    map besides the top k; a map without it is a ValueError."""
    entry = position.get(int(token_id)) if position is not None else None
    if entry is None:
        raise ValueError(f"vLLM's log-probs for this position do not include token {token_id} "
                         "(vLLM always reports the prompt's or the sampled token: were these "
                         "outputs produced for other token ids?)")
    return float(entry.logprob)


def topk_entropy(position: Mapping[int, Any]) -> float:
    """``-sum_v p_v log p_v`` (nats) over the distinct tokens of one position's map: the exact
    Shannon entropy when the map holds the whole vocabulary (``logprobs=-1``), a lower bound
    otherwise (the tail's mass, at most ``1 - sum p_v``, is left out)."""
    h = 0.0
    for entry in position.values():
        lp = float(entry.logprob)
        if lp > -math.inf:
            h -= math.exp(lp) * lp
    return h


def continuation_logprobs(prompt_logprobs: Sequence[Mapping[int, Any] | None], prompt_token_ids:
                          Sequence[int], start: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-probs and top-k entropies of a prompt's tokens from position `start` on.

    Args:
        prompt_logprobs: a `RequestOutput.prompt_logprobs`: one entry per prompt token, None
            for the first (nothing predicts it), else the ``{token id: Logprob}`` map of the
            distribution that predicted that token.
        prompt_token_ids: the prompt's token ids (what was sent).
        start: the first position to read (the context's length; >= 1).

    Returns ([L] float64 log-probs, [L] float64 `topk_entropy` values), L = len(ids) - start.
    """
    if prompt_logprobs is None:
        raise ValueError("vLLM returned no prompt log-probs: the request needs "
                         "SamplingParams(prompt_logprobs=k)")
    if len(prompt_logprobs) != len(prompt_token_ids):
        raise ValueError(f"vLLM returned prompt log-probs for {len(prompt_logprobs)} positions, "
                         f"the prompt has {len(prompt_token_ids)} tokens")
    if start < 1:
        raise ValueError("the first prompt token has no log-prob: start must be >= 1")
    positions = range(start, len(prompt_token_ids))
    lp = [token_logprob(prompt_logprobs[t], prompt_token_ids[t]) for t in positions]
    ent = [topk_entropy(prompt_logprobs[t]) for t in positions]
    return np.array(lp, dtype=np.float64), np.array(ent, dtype=np.float64)


def _checked_prompt(output, sent: Sequence[int]) -> list[int]:
    """The token ids of `output`'s prompt: `sent`, which `output.prompt_token_ids` must equal
    when vLLM reports it (a mismatch means the outputs are not those of these requests)."""
    got = getattr(output, "prompt_token_ids", None)
    if got is not None and list(got) != list(sent):
        raise ValueError("a vLLM output's prompt_token_ids differ from the request's token ids "
                         "(outputs out of order, or from other requests)")
    return list(sent)


def parse_option_scores(outputs: Sequence[Any], rows: Sequence[tuple[int, int]],
                        pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                        shape: tuple[int, int]) -> OptionScores:
    """`OptionScores` from vLLM's outputs of one request per (question, option).

    Args:
        outputs: the `RequestOutput` of each request, in request order; each asked for
            ``prompt_logprobs``.
        rows: (question i, option k) of each request.
        pairs: (context ids, continuation ids) of each request; it sent context + continuation.
        shape: (n questions, K option slots).

    Returns numpy `OptionScores` [n, K]: the summed log-prob of each option's tokens, their
    count, and the mean `topk_entropy` of the distributions that predict them; -inf / 0 /
    nan in the slots no request filled (questions with fewer options).
    """
    if not len(outputs) == len(rows) == len(pairs):
        raise ValueError(f"{len(outputs)} outputs for {len(rows)} requests")
    logprobs = np.full(shape, -np.inf)
    n_tokens = np.zeros(shape, dtype=np.int64)
    entropy = np.full(shape, np.nan)
    for out, (i, k), (ctx, cont) in zip(outputs, rows, pairs):
        ids = _checked_prompt(out, list(ctx) + list(cont))
        lp, ent = continuation_logprobs(out.prompt_logprobs, ids, len(ctx))
        logprobs[i, k], n_tokens[i, k] = lp.sum(), len(cont)
        entropy[i, k] = ent.mean() if len(ent) else np.nan
    return OptionScores(logprobs, n_tokens, entropy)


def parse_generation(output: Any) -> Generation:
    """A `Generation` from one `CompletionOutput` generated with ``logprobs=k``.

    text, token_ids and finish_reason are vLLM's (``finished`` is True when it stopped on an
    end-of-sequence or stop token, ``finish_reason == "stop"``; "length" means max_tokens cut
    it off); logprobs[j] is the generated token j's log-prob (exact) and entropy[j] its
    step's `topk_entropy` (a lower bound unless ``logprobs=-1``).
    """
    ids = [int(t) for t in output.token_ids]
    steps = output.logprobs
    if steps is None:
        raise ValueError("vLLM returned no log-probs for a generation: the request needs "
                         "SamplingParams(logprobs=k)")
    if len(steps) != len(ids):
        raise ValueError(f"vLLM returned log-probs for {len(steps)} steps of a {len(ids)}-token generation")
    lp = np.array([token_logprob(s, t) for s, t in zip(steps, ids)], dtype=np.float64)
    ent = np.array([topk_entropy(s) for s in steps], dtype=np.float64)
    return Generation(output.text, ids, lp, ent, output.finish_reason == "stop")


# ---------------------------------------------------------------------------- the backend
class _TextSide(LanguageModel):
    """`LanguageModel`'s text conventions without its weights: `render`, `encode_pairs`,
    `prompt_tokens`, `answer_room`, `fits` and `check_length` run as they do in-process (one
    implementation, so both backends tokenise alike); `max_length` is vLLM's context."""

    context: int = 2048

    @property
    def max_length(self) -> int:
        return self.context


def _request_seed(seed: int, key) -> int:
    """A sampling seed for one prompt from the run's `seed` and the prompt's id: its response
    does not depend on which other prompts share its call, its batch or its shard."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class VLLMBackend:
    """A model served by vLLM's offline engine, behind the Backend interface.

    Args:
        model: a Hugging Face Hub id or local folder, for ``vllm.LLM(model=...)``.
        llm: an `vllm.LLM` already built (then `llm_kwargs` must be empty).
        tokenizer: the model's Hugging Face tokenizer (an object or a name/folder); default:
            the `llm`'s own (``LLM.get_tokenizer()``).
        answer_by: "letter" or "text"; default "letter" with a chat template, else "text".
        chat: apply the tokenizer's chat template; default: when it has one.
        logprobs: k, the top tokens vLLM reports per position (vLLM's default cap is 20;
            ``max_logprobs`` is raised to k for an engine built here). -1: the whole
            vocabulary, which makes entropies exact at a large cost in memory and time.
        llm_kwargs: passed to ``vllm.LLM`` (e.g. dtype, gpu_memory_utilization,
            tensor_parallel_size, max_model_len).

    Attributes:
        name: ``"vllm:<model>"``.
        llm: the `vllm.LLM`.
        text: the model's text conventions (a weightless `LanguageModel`: chat template,
            tokenisation, context checks), shared with the in-process backend's code.
        logprobs: k.

    Raises ImportError (what vLLM needs, how to install it) when vLLM is not installed and
    no `llm` is given.
    """

    def __init__(self, model: str, *, llm=None, tokenizer=None, answer_by: str | None = None,
                 chat: bool | None = None, logprobs: int = 20, **llm_kwargs):
        if not isinstance(logprobs, int) or (logprobs < 1 and logprobs != FULL_VOCABULARY):
            raise ValueError(f"logprobs must be >= 1, or -1 for the whole vocabulary; got {logprobs!r}")
        if llm is None:
            vllm = import_vllm()
            # vLLM refuses requests for more log-probs than max_logprobs (20 by default).
            llm_kwargs.setdefault("max_logprobs", logprobs)
            llm = vllm.LLM(model=str(model), **llm_kwargs)
        elif llm_kwargs:
            raise TypeError(f"{sorted(llm_kwargs)} are arguments for vllm.LLM(...): with llm= given, "
                            "build the LLM with them instead")
        self.llm, self.model, self.logprobs = llm, str(model), logprobs
        self.name = f"vllm:{self.model}"
        config = self._model_config
        cap = getattr(config, "max_logprobs", None)
        if isinstance(cap, int) and cap != FULL_VOCABULARY and (logprobs == FULL_VOCABULARY or logprobs > cap):
            raise ValueError(f"this vLLM engine reports at most {cap} log-probs per position and "
                             f"logprobs={logprobs} was asked: build it with vllm.LLM(..., "
                             f"max_logprobs={logprobs}) or ask for logprobs <= {cap}")
        if tokenizer is None:
            tokenizer = llm.get_tokenizer()
        elif isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.text = _TextSide(None, tokenizer, answer_by=answer_by, chat=chat, name=self.model)
        limits = [getattr(config, "max_model_len", None), getattr(tokenizer, "model_max_length", None)]
        limits = [int(n) for n in limits if isinstance(n, (int, float)) and n < 10**8]
        self.text.context = min(limits) if limits else 2048

    # ------------------------------------------------------------------------ description
    @property
    def _model_config(self):
        engine = getattr(self.llm, "llm_engine", None)
        return getattr(engine, "model_config", None)

    @property
    def capabilities(self) -> frozenset[str]:
        """What this backend computes: options scored exactly, generation, continuation
        scoring and token counts; "token_entropy" only with ``logprobs=-1``."""
        caps = {SCORE_OPTIONS, EXACT_OPTION_SCORES, GENERATE, SCORE_CONTINUATION, COUNT_TOKENS}
        if self.logprobs == FULL_VOCABULARY:
            caps.add(TOKEN_ENTROPY)
        return frozenset(caps)

    @property
    def answer_by(self) -> str:
        return self.text.answer_by

    @property
    def chat(self) -> bool:
        return self.text.chat

    @property
    def tokenizer(self):
        return self.text.tokenizer

    @property
    def max_length(self) -> int:
        """Longest prompt + response in tokens: vLLM's ``max_model_len`` (and the
        tokenizer's limit, when it sets one)."""
        return self.text.max_length

    @property
    def fingerprint(self) -> str:
        """16 hex digits for the keys of stored results: the model and revision vLLM loaded,
        its dtype, quantization and context, the answer conventions, k (entropies depend on
        it), and the vLLM and robustft versions."""
        from importlib.metadata import PackageNotFoundError, version

        def installed(name):
            try:
                return version(name)
            except PackageNotFoundError:
                return None

        cfg = self._model_config
        parts = {"backend": "vllm", "model": getattr(cfg, "model", self.model),
                 "revision": getattr(cfg, "revision", None), "dtype": str(getattr(cfg, "dtype", None)),
                 "quantization": getattr(cfg, "quantization", None), "max_length": self.max_length,
                 "tokenizer": getattr(self.tokenizer, "name_or_path", None),
                 "answer_by": self.answer_by, "chat": self.chat, "logprobs": self.logprobs,
                 "versions": {"vllm": installed("vllm"), "robustft": installed("robustft")}}
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # --------------------------------------------------------------------- token counting
    def render(self, prompt: str) -> str:
        """The text the model reads before its response (`LanguageModel.render`)."""
        return self.text.render(prompt)

    def prompt_tokens(self, prompts: Sequence[str]) -> list[int]:
        """Tokens of each rendered prompt."""
        return self.text.prompt_tokens(prompts)

    def answer_room(self, samples: Sequence[Sample], budget: int) -> list[int]:
        """Tokens each sample's answer needs after its prompt (`LanguageModel.answer_room`)."""
        return self.text.answer_room(samples, budget)

    def fits(self, prompts: Sequence[str], room) -> np.ndarray:
        """[n] bool: the rendered prompt plus `room` tokens fit in `max_length`."""
        return self.text.fits(prompts, room)

    # ------------------------------------------------------------------------- requests
    def _run(self, token_ids: Sequence[Sequence[int]], params: Sequence[Any], batch_size: int) -> list:
        """`LLM.generate` over token-id prompts, `batch_size` requests per call (a call's
        outputs, with their per-token maps of k log-probs, stay in memory until parsed)."""
        outputs = []
        step = max(1, int(batch_size))
        for lo in range(0, len(token_ids), step):
            prompts = [{"prompt_token_ids": list(ids)} for ids in token_ids[lo:lo + step]]
            got = self.llm.generate(prompts, list(params[lo:lo + step]), use_tqdm=False)
            if len(got) != len(prompts):
                raise RuntimeError(f"vLLM returned {len(got)} outputs for {len(prompts)} requests")
            outputs.extend(got)
        return outputs

    def _scoring_params(self, k: int):
        # max_tokens=1: vLLM generates at least one token; only the prompt's log-probs are read.
        return _sampling_params(max_tokens=1, temperature=0.0, prompt_logprobs=k)

    def score_options(self, samples: Sequence[Sample], prompts: Sequence[str] | None = None, *,
                      by: str | None = None, responses: Sequence[str] | None = None,
                      batch_size: int = 1024) -> OptionScores:
        """Score every option of every multiple-choice sample, as
        `robustft.inference.score_options` does: each option's continuation (`` B`` or
        `` <option text>``) after ``render(prompt) [+ response + "\\n"] + "Answer:"``, one
        vLLM request per (question, option).

        Returns numpy `OptionScores` [n, K]: exact log-probs, token counts, and top-k entropies
        (exact only with ``logprobs=-1``). `batch_size`: requests per `LLM.generate` call.
        """
        by = by or self.answer_by
        prompts = [direct_prompt(s) for s in samples] if prompts is None else list(prompts)
        if len(prompts) != len(samples) or (responses is not None and len(responses) != len(samples)):
            raise ValueError(f"{len(prompts)} prompts and {len(responses or prompts)} responses for "
                             f"{len(samples)} samples")
        width = max((len(s.options) for s in samples), default=0)
        rows, contexts, conts = [], [], []
        for i, (s, p) in enumerate(zip(samples, prompts)):
            head = answer_head(self.render(p), responses[i] if responses is not None else None)
            for k, c in enumerate(option_continuations(s, by)):
                rows.append((i, k))
                contexts.append(head)
                conts.append(c)
        pairs = self.text.encode_pairs(contexts, conts) if rows else []
        for (i, _), (c, x) in zip(rows, pairs):
            # + 1: vLLM generates one token after the scored sequence.
            self.text.check_length(len(c) + len(x) + 1, samples[i].id)
        params = [self._scoring_params(self.logprobs)] * len(pairs)
        outputs = self._run([c + x for c, x in pairs], params, batch_size)
        return parse_option_scores(outputs, rows, pairs, (len(samples), width))

    def score_continuations(self, prompts: Sequence[str], continuations: Sequence[str], *,
                            batch_size: int = 1024) -> list[np.ndarray]:
        """Teacher-forced log-probs of each continuation after its rendered prompt: a list
        of [L_i] float64 arrays (the continuation's tokens by `LanguageModel.encode_pairs`)."""
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts and {len(continuations)} continuations")
        pairs = self.text.encode_pairs([self.render(p) for p in prompts], list(continuations))
        for j, (c, x) in enumerate(pairs):
            self.text.check_length(len(c) + len(x) + 1, j)
        todo = [j for j, (_, x) in enumerate(pairs) if x]
        # k=1: only each token's own log-prob is read (vLLM adds it to the top 1).
        params = [self._scoring_params(1)] * len(todo)
        outputs = self._run([pairs[j][0] + pairs[j][1] for j in todo], params, batch_size)
        result = [np.empty(0, dtype=np.float64) for _ in pairs]
        for j, out in zip(todo, outputs):
            c, x = pairs[j]
            result[j] = continuation_logprobs(out.prompt_logprobs, _checked_prompt(out, c + x), len(c))[0]
        return result

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 seed: int = 0, batch_size: int = 1024, ids: Sequence | None = None) -> list[Generation]:
        """Generate a response to each prompt (chat template applied here), with per-token
        log-probs, as `robustft.inference.generate` does.

        A response stops at end of sequence, at `max_new_tokens`, or where prompt + response
        reach `max_length` (``finished`` False for the last two); a prompt that leaves no room
        is a ValueError naming it. With temperature > 0 each prompt samples with its own seed,
        derived from `seed` and its id (`ids`, default its position).
        """
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        ids = list(range(len(prompts))) if ids is None else list(ids)
        if len(ids) != len(prompts):
            raise ValueError(f"{len(ids)} ids for {len(prompts)} prompts")
        encoded = self.text._encode([self.render(p) for p in prompts]) if prompts else []
        params = []
        for name, e in zip(ids, encoded):
            self.text.check_length(len(e) + 1, name)
            params.append(_sampling_params(
                max_tokens=min(max_new_tokens, self.max_length - len(e)), temperature=float(temperature),
                top_p=1.0, seed=_request_seed(seed, name) if temperature > 0 else None,
                logprobs=self.logprobs))
        outputs = self._run(encoded, params, batch_size)
        results = []
        for out, e in zip(outputs, encoded):
            _checked_prompt(out, e)
            results.append(parse_generation(out.outputs[0]))
        return results
