"""An OpenAI-compatible server as a backend: vLLM, SGLang, llama.cpp's server.

A session::

    vllm serve HuggingFaceTB/SmolLM2-135M-Instruct          # on the GPU box
    lm = ServerBackend("http://gpu-box:8000/v1", "HuggingFaceTB/SmolLM2-135M-Instruct",
                       tokenizer="HuggingFaceTB/SmolLM2-135M-Instruct")
    robustft.denoise(samples, lm, config, out="runs/arc30")   # the same chain, the same store

Requests go through the ``openai`` client (``pip install 'robustft[server]'``) to the legacy
completions endpoint (``/v1/completions``), the one vLLM and SGLang serve with log-probs:

- **option scoring**, exactly, from each option's continuation log-probs: the prompt
  ``render(prompt) + "Answer:" + option`` is sent with ``echo=True`` and ``logprobs``, and the
  option's tokens are the prompt's last ones (the prompt's token count is the response's
  ``usage.prompt_tokens``; the tokens that spell the option are found from the end with
  ``text_offset``, so a leading BOS token's text does not shift them). Where ``echo`` is
  refused, vLLM's ``prompt_logprobs`` (``extra_body``) give the same numbers. Where neither is
  served (llama.cpp's server rejects ``echo``), each option is scored by the **top-k
  next-token log-prob** of its first token after ``Answer:`` (`top_logprobs`), an
  approximation: the backend then lacks "exact_option_scores" and the run lists an
  ``approximate_scores`` warning (`robustft.backends.backend_warnings`);
- **generation**: ``logprobs`` give each generated token's log-prob (the eos token's
  included, as vLLM reports it); Shannon entropies are not served (nan: no "token_entropy");
- **continuations** are scored like options (``echo`` or ``prompt_logprobs``).

What the server does is probed once, when the backend is made (one ``/v1/models`` request
and up to three one-token completions): `scoring` says what was found and `capabilities`
what follows from it. Requests run concurrently, at most `max_in_flight` at a time; the
client retries 408/409/429/5xx answers, dropped connections and timeouts with exponential
backoff (``max_retries``, honouring the server's ``Retry-After``).

Rendering and token counts: with a local `tokenizer` (a folder or Hub id loaded with
``AutoTokenizer.from_pretrained``, never with remote code) the chat template is applied here
and the prompt is sent with ``add_special_tokens=False`` (the rendered text holds its own
BOS); without one the prompt is sent as it is (no chat template) and tokens are counted by
the server (``usage.prompt_tokens`` of a one-token completion per text, cached).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from ..inference import Generation, answer_head, option_continuations
from ..kernels import OptionScores
from ..prompts import ANSWER_PREFIX
from ..sample import MC, Sample
from . import CAPABILITIES

SCORING = ("echo", "prompt_logprobs", "topk")
DEFAULT_MAX_LENGTH = 2048  # when neither the server nor a tokenizer says (as LanguageModel does)


class ServerError(ConnectionError):
    """The server cannot be reached, rejects the key, or keeps failing after the retries."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_tokenizer(tokenizer):
    """A tokenizer from a local folder or a Hub id (`AutoTokenizer.from_pretrained`, no
    remote code), or the given tokenizer object itself; None stays None."""
    if tokenizer is None or not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer), trust_remote_code=False)


