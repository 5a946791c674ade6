"""The vLLM offline backend (robustft.backends.vllm).

On CPU: its requests go to a stand-in of `vllm.LLM` that runs the toy model and answers with
vLLM's output classes, rebuilt below with exactly vLLM's attribute names; the backend's
option scores, generations and continuation scores must equal the in-process model's
(robustft.inference) within 1e-5. On a machine with CUDA or vLLM: the real engine on the toy
model's shipped weights.

vLLM's classes, as read in vLLM's source (github.com/vllm-project/vllm):
- vllm/outputs.py @ 003d3ee22261b7937258b7531aee00e10393f1d6: `CompletionOutput` (a dataclass:
  index, text, token_ids, cumulative_logprob, logprobs, ..., finish_reason, stop_reason) and
  `RequestOutput` (request_id, prompt, prompt_token_ids, prompt_logprobs, outputs, finished).
- vllm/logprobs.py @ 578b601cd1f41074873532e99af8369bf75cb5a9: `Logprob` (logprob, rank,
  decoded_token); one position is a ``dict[int, Logprob]``; prompt log-probs start with None
  (nothing predicts the first prompt token); each map holds the prompt's or sampled token (with
  its own rank) and then the top k (ranks 1..k), so a token in the top k appears once.
- vllm/sampling_params.py: SamplingParams(n, temperature, top_p, seed, max_tokens, logprobs,
  prompt_logprobs); max_tokens >= 1.
"""
import ast
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import robustft.backends.vllm as vb
import robustft.offline as offline
from robustft.backends.vllm import VLLMBackend
from robustft.inference import generate, score_options
from robustft.model import load_model
from robustft.prompts import direct_prompt
from tiny_lm import make_lm, make_samples

ATOL = 1e-5


# ------------------------------------------------------------- vLLM's classes (stand-ins)
@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list
    cumulative_logprob: float | None
    logprobs: list | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list | None
    prompt_logprobs: list | None
    outputs: list
    finished: bool


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    max_tokens: int | None = 16
    logprobs: int | None = None
    prompt_logprobs: int | None = None


class ToyLLM:
    """`vllm.LLM` in miniature over a robustft model: `generate` takes token-id prompts
    (``{"prompt_token_ids": [...]}``) and one SamplingParams per prompt, runs each sequence
    unpadded and without a cache (float32 logits, an independent computation from
    robustft.inference's batched, cached one), decodes greedily (or samples with the
    request's seed), and answers with vLLM's log-prob maps."""

    def __init__(self, lm, max_logprobs: int = 20):
        self.lm, self.requests = lm, []
        self.pieces = [lm.tokenizer.decode([t]) for t in range(len(lm.tokenizer))]  # decoded_token
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(
            model=lm.name, revision=None, dtype="float32", quantization=None,
            max_model_len=lm.max_length, max_logprobs=max_logprobs))

    def get_tokenizer(self):
        return self.lm.tokenizer

    def _position(self, logp: torch.Tensor, token: int, k: int) -> dict:
        """One position's map: `token` (its own rank), then the top k (all with k = -1)."""
        k = len(logp) if k == -1 else k
        rank = 1 + int((logp > logp[token]).sum())
        values = logp.tolist()
        top = logp.topk(k).indices.tolist() if k else []
        out = {token: Logprob(values[token], rank, self.pieces[token])}
        for r, t in enumerate(top, 1):
            if t not in out:
                out[t] = Logprob(values[t], r, self.pieces[t])
        return out

    @torch.inference_mode()
    def generate(self, prompts, sampling_params, *, use_tqdm=True):
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        outs = []
        for r, (p, sp) in enumerate(zip(prompts, params)):
            self.requests.append((list(p["prompt_token_ids"]), sp))
            ids = list(p["prompt_token_ids"])
            seq, gen, steps, prompt_lp, finish = list(ids), [], [], None, "length"
            rng = torch.Generator().manual_seed(sp.seed) if sp.temperature > 0 else None
            for step in range(sp.max_tokens):
                logits = self.lm.model(input_ids=torch.tensor([seq])).logits[0].float()
                logp = torch.log_softmax(logits, -1)
                if step == 0 and sp.prompt_logprobs is not None:
                    prompt_lp = PromptPositions(self, logp[:len(ids) - 1], ids, sp.prompt_logprobs)
                if rng is None:
                    nxt = int(logp[-1].argmax())
                else:
                    nxt = int(torch.multinomial(torch.softmax(logits[-1] / sp.temperature, -1), 1, generator=rng))
                gen.append(nxt)
                seq.append(nxt)
                if sp.logprobs is not None:
                    steps.append(self._position(logp[-1], nxt, sp.logprobs))
                if nxt in self.lm.eos_token_ids:
                    finish = "stop"
                    break
            text_ids = gen[:-1] if finish == "stop" else gen
            text = self.lm.tokenizer.decode(text_ids, skip_special_tokens=True)
            done = CompletionOutput(0, text, gen, None, steps if sp.logprobs is not None else None, finish)
            outs.append(RequestOutput(str(r), None, ids, prompt_lp, [done], True))
        return outs


