"""Option scoring and generation against float64 brute force on a tiny random Llama."""
import copy
import dataclasses
import weakref

import numpy as np
import pytest
import torch

from robustft.kernels import OptionScores
from robustft.inference import (generate, left_pad, predict_letters,
                                score_options)
from robustft.prompts import ANSWER_PREFIX, answer_line, direct_prompt
from robustft.sample import SHORT, Sample, letter
from tiny_lm import make_lm, make_samples

TOL = 2e-4  # float32 model vs float64 reference, summed over a few tokens


@pytest.fixture(scope="module")
def lm():
    return make_lm()


@pytest.fixture(scope="module")
def chat_lm():
    return make_lm(chat=True)


@pytest.fixture(scope="module")
def samples():
    return make_samples(12)


def _logprobs64(lm, ids):
    """[T, V] float64 log-softmax of an unpadded sequence's logits, from a float64 copy."""
    model64 = _double(lm)
    with torch.no_grad():
        logits = model64(input_ids=torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.double(), -1)


_DOUBLES = weakref.WeakKeyDictionary()  # model -> its float64 copy


def _double(lm):
    if lm.model not in _DOUBLES:
        _DOUBLES[lm.model] = copy.deepcopy(lm.model).double().eval()
    return _DOUBLES[lm.model]


def _brute_option_scores(lm, samples, by, with_tokens=False):
    """log p(option | rendered prompt + "Answer:") and mean entropy (and, `with_tokens`, the
    mean of the option's token NLLs), one sequence at a time in float64."""
    n, K = len(samples), max(len(s.options) for s in samples)
    lp, ent, nll = np.full((n, K), -np.inf), np.full((n, K), np.nan), np.full((n, K), np.nan)
    for i, s in enumerate(samples):
        head = lm.render(direct_prompt(s)) + ANSWER_PREFIX
        for k in range(len(s.options)):
            cont = answer_line(s, letter(k), by=by)[len(ANSWER_PREFIX):]
            (c, x), = lm.encode_pairs([head], [cont])
            logp = _logprobs64(lm, c + x)
            rows = range(len(c) - 1, len(c) + len(x) - 1)  # positions predicting the option
            lp[i, k] = sum(logp[r, t].item() for r, t in zip(rows, x))
            ent[i, k] = np.mean([-(logp[r].exp() * logp[r]).sum().item() for r in rows])
            nll[i, k] = np.mean([-logp[r, t].item() for r, t in zip(rows, x)])
    return (lp, ent, nll) if with_tokens else (lp, ent)


@pytest.mark.parametrize("by", ["letter", "text"])
def test_option_scores_match_float64_brute_force(lm, samples, by):
    got = score_options(lm, samples, by=by, batch_size=5, progress=False)
    want_lp, want_ent, want_h = _brute_option_scores(lm, samples, by, with_tokens=True)
    np.testing.assert_allclose(got.logprobs, want_lp, atol=TOL, rtol=0)
    np.testing.assert_allclose(got.entropy, want_ent, atol=TOL, rtol=0)
    assert predict_letters(got) == [letter(int(k)) for k in want_lp.argmax(1)]
    if by == "text":  # "light <colour>" options are two tokens
        assert got.n_tokens.max() >= 2 and got.n_tokens.min() == 1
    else:
        assert (got.n_tokens == 1).all()
    # The derived values against independent float64 computations: the mean of each option's
    # token NLLs, and a softmax of the brute-force log-probs over the options.
    np.testing.assert_allclose(got.response_entropy, want_h, atol=TOL, rtol=0)
    want_p = np.exp(want_lp - want_lp.max(1, keepdims=True))
    np.testing.assert_allclose(got.probs, want_p / want_p.sum(1, keepdims=True), atol=1e-4, rtol=0)
    assert got.best().tolist() == want_lp.argmax(1).tolist()