class ServerBackend:
    """A model served behind an OpenAI-compatible completions endpoint (see the module).

    Args:
        base_url: the server's API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the served model's name (as ``/v1/models`` lists it).
        tokenizer: a local tokenizer (folder, Hub id or tokenizer object) for the chat
            template and token counts; None: no chat template, the server counts tokens.
        api_key: the key; default the ``OPENAI_API_KEY`` environment variable (a local vLLM
            needs none: "EMPTY" is sent).
        max_in_flight: most requests at a time.
        timeout: seconds before a request counts as timed out (then retried).
        max_retries: retries per request (429, 5xx, timeouts; exponential backoff).
        answer_by: "letter" or "text"; default "letter" with a chat template, else "text"
            (as `robustft.LanguageModel`).
        chat: apply the tokenizer's chat template; default whether it has one.
        scoring: "auto" (probe the server), or one of `SCORING` to skip the probe.
        top_logprobs: k of the top-k fallback (vLLM serves at most 20 by default).
        max_length: the context length; default what ``/v1/models`` reports
            (``max_model_len``), else the tokenizer's, else 2048.

    Attributes:
        scoring: how options are scored ("echo", "prompt_logprobs", "topk"), or None when
            the server gives no log-probs at all.
        capabilities: what this server can do (`robustft.backends.CAPABILITIES`).
        card: what ``/v1/models`` says of the model (id, root, owner, context length).
        stats: requests sent and seconds spent waiting for them (summed over threads).
    """

    def __init__(self, base_url: str, model: str, *, tokenizer=None, api_key: str | None = None,
                 max_in_flight: int = 8, timeout: float = 120.0, max_retries: int = 5, answer_by: str | None = None,
                 chat: bool | None = None, scoring: str = "auto", top_logprobs: int = 20,
                 max_length: int | None = None):
        try:
            import openai
        except ImportError as e:
            raise ImportError("the server backend needs the openai client: pip install 'robustft[server]' "
                              "(or pip install openai)") from e
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if scoring != "auto" and scoring not in SCORING:
            raise ValueError(f"scoring must be 'auto' or one of {SCORING}, got {scoring!r}")
        self._openai = openai
        self.base_url, self.model = base_url.rstrip("/"), model
        self.name = f"{model} at {self.base_url}"
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=max_retries)
        self.max_in_flight, self.top_logprobs = max_in_flight, top_logprobs
        self.tokenizer = load_tokenizer(tokenizer)
        self.chat = bool(getattr(self.tokenizer, "chat_template", None)) if chat is None else chat
        if self.chat and self.tokenizer is None:
            raise ValueError("chat=True needs a local tokenizer (its chat template): pass tokenizer=...")
        self.answer_by = answer_by or ("letter" if self.chat else "text")
        if self.answer_by not in ("letter", "text"):
            raise ValueError(f"answer_by must be 'letter' or 'text', got {self.answer_by!r}")
        self.stats = {"requests": 0, "seconds": 0.0}
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}  # server-counted tokens per text (no local tokenizer)
        self.card = self._model_card()
        self.scoring = self._probe() if scoring == "auto" else scoring
        self._max_length = max_length
        caps = {"count_tokens"}
        if self.scoring is not None:
            caps |= {"score_options", "generate"}
        if self.scoring in ("echo", "prompt_logprobs"):
            caps |= {"exact_option_scores", "score_continuation"}
        self.capabilities = frozenset(caps) & CAPABILITIES
        self.approximation = ("the server refused echo and prompt_logprobs" if self.scoring == "topk" else None)

    # ------------------------------------------------------------------ the Backend seam
    @property
    def fingerprint(self) -> str:
        """16 hex digits from the served model's name, what ``/v1/models`` reports of it, how
        options are scored, the prompt conventions and the tokenizer: never equal to an
        in-process model's (stored batches of one never pass for the other's)."""
        parts = {"backend": "openai-completions", "model": self.model, "card": self.card, "scoring": self.scoring,
                 "answer_by": self.answer_by, "chat": self.chat, "tokenizer": self._tokenizer_hash(),
                 "top_logprobs": self.top_logprobs if self.scoring == "topk" else None}
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def _tokenizer_hash(self) -> str | None:
        """The local tokenizer by its content (vocabulary, special tokens, chat template), not
        its path: the same tokenizer read from two folders renders and counts alike."""
        tok = self.tokenizer
        if tok is None:
            return None
        if getattr(self, "_tok_hash", None) is None:
            blob = json.dumps([sorted(tok.get_vocab().items()), getattr(tok, "chat_template", None),
                               [str(t) for t in getattr(tok, "all_special_tokens", [])]], default=str)
            self._tok_hash = hashlib.sha256(blob.encode()).hexdigest()[:16]
        return self._tok_hash

    @property
    def max_length(self) -> int:
        """The context length: given, or the server's ``max_model_len``, or the tokenizer's."""
        if self._max_length:
            return int(self._max_length)
        if self.card.get("max_model_len"):
            return int(self.card["max_model_len"])
        n = getattr(self.tokenizer, "model_max_length", None)
        return int(n) if n is not None and n < 10**8 else DEFAULT_MAX_LENGTH

    def capability_hint(self, missing: Sequence[str]) -> str:
        """What to do about `missing` capabilities (quoted by `robustft.backends.require`)."""
        hints = []
        if "hidden_states" in missing:
            hints.append("a server gives no hidden states: use --embedder minilm or tfidf")
        if "token_entropy" in missing:
            hints.append("a server gives no token entropies: rank by --entropy nll or options")
        if {"score_options", "generate", "score_continuation", "exact_option_scores"} & set(missing):
            hints.append(f"this server scored with {self.scoring or 'no log-probs at all'}; serve the model with "
                         "vLLM or SGLang (completions with echo + logprobs)")
        return "; ".join(hints)

    def render(self, prompt: str) -> str:
        """The text the model reads: the chat template's user turn and assistant header, or
        the prompt itself without a chat template."""
        if not self.chat:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def prompt_tokens(self, prompts: Sequence[str]) -> list[int]:
        """Tokens of each rendered prompt (local tokenizer, else the server's count)."""
        return self._count([self.render(p) for p in prompts], special=not self.chat)

    def answer_room(self, samples: Sequence[Sample], budget: int) -> list[int]:
        """As `robustft.LanguageModel.answer_room`: the longest option's tokens (scored) or
        `budget` (generated), + 2. Counted by the server, an option's count includes the BOS
        token the server adds: one token more than needed, never fewer."""
        flat = [" " + o for s in samples for o in s.options]
        lengths = iter(self._count(flat, special=False))
        longest = [max((next(lengths) for _ in s.options), default=0) for s in samples]
        return [(o if s.task == MC and o else budget) + 2 for s, o in zip(samples, longest)]

    def fits(self, prompts: Sequence[str], room) -> np.ndarray:
        """[n] bool: the rendered prompt plus `room` tokens fit in `max_length`."""
        rooms = [room] * len(prompts) if isinstance(room, int) else list(room)
        return np.array([n + r <= self.max_length for n, r in zip(self.prompt_tokens(prompts), rooms)], dtype=bool)

    def score_options(self, samples: Sequence[Sample], prompts: Sequence[str] | None = None, *,
                      by: str | None = None, responses: Sequence[str] | None = None,
                      batch_size: int = 64) -> OptionScores:
        """`OptionScores` ([n, K] numpy) of each sample's options after ``Answer:``, as
        `robustft.inference.score_options` computes them: exact sums of the options' token
        log-probs ("echo"/"prompt_logprobs"), or the top-k next-token log-prob of each
        option's first token ("topk"; an option outside the top k gets the k-th log-prob,
        the most it can have). Entropies are nan (a server does not give them).
        `batch_size` is unused: requests go one sequence at a time, `max_in_flight` at once."""
        from ..prompts import direct_prompt

        by = by or self.answer_by
        prompts = [direct_prompt(s) for s in samples] if prompts is None else list(prompts)
        if len(prompts) != len(samples) or (responses is not None and len(responses) != len(samples)):
            raise ValueError(f"{len(prompts)} prompts and {len(responses or prompts)} responses for "
                             f"{len(samples)} samples")
        n, width = len(samples), max((len(s.options) for s in samples), default=0)
        logprobs, n_tokens = np.full((n, width), -np.inf), np.zeros((n, width), dtype=np.int64)
        entropy = np.full((n, width), np.nan)
        heads = []
        for i, (s, p) in enumerate(zip(samples, prompts)):
            heads.append(answer_head(self.render(p), responses[i] if responses is not None else None))
        conts = [option_continuations(s, by) for s in samples]
        if self.scoring == "topk":
            tops = self._map(lambda i: self._top_next(heads[i], samples[i].id), range(n))
            for i, top in enumerate(tops):
                floor = min(top.values())
                for k, c in enumerate(conts[i]):
                    logprobs[i, k], n_tokens[i, k] = _first_token_logprob(top, c, floor), 1
            return OptionScores(logprobs, n_tokens, entropy)
        jobs = [(i, k, heads[i], c) for i in range(n) for k, c in enumerate(conts[i])]
        for (i, k, _, _), lp in zip(jobs, self._map(lambda j: self._continuation(j[2], j[3], samples[j[0]].id), jobs)):
            logprobs[i, k], n_tokens[i, k] = float(np.sum(lp)), len(lp)
        return OptionScores(logprobs, n_tokens, entropy)

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
                 batch_size: int = 16, ids: Sequence | None = None) -> list[Generation]:
        """One `Generation` per prompt: text, per-token log-probs (eos included), entropies
        nan, `finished` where the server stopped by itself. With a local tokenizer the budget
        is cut to what the context leaves, as in-process (a prompt that leaves no room is an
        error); without one the server's own check applies. Each prompt's sampling seed is
        `seed` plus its position (`temperature` > 0; reproducible where the server honours
        ``seed``). `batch_size` is unused."""
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        names = list(range(len(prompts))) if ids is None else list(ids)
        texts = [self.render(p) for p in prompts]
        budgets = [max_new_tokens] * len(texts)
        if self.tokenizer is not None:
            for j, (name, n) in enumerate(zip(names, self._count(texts, special=not self.chat))):
                if n + 1 > self.max_length:
                    raise ValueError(f"sample {name!r}: {n + 1} tokens exceed the model's maximum length "
                                     f"{self.max_length}; shorten the prompt or use a model with a longer context")
                budgets[j] = min(max_new_tokens, self.max_length - n)

        def one(j):
            kw = dict(temperature=temperature, seed=seed + j) if temperature > 0 else dict(temperature=0.0)
            r = self._call(names[j], prompt=texts[j], max_tokens=budgets[j], logprobs=1,
                           extra_body=self._body(return_tokens_as_token_ids=True), **kw)
            c = r.choices[0]
            lp = c.logprobs
            if lp is None or lp.token_logprobs is None:
                raise ServerError(f"{self.name}: the server returned no logprobs for sample {names[j]!r}")
            values = np.array([np.nan if v is None else v for v in lp.token_logprobs], dtype=np.float64)
            tokens = [t[len("token_id:"):] for t in (lp.tokens or []) if t.startswith("token_id:")]
            token_ids = [int(t) for t in tokens] if len(tokens) == len(values) else []
            return Generation(c.text, token_ids, values, np.full(len(values), np.nan), c.finish_reason == "stop")

        return self._map(one, range(len(texts)))

    def score_continuations(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[np.ndarray]:
        """Per continuation, [L_i] float64 teacher-forced log-probs of its tokens after the
        rendered prompt ("echo" or "prompt_logprobs"; a CapabilityError otherwise)."""
        from . import require

        require(self, "score_continuation", stage="score_continuations")
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts for {len(continuations)} continuations")
        pairs = list(zip([self.render(p) for p in prompts], continuations))
        return self._map(lambda ij: self._continuation(ij[1][0], ij[1][1], ij[0]), list(enumerate(pairs)))

    # ---------------------------------------------------------------------- requests
    def _body(self, **extra) -> dict:
        # A chat-rendered text already holds its BOS; vLLM would add another one.
        return {**extra, **({"add_special_tokens": False} if self.chat else {})}

    def _map(self, fn: Callable, items) -> list:
        items = list(items)
        if len(items) <= 1 or self.max_in_flight == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="robustft-request") as pool:
            return list(pool.map(fn, items))

    def _raw(self, **kw):
        t0 = time.perf_counter()
        try:
            return self.client.completions.create(model=self.model, **kw)
        finally:
            with self._lock:
                self.stats["requests"] += 1
                self.stats["seconds"] += time.perf_counter() - t0

    def _call(self, what, **kw):
        """One completion; the client's errors as one-line messages naming `what` (a sample)."""
        o = self._openai
        try:
            return self._raw(**kw)
        except o.BadRequestError as e:
            raise ValueError(f"{self.name}: the server refused the request for sample {what!r}: "
                             f"{_first_line(e)}") from None
        except (o.APIConnectionError, o.APIStatusError) as e:  # after the client's retries
            raise ServerError(f"{self.name}: the request for sample {what!r} failed after "
                              f"{self.client.max_retries} retries: {_first_line(e)}") from None

    def _model_card(self) -> dict:
        o = self._openai
        try:
            page = self.client.with_options(max_retries=1).models.list()
        except o.APIConnectionError as e:
            raise ServerError(f"cannot reach the server at {self.base_url} ({_first_line(e)}); is it running, "
                              "and is the URL its API root (…/v1)?") from None
        except o.AuthenticationError:
            raise ServerError(f"the server at {self.base_url} rejected the API key (set OPENAI_API_KEY)") from None
        except o.APIStatusError as e:
            raise ServerError(f"the server at {self.base_url} has no OpenAI-compatible /models endpoint "
                              f"({_first_line(e)}); give its API root (…/v1)") from None
        served = {m.id: m for m in page.data}
        if self.model not in served:
            raise ValueError(f"the server at {self.base_url} serves {sorted(served)}, not {self.model!r}: "
                             "give one of these as the model")
        card = served[self.model].model_dump()
        return {k: card.get(k) for k in ("id", "root", "owned_by", "max_model_len")}

    def _probe(self) -> str | None:
        """How this server can score options: "echo", "prompt_logprobs", "topk", or None."""
        o = self._openai
        head = self.render("Which letter comes first? A or B") + ANSWER_PREFIX
        tries = (("echo", dict(prompt=head + " A", max_tokens=1, echo=True, logprobs=1, temperature=0.0)),
                 ("prompt_logprobs", dict(prompt=head + " A", max_tokens=1, temperature=0.0,
                                          extra_body=self._body(prompt_logprobs=0))),
                 ("topk", dict(prompt=head, max_tokens=1, logprobs=self.top_logprobs, temperature=0.0)))
        for mode, kw in tries:
            if mode == "echo":
                kw["extra_body"] = self._body()
            elif mode == "topk":
                kw["extra_body"] = self._body()
            try:
                c = self._raw(**kw).choices[0]
            except o.BadRequestError:  # refused (llama.cpp rejects echo): try the next
                continue
            except (o.APIConnectionError, o.APIStatusError) as e:
                raise ServerError(f"{self.name}: probing the completions endpoint failed: {_first_line(e)}") from None
            lp = c.logprobs
            if mode == "echo" and lp is not None and lp.text_offset and lp.token_logprobs \
                    and any(v is not None for v in lp.token_logprobs[:-1]):
                return mode
            if mode == "prompt_logprobs" and any(getattr(c, "prompt_logprobs", None) or ()):
                return mode
            if mode == "topk" and lp is not None and lp.top_logprobs and lp.top_logprobs[0]:
                return mode
        return None

    def _count(self, texts: Sequence[str], special: bool) -> list[int]:
        """Tokens of each text: the local tokenizer's (with BOS where `special`), else the
        server's ``usage.prompt_tokens`` (its own tokenizer; cached per text)."""
        if not texts:
            return []
        if self.tokenizer is not None:
            return [len(x) for x in self.tokenizer(list(texts), add_special_tokens=special, verbose=False)["input_ids"]]
        todo = [t for t in dict.fromkeys(texts) if t not in self._counts]

        def count(text):
            r = self._call("(token count)", prompt=text, max_tokens=1, temperature=0.0, extra_body=self._body())
            if r.usage is None:
                from . import CapabilityError

                raise CapabilityError(f"{self.name}: the server reports no usage, so tokens cannot be counted "
                                      "without a local tokenizer: pass one (--tokenizer)", ["count_tokens"])
            return r.usage.prompt_tokens

        for t, n in zip(todo, self._map(count, todo)):
            self._counts[t] = n
        return [self._counts[t] for t in texts]

    def _continuation(self, head: str, cont: str, what) -> np.ndarray:
        """[L] log-probs of `cont`'s tokens after `head` (the prompt ``head + cont`` echoed).

        The prompt's tokens are the first ``usage.prompt_tokens`` of the echo (a one-token
        completion follows them); `cont`'s are the last of those whose text reaches into its
        last len(cont) characters (a token that straddles the seam counts: the server
        tokenised head and continuation as one text, as `LanguageModel.encode_pairs` does)."""
        if not cont:
            return np.zeros(0)
        text = head + cont
        if self.scoring == "prompt_logprobs":
            r = self._call(what, prompt=text, max_tokens=1, temperature=0.0, extra_body=self._body(prompt_logprobs=0))
            entries = getattr(r.choices[0], "prompt_logprobs", None) or []
            tokens, values = [], []
            for e in entries:
                if not e:  # the first token has no log-prob
                    tokens.append(""), values.append(None)
                    continue
                info = next(iter(e.values()))  # prompt_logprobs=0: the prompt's own token only
                tokens.append(info.get("decoded_token") or "")
                values.append(info.get("logprob"))
            offsets = np.concatenate([[0], np.cumsum([len(t) for t in tokens])])[:-1].tolist()
        else:
            r = self._call(what, prompt=text, max_tokens=1, echo=True, logprobs=1, temperature=0.0,
                           extra_body=self._body())
            lp = r.choices[0].logprobs
            n = r.usage.prompt_tokens if r.usage is not None else len(lp.tokens) - 1
            tokens, values, offsets = lp.tokens[:n], lp.token_logprobs[:n], lp.text_offset[:n]
        if not tokens:
            raise ServerError(f"{self.name}: no prompt log-probs came back for sample {what!r}")
        end = offsets[-1] + len(tokens[-1])  # offsets may count a BOS token's text: measure from the end
        start = end - len(cont)
        picked = [v for o, t, v in zip(offsets, tokens, values) if o + len(t) > start]
        if not picked or any(v is None for v in picked):
            raise ServerError(f"{self.name}: the echoed tokens of sample {what!r} do not cover its continuation "
                              f"{cont!r}")
        return np.array(picked, dtype=np.float64)

    def _top_next(self, head: str, what) -> dict[str, float]:
        """The top-k next tokens after `head` and their log-probs."""
        r = self._call(what, prompt=head, max_tokens=1, logprobs=self.top_logprobs, temperature=0.0,
                       extra_body=self._body())
        lp = r.choices[0].logprobs
        top = (lp.top_logprobs or [None])[0] if lp is not None else None
        if not top:
            raise ServerError(f"{self.name}: no top log-probs came back for sample {what!r}")
        return dict(top)


def _first_token_logprob(top: dict[str, float], cont: str, floor: float) -> float:
    """The top-k log-prob of `cont`'s first token: the longest top-k token that `cont` starts
    with (the letter " B" itself when answering by letter); `floor` (the k-th log-prob, the
    most an unlisted token can have) when none is listed."""
    best = None
    for tok, lp in top.items():
        if tok and cont.startswith(tok) and (best is None or len(tok) > len(best[0])):
            best = (tok, lp)
    return float(best[1]) if best is not None else float(floor)


__all__ = ["SCORING", "ServerBackend", "ServerError", "load_tokenizer"]