class PromptPositions(Sequence):
    """A `RequestOutput.prompt_logprobs` whose maps are built when read, as vLLM's own
    `FlatLogprobs` (vllm/logprobs.py) builds them on indexing: position 0 is None, position t
    the map of the distribution that predicted prompt token t (a whole-vocabulary map per
    position would make these tests slow)."""

    def __init__(self, llm: ToyLLM, logp: torch.Tensor, ids: list, k: int):
        self.llm, self.logp, self.ids, self.k = llm, logp, ids, k

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, t):
        if isinstance(t, slice):
            return [self[i] for i in range(*t.indices(len(self)))]
        t = range(len(self))[t]
        return None if t == 0 else self.llm._position(self.logp[t - 1], self.ids[t], self.k)


@pytest.fixture(autouse=True)
def stand_in_sampling_params(monkeypatch):
    monkeypatch.setattr(vb, "_sampling_params", SamplingParams)


@pytest.fixture(scope="module")
def toy():
    return load_model("toy", progress=False)


@pytest.fixture(scope="module")
def questions():
    return list(offline.make_benchmark().test)[:10]


def backend_for(lm, logprobs: int | None = None, **kw):
    """A VLLMBackend over a ToyLLM of `lm`; default k: the whole vocabulary, listed (so the
    top-k entropies are the exact ones)."""
    k = len(lm.tokenizer) if logprobs is None else logprobs
    return VLLMBackend(lm.name, llm=ToyLLM(lm, max_logprobs=k), tokenizer=lm.tokenizer,
                       answer_by=lm.answer_by, chat=lm.chat, logprobs=k, **kw)


# --------------------------------------------------------------- same numbers as in-process
@pytest.mark.parametrize("by", ["text", "letter"])
def test_option_scores_equal_the_in_process_model(toy, questions, by):
    backend = backend_for(toy)
    got = backend.score_options(questions, by=by, batch_size=7)
    want = score_options(toy, questions, by=by, progress=False)
    assert got.logprobs.shape == want.logprobs.shape == (10, 4)
    np.testing.assert_array_equal(got.n_tokens, want.n_tokens)
    np.testing.assert_allclose(got.logprobs, want.logprobs, atol=ATOL, rtol=0)
    np.testing.assert_allclose(got.entropy, want.entropy, atol=ATOL, rtol=0)
    assert (got.best() == want.best()).all()
    # One request per (question, option), sent as token ids, asking only for prompt log-probs.
    sent = backend.llm.requests
    assert len(sent) == 40 and all(sp.prompt_logprobs == len(toy.tokenizer) and sp.max_tokens == 1
                                   for _, sp in sent)


def test_option_scores_after_a_response_and_with_a_chat_template(toy, questions):
    said = ["Kumin works as a carver.", "", "  ", "The answer follows."] + [""] * 6
    got = backend_for(toy).score_options(questions, responses=said)
    want = score_options(toy, questions, responses=said, progress=False)
    np.testing.assert_allclose(got.logprobs, want.logprobs, atol=ATOL, rtol=0)
    # A chat model answering by letter: the template is applied as in-process, and every letter
    # is read after the same context.
    chat = make_lm(chat=True)
    assert chat.chat and chat.answer_by == "letter"
    samples = make_samples(6)
    got = backend_for(chat).score_options(samples)
    want = score_options(chat, samples, progress=False)
    assert (got.n_tokens == 1).all()
    np.testing.assert_allclose(got.logprobs, want.logprobs, atol=ATOL, rtol=0)
    np.testing.assert_allclose(got.entropy, want.entropy, atol=ATOL, rtol=0)


def test_generations_equal_the_in_process_model(toy, questions):
    prompts = [direct_prompt(s) for s in questions]
    backend = backend_for(toy)
    got = backend.generate(prompts, max_new_tokens=16, batch_size=4)
    want = generate(toy, prompts, max_new_tokens=16, progress=False)
    assert {g.finished for g in want} == {True, False}  # both ways of stopping are covered
    for g, w in zip(got, want):
        assert g.token_ids == w.token_ids and g.text == w.text and g.finished == w.finished
        np.testing.assert_allclose(g.logprobs, w.logprobs, atol=ATOL, rtol=0)
        np.testing.assert_allclose(g.entropy, w.entropy, atol=ATOL, rtol=0)
    assert all(sp.temperature == 0 and sp.seed is None and sp.max_tokens == 16 for _, sp in backend.llm.requests)