def test_chat_template_scoring_matches_brute_force(chat_lm, samples):
    assert chat_lm.chat and chat_lm.answer_by == "letter"
    got = score_options(chat_lm, samples[:6], progress=False)
    want, _ = _brute_option_scores(chat_lm, samples[:6], "letter")
    np.testing.assert_allclose(got.logprobs, want, atol=TOL, rtol=0)
    # The scored context really is the rendered conversation, assistant turn prefilled.
    head = chat_lm.render(direct_prompt(samples[0])) + ANSWER_PREFIX
    assert head.endswith("<|im_start|>assistant\nAnswer:")


@pytest.mark.parametrize("by", ["letter", "text"])
def test_batched_equals_unbatched(lm, samples, by):
    # Varying question lengths, so batches are left-padded by different amounts.
    one = score_options(lm, samples, by=by, batch_size=1, progress=False)
    many = score_options(lm, samples, by=by, batch_size=64, progress=False)
    np.testing.assert_allclose(many.logprobs, one.logprobs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(many.entropy, one.entropy, atol=1e-5, rtol=0)


def test_uneven_option_counts_are_padded(lm, samples):
    mixed = [samples[0], dataclasses.replace(samples[1], options=samples[1].options[:2], answer="B")]
    got = score_options(lm, mixed, by="text", progress=False)
    assert got.logprobs.shape == (2, 4)
    assert np.isinf(got.logprobs[1, 2:]).all() and (got.n_tokens[1, 2:] == 0).all()
    assert np.isfinite(got.logprobs[1, :2]).all()
    np.testing.assert_allclose(got.probs[1, 2:], 0.0)


def test_predictions_from_external_logprobs():
    lp = np.array([[-1.0, -0.5, -3.0], [-4.0, -2.0, -np.inf], [-np.inf, -np.inf, -np.inf]])
    nt = np.array([[4, 1, 1], [1, 1, 0], [0, 0, 0]])
    scores = OptionScores(lp, nt, np.full(lp.shape, np.nan))
    assert predict_letters(scores) == ["B", "B", None]  # a row with no option has no answer
    # By mean per token, a long option with a lower total can win.
    assert predict_letters(scores, length_normalize=True) == ["A", "B", None]
    z = np.exp(-4.0) + np.exp(-2.0)
    np.testing.assert_allclose(scores.probs[1], [np.exp(-4.0) / z, np.exp(-2.0) / z, 0.0])
    assert np.isnan(scores.probs[2]).all()
    np.testing.assert_allclose(scores.response_entropy[0], [0.25, 0.5, 3.0])
    assert np.isnan(scores.response_entropy[1, 2])


def test_clear_errors(lm, samples):
    long = dataclasses.replace(samples[0], id="too-long", question=" ".join(["red"] * 600))
    with pytest.raises(ValueError, match="too-long"):
        score_options(lm, [long], progress=False)
    short = Sample(id="s1", question="How many?", answer="3", task=SHORT)
    with pytest.raises(ValueError, match="not multiple choice"):
        score_options(lm, [short], progress=False)


def test_left_pad_positions():
    ids, mask, pos = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_token_batches_cover_every_row_within_the_budget():
    from robustft.inference import _token_batches, length_sorted_batches

    lengths = [int(x) for x in np.random.default_rng(0).integers(3, 60, size=200)] + [500]
    batches = _token_batches(lengths, 8, 120)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    widths = [max(lengths[i] for i in b) for b in batches]
    assert widths == sorted(widths, reverse=True)  # longest first
    assert all(len(b) <= 8 and (len(b) == 1 or len(b) * w <= 120) for b, w in zip(batches, widths))
    assert batches[0] == [len(lengths) - 1]  # longer than the budget: alone
    padded = sum(len(b) * w for b, w in zip(batches, widths))
    assert padded < 1.1 * sum(lengths)
    assert _token_batches(lengths, 8, None) == length_sorted_batches(lengths, 8)


def _prefix_calls(monkeypatch):
    """Record what `_prefix_cache` returns."""
    import robustft.inference as inference

    calls, real = [], inference._prefix_cache
    monkeypatch.setattr(inference, "_prefix_cache", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    return calls


def test_shared_prefix_changes_no_result(chat_lm, samples, monkeypatch):
    """The prompt prefix all rows share is run once and every scoring batch continues from
    its cache: option scores are those of whole rows."""
    import robustft.inference as inference

    def run():
        return (score_options(chat_lm, samples, batch_size=5, progress=False),
                score_options(chat_lm, samples, by="text", batch_size=5, progress=False))

    calls = _prefix_calls(monkeypatch)
    shared = run()
    # The chat template's system turn and the instruction: ~20 tokens, shared by every row.
    assert len(calls) == 2 and all(c is not None and c.length >= 15 for c in calls)
    monkeypatch.setattr(inference, "_prefix_cache", lambda *a, **k: None)
    whole = run()
    for a, b in zip(shared, whole):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
        np.testing.assert_allclose(a.entropy, b.entropy, atol=1e-5, rtol=0)


def test_shared_prefix_stops_before_the_scored_tokens(lm, samples, monkeypatch):
    """One question whose options all start with the same token: the rows share the prompt
    and that token, but the prefix must end before the position that predicts it."""
    one = dataclasses.replace(samples[0], options=("light red", "light blue"), answer="A")
    calls = _prefix_calls(monkeypatch)
    got = score_options(lm, [one], by="text", progress=False)
    head = lm.render(direct_prompt(one)) + ANSWER_PREFIX
    (c, x), = lm.encode_pairs([head], [" light red"])
    assert calls[0] is not None and calls[0].length == len(c) - 1 and len(x) >= 2
    want, _ = _brute_option_scores(lm, [one], "text")
    np.testing.assert_allclose(got.logprobs, want, atol=TOL, rtol=0)


# ---------------------------------------------------------------------------- generation
def _greedy_brute(lm, prompt, max_new_tokens):
    """Greedy decoding by full recomputation, no cache, no padding, float64."""
    ids = lm._encode([lm.render(prompt)])[0]
    out, lps, ents = [], [], []
    for _ in range(max_new_tokens):
        logp = _logprobs64(lm, ids + out)[-1]
        t = int(logp.argmax())
        out.append(t)
        lps.append(logp[t].item())
        ents.append(-(logp.exp() * logp).sum().item())
        if t in lm.eos_token_ids:
            break
    return out, np.array(lps), np.array(ents)


def test_greedy_generation_is_stepwise_argmax(lm, samples):
    prompts = [direct_prompt(s) for s in samples[:5]]
    gens = generate(lm, prompts, max_new_tokens=6, batch_size=3, progress=False)
    for p, g in zip(prompts, gens):
        ids, lps, ents = _greedy_brute(lm, p, 6)
        assert g.token_ids == ids
        np.testing.assert_allclose(g.logprobs, lps, atol=1e-4, rtol=0)
        np.testing.assert_allclose(g.entropy, ents, atol=1e-4, rtol=0)
        assert g.text == lm.tokenizer.decode(ids, skip_special_tokens=True)
        assert g.response_entropy == pytest.approx(-lps.mean(), abs=1e-4)


def test_left_padded_generation_is_stepwise_argmax(lm, samples):
    """Prompts of very different lengths in one batch (left-padded by up to 18 tokens): every
    row gets its own greedy tokens, log-probs and entropies, in the prompts' order."""
    prompts = [direct_prompt(s) + "red " * (6 * (i % 4)) for i, s in enumerate(samples[:8])]
    lengths = [len(e) for e in lm._encode([lm.render(p) for p in prompts])]
    assert max(lengths) - min(lengths) >= 15
    gens = generate(lm, prompts, max_new_tokens=5, batch_size=8, progress=False)
    for p, g in zip(prompts, gens):
        ids, lps, ents = _greedy_brute(lm, p, 5)
        assert g.token_ids == ids
        np.testing.assert_allclose(g.logprobs, lps, atol=1e-4, rtol=0)
        np.testing.assert_allclose(g.entropy, ents, atol=1e-4, rtol=0)


def test_the_models_generation_config_changes_no_token(samples):
    """A checkpoint's generation_config may ship a repetition penalty, top_k, a minimum
    length...: `model.generate` would apply them, and `generate` turns them off."""
    lm = make_lm()
    prompts = [direct_prompt(s) for s in samples[:4]]
    plain_greedy = generate(lm, prompts, max_new_tokens=6, progress=False)
    plain_sampled = generate(lm, prompts, max_new_tokens=6, temperature=1.0, seed=5, progress=False)
    cfg = lm.model.generation_config
    cfg.repetition_penalty, cfg.no_repeat_ngram_size, cfg.min_new_tokens, cfg.min_length = 5.0, 1, 6, 45
    cfg.top_k, cfg.typical_p, cfg.epsilon_cutoff = 1, 0.2, 0.01
    # These settings do change what model.generate itself decodes...
    ids, mask, _ = left_pad(lm._encode([lm.render(p) for p in prompts]), lm.tokenizer.pad_token_id)
    raw = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                            pad_token_id=lm.tokenizer.pad_token_id)[:, ids.shape[1]:].tolist()
    assert any(r[:len(g.token_ids)] != g.token_ids for r, g in zip(raw, plain_greedy))
    # ...but not what `generate` does.
    greedy = generate(lm, prompts, max_new_tokens=6, progress=False)
    sampled = generate(lm, prompts, max_new_tokens=6, temperature=1.0, seed=5, progress=False)
    assert [g.token_ids for g in greedy] == [g.token_ids for g in plain_greedy]
    assert [g.token_ids for g in sampled] == [g.token_ids for g in plain_sampled]
    for p, g in zip(prompts, greedy):
        assert g.token_ids == _greedy_brute(lm, p, 6)[0]


def test_generation_stops_at_eos_per_row(samples):
    """With an eos bias, rows finish at different steps; finished rows stop, others go on."""
    lm = make_lm(seed=1)
    lm.model.lm_head.bias = torch.nn.Parameter(torch.zeros(lm.model.config.vocab_size))
    prompts = [direct_prompt(s) for s in samples]
    eos = lm.tokenizer.eos_token_id
    for bias in np.arange(0.0, 12.0, 0.5):
        lm.model.lm_head.bias.data[eos] = float(bias)
        _DOUBLES.pop(lm.model, None)
        brute = [_greedy_brute(lm, p, 8)[0] for p in prompts]
        lengths = {len(b) for b in brute}
        if any(b[-1] == eos for b in brute) and len(lengths) > 1:
            break
    else:
        pytest.fail("no eos bias gave rows of different lengths")
    gens = generate(lm, prompts, max_new_tokens=8, batch_size=12, progress=False)
    for g, b in zip(gens, brute):
        assert g.token_ids == b
        assert g.finished == (b[-1] == eos)
        assert len(g.logprobs) == len(b)
        assert "</s>" not in g.text


def test_sampling_is_seeded_and_logprobs_are_exact(lm, samples):
    prompts = [direct_prompt(s) for s in samples[:4]]
    a = generate(lm, prompts, max_new_tokens=5, temperature=1.0, seed=3, progress=False)
    b = generate(lm, prompts, max_new_tokens=5, temperature=1.0, seed=3, progress=False)
    c = generate(lm, prompts, max_new_tokens=5, temperature=1.0, seed=4, progress=False)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]
    greedy = generate(lm, prompts, max_new_tokens=5, progress=False)
    assert [g.token_ids for g in a] != [g.token_ids for g in greedy]
    for p, g in zip(prompts, a):  # log-probs are the model's own (temperature 1)
        ids = lm._encode([lm.render(p)])[0]
        logp = _logprobs64(lm, ids + g.token_ids)
        want = [logp[len(ids) - 1 + j, t].item() for j, t in enumerate(g.token_ids)]
        np.testing.assert_allclose(g.logprobs, want, atol=1e-4, rtol=0)


