"""The OpenAI-compatible server backend, over real HTTP on 127.0.0.1: the test server
(`robustft.backends.testing.TestServer`, vLLM's response format) serves the toy model, and the
server backend must give what the in-process backend gives."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openai")  # the [server] extra (in [dev])

import robustft  # noqa: E402
import robustft.offline  # noqa: E402
from robustft import cli  # noqa: E402
from robustft.backends import CAPABILITIES, CapabilityError, require  # noqa: E402
from robustft.backends.server import ServerBackend, ServerError  # noqa: E402
from robustft.backends.testing import TestServer  # noqa: E402
from robustft.denoise import DenoiseConfig, denoise  # noqa: E402
from robustft.detect import run_detection_experts  # noqa: E402
from robustft.offline import ToyConfig, make_benchmark  # noqa: E402
from robustft.relabel import embed  # noqa: E402

N = 24  # samples: small enough for the whole file to run in well under 30 s on one core
CONFIG = DenoiseConfig(batch_size=8, max_new_tokens=40, embedder="tfidf")


@pytest.fixture(scope="module")
def toy():
    config = ToyConfig.for_seed(0)
    lm = robustft.load_model("toy", config=config, progress=False)
    train, _ = robustft.inject_noise(make_benchmark(config.world).train[:N], 0.5, seed=0)
    return lm, train


@pytest.fixture(scope="module")
def server(toy):
    with TestServer(toy[0]) as s:
        yield s


@pytest.fixture(scope="module")
def runs(toy, server):
    """The same denoise run in process and through the server."""
    lm, train = toy
    remote = ServerBackend(server.url, server.model, tokenizer=lm.tokenizer, max_in_flight=4)
    return denoise(train, lm, CONFIG, progress=False), denoise(train, remote, CONFIG, progress=False), remote


def test_the_server_backend_gives_the_in_process_denoise_output(runs):
    local, remote, backend = runs
    assert backend.scoring == "echo" and "exact_option_scores" in backend.capabilities
    assert backend.fingerprint != robustft.load_model("toy", config=ToyConfig.for_seed(0), progress=False).fingerprint
    flagged = sum(p["noisy"] for p in local.provenance)
    assert 0 < flagged < N  # the run exercises detection, relabeling and selection
    for a, b in zip(local.provenance, remote.provenance, strict=True):
        ea, eb = a.pop("entropy", None), b.pop("entropy", None)
        assert a == b  # answers, reasoning texts, neighbours, noisy flags, stages, labels
        assert (ea is None) == (eb is None) and (ea is None or abs(ea - eb) < 1e-4)
    assert [(s.id, s.answer) for s in local.samples] == [(s.id, s.answer) for s in remote.samples]
    assert local.report == remote.report
    assert remote.stats["warnings"] == local.stats["warnings"]  # exact scores: no approximate_scores


def test_response_nlls_agree_within_1e_4(toy, server):
    lm, train = toy
    remote = ServerBackend(server.url, server.model, tokenizer=lm.tokenizer)
    for a, b in zip(run_detection_experts(lm, train, max_new_tokens=40, batch_size=8, progress=False),
                    run_detection_experts(remote, train, max_new_tokens=40, batch_size=8, progress=False)):
        assert a.answers == b.answers and a.texts == b.texts
        np.testing.assert_allclose(b.response_entropy, a.response_entropy, atol=1e-4, rtol=0)
        np.testing.assert_allclose(b.scores.logprobs, a.scores.logprobs, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(b.scores.n_tokens, a.scores.n_tokens)
    assert robustft.evaluate(remote, train[:8], progress=False).predictions == \
        robustft.evaluate(lm, train[:8], progress=False).predictions
    prompts, conts = [s.question for s in train[:4]], [" " + s.options[0] for s in train[:4]]
    for x, y in zip(lm.score_continuations(prompts, conts), remote.score_continuations(prompts, conts)):
        assert len(x) == len(y) > 0
        np.testing.assert_allclose(y, x, atol=1e-4, rtol=0)


def test_requests_run_concurrently_with_a_bounded_number_in_flight(toy):
    lm, train = toy
    with TestServer(lm) as s:
        backend = ServerBackend(s.url, s.model, tokenizer=lm.tokenizer, max_in_flight=3, scoring="echo")
        backend.score_options(train[:6], by="text")  # 24 options, one request each
        assert s.requests == 24 and 2 <= s.peak_in_flight <= 3  # concurrent, never more than 3 at once


@pytest.mark.parametrize("status", [429, 503])
def test_failed_requests_are_retried_with_backoff(toy, status):
    lm, train = toy
    expected = lm.score_options(train[:3], by="text").logprobs
    with TestServer(lm, fail_first=3, fail_status=status) as s:
        backend = ServerBackend(s.url, s.model, tokenizer=lm.tokenizer, max_retries=3, max_in_flight=1)
        got = backend.score_options(train[:3], by="text").logprobs
        # Every request got through; the three refused ones were sent again (the client's retries).
        assert s.requests == backend.stats["requests"] + 3
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    with TestServer(lm, fail_first=10, fail_status=status) as s, pytest.raises(ServerError, match="failed"):
        ServerBackend(s.url, s.model, tokenizer=lm.tokenizer, max_retries=1, scoring="echo").score_options(
            train[:1], by="text")


def test_a_timed_out_request_is_retried(toy):
    lm, train = toy
    with TestServer(lm, stall_first=1, stall_seconds=1.0) as s:
        backend = ServerBackend(s.url, s.model, tokenizer=lm.tokenizer, timeout=0.3, max_retries=2,
                                scoring="echo", max_in_flight=1)
        gens = backend.generate([train[0].question], max_new_tokens=8)
        assert s.requests == 2  # the stalled one and its retry
    assert gens[0].text == lm.generate([train[0].question], max_new_tokens=8)[0].text


def test_without_echo_prompt_logprobs_score_exactly_and_without_either_top_k_warns(toy):
    lm, train = toy
    expected = lm.score_options(train[:4]).logprobs
    with TestServer(lm, echo=False) as s:
        backend = ServerBackend(s.url, s.model, tokenizer=lm.tokenizer)
        assert backend.scoring == "prompt_logprobs" and "exact_option_scores" in backend.capabilities
        np.testing.assert_allclose(backend.score_options(train[:4]).logprobs, expected, atol=1e-4, rtol=0)
    with TestServer(lm, echo=False, prompt_logprobs=False) as s:  # as llama.cpp's server
        backend = ServerBackend(s.url, s.model, tokenizer=lm.tokenizer)
        assert backend.scoring == "topk"
        assert "exact_option_scores" not in backend.capabilities and "score_continuation" not in backend.capabilities
        sc = backend.score_options(train[:4])
        assert (sc.n_tokens[:, :len(train[0].options)] == 1).all()
        result = denoise(train[:16], backend, CONFIG, progress=False)
    checks = [w["check"] for w in result.stats["warnings"]]
    assert checks[0] == "approximate_scores" and "echo" in result.stats["warnings"][0]["message"]
    with pytest.raises(CapabilityError, match="score_continuation"):
        backend.score_continuations(["q"], [" a"])


def test_a_stage_needing_a_missing_capability_stops_before_any_request(toy, server):
    lm, train = toy
    backend = ServerBackend(server.url, server.model, tokenizer=lm.tokenizer)
    assert backend.capabilities == CAPABILITIES - {"hidden_states", "token_entropy"}
    before = server.requests
    with pytest.raises(CapabilityError, match="hidden_states.*--embedder minilm or tfidf"):
        denoise(train, backend, DenoiseConfig(embedder="llm"), progress=False)
    with pytest.raises(CapabilityError, match="token_entropy"):
        denoise(train, backend, DenoiseConfig(embedder="tfidf", entropy="shannon"), progress=False)
    with pytest.raises(CapabilityError, match="'llm' retrieval embedder"):
        embed(train, "llm", backend)
    assert server.requests == before
    require(lm, *CAPABILITIES, stage="anything")  # the in-process model can do it all


def test_without_a_tokenizer_the_server_counts_tokens(toy, server):
    lm, train = toy
    folder = Path(robustft.offline.__file__).parent / "toy-models" / "seed-0"
    by_path = ServerBackend(server.url, server.model, tokenizer=str(folder))  # AutoTokenizer, no remote code
    assert by_path.fingerprint == ServerBackend(server.url, server.model, tokenizer=lm.tokenizer).fingerprint
    backend = ServerBackend(server.url, server.model)  # no chat template, counts from usage
    assert backend.fingerprint != by_path.fingerprint
    prompts = [s.question for s in train[:3]]
    assert backend.prompt_tokens(prompts) == lm.prompt_tokens(prompts)
    assert backend.max_length == lm.max_length
    # Counted alone by the server, an option carries its BOS: one more token, never fewer.
    assert [r - 1 for r in backend.answer_room(train[:3], 40)] == lm.answer_room(train[:3], 40)


def test_the_command_runs_on_a_server_and_fails_in_one_line_without_one(toy, server, tmp_path, capsys):
    lm, train = toy
    data = robustft.to_official_csv(train[:8], tmp_path / "noisy.csv")
    out = tmp_path / "run"
    code = cli.main(["denoise", "--data", str(data), "--server", server.url, "--model", server.model,
                     "--out", str(out), "--no-progress", "--batch-size", "8", "--max-new-tokens", "40",
                     "--embedder", "tfidf", "--max-in-flight", "2"])  # no tokenizer: the server counts tokens
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["server"]["scoring"] == "echo" and summary["server"]["requests"] > 8
    folder = Path(robustft.offline.__file__).parent / "toy-models" / "seed-0"
    args = ["denoise", "--data", str(data), "--server", server.url, "--model", server.model, "--out",
            str(tmp_path / "tok"), "--no-progress", "--batch-size", "8", "--max-new-tokens", "40", "--embedder",
            "tfidf", "--tokenizer", str(folder)]
    assert cli.main(args) == 0
    before = server.requests
    assert cli.main(args) == 0  # resumed: with a local tokenizer only the probe goes to the server
    assert json.loads((tmp_path / "tok" / "summary.json").read_text())["server"]["requests"] == 0
    assert server.requests - before == 1  # the probe: every expert batch was read back from the run folder
    capsys.readouterr()
    code = cli.main(["denoise", "--data", str(data), "--server", "http://127.0.0.1:9/v1", "--model", "toy",
                     "--out", str(tmp_path / "run2"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach the server" in err and len(err.strip().splitlines()) == 1
    code = cli.main(["denoise", "--data", str(data), "--server", server.url, "--model", "other",
                     "--out", str(tmp_path / "run3"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "serves ['toy']" in err and len(err.strip().splitlines()) == 1
    code = cli.main(["denoise", "--data", str(data), "--server", server.url, "--model", server.model,
                     "--out", str(tmp_path / "run4"), "--no-progress", "--embedder", "llm"])
    err = capsys.readouterr().err
    assert code == 2 and "hidden_states" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run4").exists()  # stopped before any work


# Opt-in: `make test-llamacpp` serves SmolLM2-135M-Instruct's GGUF with llama-cpp-python's server
# and names it here; without a real server this test has nothing to talk to.
REAL_SERVER = os.environ.get("ROBUSTFT_TEST_SERVER_URL")


@pytest.mark.skipif(not REAL_SERVER, reason="opt-in: make test-llamacpp serves a real model")
def test_a_real_server_scores_and_generates_as_the_in_process_model():
    local = robustft.load_model(os.environ.get("ROBUSTFT_TEST_SERVER_LOCAL", "smollm2"))
    remote = ServerBackend(REAL_SERVER, os.environ.get("ROBUSTFT_TEST_SERVER_MODEL", "smollm2"),
                           tokenizer=local.tokenizer, max_in_flight=2)
    questions = make_benchmark(ToyConfig.for_seed(0).world).test[:8]
    a, b = local.score_options(questions), remote.score_options(questions)
    # The server runs the Q4_1 weights with quantized activations, the in-process model their
    # float32 dequantization: close, not equal.
    fin = np.isfinite(a.logprobs)
    assert (a.best() == b.best()).mean() >= 0.75
    assert np.median(np.abs(a.logprobs - b.logprobs)[fin]) < 0.25
    g, h = local.generate([questions[0].question], max_new_tokens=12)[0], \
        remote.generate([questions[0].question], max_new_tokens=12)[0]
    assert g.text == h.text and np.abs(g.logprobs - h.logprobs).max() < 0.25