def test_continuation_scores_are_teacher_forced_logprobs(toy, questions):
    prompts = [direct_prompt(s) for s in questions[:4]]
    conts = ["Answer: weaver", " Kumin works as a carver.", "", "Answer: herald\n"]
    got = backend_for(toy, logprobs=1).score_continuations(prompts, conts)
    assert [len(g) for g in got][2] == 0
    for p, c, g in zip(prompts, conts, got):
        (ctx, x), = toy.encode_pairs([toy.render(p)], [c])
        with torch.no_grad():
            logp = torch.log_softmax(toy.model(input_ids=torch.tensor([ctx + x])).logits[0].double(), -1)
        want = [logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(x)]
        assert len(g) == len(x)
        np.testing.assert_allclose(g, want, atol=ATOL, rtol=0)


def test_top_k_entropy_is_a_lower_bound_and_logprobs_stay_exact(toy, questions):
    prompts = [direct_prompt(s) for s in questions[:4]]
    exact = backend_for(toy)
    small = backend_for(toy, logprobs=5)
    assert "token_entropy" not in small.capabilities and "exact_option_scores" in small.capabilities
    a, b = exact.score_options(questions), small.score_options(questions)
    np.testing.assert_allclose(b.logprobs, a.logprobs, atol=1e-12, rtol=0)  # same numbers, fewer neighbours
    assert (b.entropy <= a.entropy + 1e-12).all() and (b.entropy < a.entropy - 1e-3).any()
    ga, gb = exact.generate(prompts, max_new_tokens=6), small.generate(prompts, max_new_tokens=6)
    for x, y in zip(ga, gb):
        assert x.token_ids == y.token_ids
        np.testing.assert_allclose(y.logprobs, x.logprobs, atol=1e-12, rtol=0)
        assert (y.entropy <= x.entropy + 1e-12).all() and (y.entropy > 0).all()
    full = VLLMBackend("toy", llm=ToyLLM(toy, max_logprobs=-1), tokenizer=toy.tokenizer, logprobs=-1)
    assert "token_entropy" in full.capabilities
    np.testing.assert_allclose(full.score_options(questions[:3]).entropy, a.entropy[:3], atol=1e-12, rtol=0)


def test_sampling_seeds_follow_the_prompt_ids_not_the_call(toy, questions):
    prompts = [direct_prompt(s) for s in questions[:4]]
    ids = [s.id for s in questions[:4]]
    backend = backend_for(toy, logprobs=2)
    one = backend.generate(prompts, max_new_tokens=8, temperature=1.0, seed=3, ids=ids)
    seeds = {tuple(t): sp.seed for t, sp in backend.llm.requests}
    two = backend.generate(prompts[::-1], max_new_tokens=8, temperature=1.0, seed=3, ids=ids[::-1])
    assert [g.token_ids for g in two[::-1]] == [g.token_ids for g in one]
    assert len(set(seeds.values())) == 4
    backend.llm.requests.clear()
    backend.generate(prompts, max_new_tokens=8, temperature=1.0, seed=4, ids=ids)
    assert not set(seeds.values()) & {sp.seed for _, sp in backend.llm.requests}


def test_lengths_fingerprint_and_counting(toy, questions):
    backend = backend_for(toy)
    assert backend.max_length == toy.max_length == 512
    prompts = [direct_prompt(s) for s in questions]
    assert backend.prompt_tokens(prompts) == toy.prompt_tokens(prompts)
    assert backend.answer_room(questions, 32) == toy.answer_room(questions, 32)
    assert (backend.fits(prompts, 100) == toy.fits(prompts, 100)).all()
    assert not backend.fits(prompts, 500).any()
    fp = backend.fingerprint
    assert len(fp) == 16 and int(fp, 16) >= 0 and fp == backend_for(toy).fingerprint
    assert fp != backend_for(toy, logprobs=5).fingerprint != toy.fingerprint
    with pytest.raises(ValueError, match="'test-0000'.*exceed"):
        backend.generate([direct_prompt(questions[0]) + " word" * 600], max_new_tokens=4, ids=["test-0000"])
    # max_tokens never asks for more than the context holds: prompt + response <= max_length.
    long = direct_prompt(questions[0]) + " Zepus" * 450
    n = backend.prompt_tokens([long])[0]
    assert 480 < n < 500
    backend.generate([long], max_new_tokens=400)
    assert backend.llm.requests[-1][1].max_tokens == 512 - n