def test_sampling_leaves_the_callers_random_state(lm, samples):
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    generate(lm, [direct_prompt(samples[0])], max_new_tokens=3, temperature=1.0, seed=9, progress=False)
    assert torch.equal(torch.rand(3), want)


def test_top_p_keeps_the_nucleus(lm, samples):
    # top_p tiny -> only the most likely token survives: sampling equals greedy.
    prompts = [direct_prompt(s) for s in samples[:3]]
    nucleus = generate(lm, prompts, max_new_tokens=5, temperature=1.0, top_p=1e-6, progress=False)
    greedy = generate(lm, prompts, max_new_tokens=5, progress=False)
    assert [g.token_ids for g in nucleus] == [g.token_ids for g in greedy]


def test_generation_prompt_too_long(lm):
    with pytest.raises(ValueError, match="p-long"):
        generate(lm, ["red " * 600], ids=["p-long"], progress=False)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generation_refuses_nan_logits(samples, temperature):
    lm = make_lm()
    with torch.no_grad():
        lm.model.lm_head.weight[5] = float("nan")  # one vocabulary row: every logit row has a NaN
    with pytest.raises(FloatingPointError, match="generated token 1 hold NaN"):
        generate(lm, [direct_prompt(samples[0])], max_new_tokens=3, temperature=temperature, progress=False)