# ------------------------------------------------------------------- parsing and its errors
def test_parsing_refuses_outputs_that_do_not_match_the_requests():
    pos = {5: Logprob(-0.5, 1, "a"), 6: Logprob(-1.5, 2, "b")}
    assert vb.token_logprob(pos, 6) == -1.5
    assert vb.topk_entropy(pos) == pytest.approx(0.5 * np.exp(-0.5) + 1.5 * np.exp(-1.5))
    with pytest.raises(ValueError, match="do not include token 7"):
        vb.token_logprob(pos, 7)
    lp, ent = vb.continuation_logprobs([None, pos, pos], [9, 5, 6], 1)
    assert lp.tolist() == [-0.5, -1.5] and len(ent) == 2
    with pytest.raises(ValueError, match="prompt_logprobs=k"):
        vb.continuation_logprobs(None, [9, 5], 1)
    with pytest.raises(ValueError, match="3 positions"):
        vb.continuation_logprobs([None, pos, pos], [9, 5], 1)
    out = RequestOutput("0", None, [9, 5, 7], [None, pos, pos], [], True)
    with pytest.raises(ValueError, match="differ from the request"):
        vb.parse_option_scores([out], [(0, 0)], [([9, 5], [6])], (1, 1))
    gen = CompletionOutput(0, "ab", [5, 6], None, None, "length")
    with pytest.raises(ValueError, match="logprobs=k"):
        vb.parse_generation(gen)
    gen.logprobs = [pos, pos]
    g = vb.parse_generation(gen)
    assert g.logprobs.tolist() == [-0.5, -1.5] and not g.finished and g.text == "ab"


def test_an_engine_capped_below_k_is_refused(toy):
    with pytest.raises(ValueError, match=r"max_logprobs=50\) or ask for logprobs <= 20"):
        VLLMBackend("toy", llm=ToyLLM(toy, max_logprobs=20), tokenizer=toy.tokenizer, logprobs=50)
    with pytest.raises(TypeError, match="dtype"):
        VLLMBackend("toy", llm=ToyLLM(toy), tokenizer=toy.tokenizer, dtype="float32")


def test_without_vllm_the_constructor_says_what_it_needs(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(ImportError, match=r"needs a CUDA GPU.*`pip install vllm`"):
        VLLMBackend("Qwen/Qwen2.5-0.5B-Instruct")


def test_the_module_imports_vllm_only_inside_import_vllm():
    """So importing robustft.backends.vllm never needs vLLM (this file imports it without)."""
    tree = ast.parse(Path(vb.__file__).read_text())

    def imports_vllm(node) -> bool:
        if isinstance(node, ast.Import):
            return any(a.name.split(".")[0] == "vllm" for a in node.names)
        return isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "vllm"

    inside = {id(n) for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef) and fn.name == "import_vllm"
              for n in ast.walk(fn)}
    found = [n for n in ast.walk(tree) if imports_vllm(n)]
    assert found and all(id(n) in inside for n in found)


# ------------------------------------------------------------------------- the real engine
HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(not torch.cuda.is_available() and not HAS_VLLM,
                    reason="needs a CUDA GPU or vLLM installed (pip install vllm on a GPU machine)")
def test_real_vllm_on_the_toy_weights_matches_the_in_process_model(monkeypatch, toy, questions):
    """vLLM's engine on the toy model's shipped weights (a Llama folder: nothing to download)
    against the in-process model, in float32."""
    monkeypatch.undo()  # the real SamplingParams
    from robustft.offline.toy_model import WEIGHTS_DIR

    folder = WEIGHTS_DIR / "seed-0"
    backend = VLLMBackend(str(folder), tokenizer=toy.tokenizer, answer_by="text", chat=False,
                          logprobs=20, dtype="float32", gpu_memory_utilization=0.3, enforce_eager=True)
    got = backend.score_options(questions)
    want = score_options(toy, questions, progress=False)
    np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-3, rtol=0)
    assert (got.best() == want.best()).all()
    prompts = [direct_prompt(s) for s in questions]
    for g, w in zip(backend.generate(prompts, max_new_tokens=12), generate(toy, prompts, max_new_tokens=12, progress=False)):
        assert g.token_ids == w.token_ids and g.text == w.text and g.finished == w.finished
        np.testing.assert_allclose(g.logprobs, w.logprobs, atol=1e-3, rtol=0)