def test_generation_stops_at_the_context_limit(samples):
    lm = make_lm()
    short, long = direct_prompt(samples[1]), direct_prompt(samples[0]) + "red red red"
    n_long = len(lm._encode([long])[0])
    lm.tokenizer.model_max_length = n_long + 3  # room for 3 more tokens after the long prompt
    gens = generate(lm, [long, short], max_new_tokens=6, progress=False)
    assert len(gens[0].token_ids) == 3 and not gens[0].finished
    assert len(gens[1].token_ids) == min(6, lm.max_length - len(lm._encode([short])[0]))
    assert gens[0].token_ids == _greedy_brute(lm, long, 3)[0]


_TRITON_SCRIPT = r"""
import json, os, sys
import numpy as np
from robustft.kernels import triton_ops
calls = []
orig = triton_ops.token_stats_triton
triton_ops.token_stats_triton = lambda *a, **k: (calls.append(1), orig(*a, **k))[1]
from tiny_lm import make_lm, make_samples
from robustft.inference import generate, score_options
from robustft.prompts import direct_prompt
lm, samples = make_lm(), make_samples(6)
prompts = [direct_prompt(s) for s in samples[:2]]
def run():
    return [score_options(lm, samples, by="text", progress=False).logprobs.tolist(),
            score_options(lm, samples, by="letter", progress=False).logprobs.tolist(),
            [g.logprobs.tolist() for g in generate(lm, prompts, max_new_tokens=3, progress=False)]]
tri = run()
n_calls = len(calls)
os.environ["ROBUSTFT_KERNEL_BACKEND"] = "torch"
ref = run()
print(json.dumps({"calls": n_calls, "after": len(calls), "triton": tri, "torch": ref}))
"""


def test_scoring_and_generation_through_triton_interpreter():
    """The Triton kernels (CPU interpreter) give the PyTorch path's option scores and
    token log-probs. A subprocess, because TRITON_INTERPRET must be set before import."""
    pytest.importorskip("triton")
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, TRITON_INTERPRET="1", ROBUSTFT_KERNEL_BACKEND="triton",
               PYTHONPATH=str(Path(__file__).parent), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["calls"] > 0 and out["after"] == out["calls"]  # triton first, then torch only
    for tri, ref in zip(out["triton"][:2], out["torch"][:2]):
        np.testing.assert_allclose(tri, ref, atol=1e-5)
    for tri, ref in zip(out["triton"][2], out["torch"][2]):
        np.testing.assert_allclose(tri, ref, atol=1e-5)
