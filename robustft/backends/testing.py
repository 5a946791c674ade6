"""A small OpenAI-compatible test server over an in-process model, in vLLM's response format.

    with TestServer(robustft.load_model("toy")) as server:
        lm = ServerBackend(server.url, server.model)
        robustft.denoise(samples, lm, config)

It serves ``GET /v1/models`` and ``POST /v1/completions`` on 127.0.0.1 (a free port) from a
thread, with what `robustft.backends.server.ServerBackend` reads from vLLM: ``logprobs``
(each token's log-prob and the top-k, ``text_offset``), ``echo`` (the prompt's tokens and
log-probs before the completion's, the first one null), vLLM's ``prompt_logprobs`` and
``return_tokens_as_token_ids``, ``add_special_tokens``, ``usage``, and vLLM's 400 when a
prompt and its budget exceed the context. Generation is `robustft.inference.generate` of the
prompt text as given (no chat template: the client renders); log-probs of prompt tokens and
the top-k come from one teacher-forced forward pass.

To test a client's failure paths it can answer the first `fail_first` completions with
`fail_status` (429 or 503, with ``retry-after-ms``), hold the first `stall_first` ones for
`stall_seconds` (a client timeout), and refuse ``echo`` (as llama.cpp's server does) or
``prompt_logprobs`` (as ``transformers serve`` does) with a 400.

It is a test fixture, not a server to deploy: one model call at a time, no streaming, no
authentication.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from ..inference import generate
from ..model import LanguageModel


@dataclass
class _RawText(LanguageModel):
    """The model reading a prompt text exactly as sent (the client rendered it), with or
    without the tokenizer's special tokens (vLLM's ``add_special_tokens``)."""

    special: bool = True

    def render(self, prompt: str) -> str:
        return prompt

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=self.special, verbose=False)["input_ids"]


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class TestServer:
    """An OpenAI-compatible completions server for `lm` on 127.0.0.1 (see the module).

    Args:
        lm: the in-process model to serve.
        model: the name it is served under (default ``lm.name``).
        echo, prompt_logprobs: serve these (False: a 400 when asked, as llama.cpp's server
            refuses echo and ``transformers serve`` refuses prompt_logprobs).
        fail_first: answer the first this many completion requests with `fail_status`.
        fail_status: 429 or a 5xx.
        stall_first, stall_seconds: hold the first `stall_first` completion requests (after
            the failures) for `stall_seconds` before answering.
        port: the port on 127.0.0.1 (0: a free one).

    Attributes:
        url: the API root (``http://127.0.0.1:PORT/v1``).
        requests: completion requests received (failed and stalled ones included).
        model_seconds: seconds spent in the model (the client's overhead is the rest).
        peak_in_flight: the most completion requests it was answering at once.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, lm: LanguageModel, *, model: str | None = None, echo: bool = True,
                 prompt_logprobs: bool = True, fail_first: int = 0, fail_status: int = 429, stall_first: int = 0,
                 stall_seconds: float = 0.0, port: int = 0):
        self.lm, self.model = lm, model or lm.name or "model"
        self.echo, self.prompt_logprobs = echo, prompt_logprobs
        self.fail_first, self.fail_status = fail_first, fail_status
        self.stall_first, self.stall_seconds = stall_first, stall_seconds
        self.requests, self.model_seconds = 0, 0.0
        self.in_flight = self.peak_in_flight = 0  # completions being answered now, and the most at once
        self._raw = {s: _RawText(lm.model, lm.tokenizer, answer_by=lm.answer_by, chat=False, name=lm.name,
                                 info=dict(lm.info), special=s) for s in (True, False)}
        self._count_lock, self._model_lock = threading.Lock(), threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="robustft-test-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> "TestServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------ serving
    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects

            def log_message(self, *args):  # quiet: a test's output is its assertions
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                    pass

            def do_GET(self):
                if self.path.rstrip("/") == "/stats":  # not vLLM's: what a benchmark of the client reads
                    return self._send(200, {"requests": server.requests, "model_seconds": server.model_seconds})
                if self.path.rstrip("/") != "/v1/models":
                    return self._send(404, _error(f"no route {self.path}", "NotFoundError"))
                card = {"id": server.model, "object": "model", "created": 0, "owned_by": "robustft",
                        "root": server.model, "parent": None, "max_model_len": server.lm.max_length}
                self._send(200, {"object": "list", "data": [card]})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/completions":
                    return self._send(404, _error(f"no route {self.path}", "NotFoundError"))
                with server._count_lock:
                    n = server.requests
                    server.requests += 1
                if n < server.fail_first:
                    kind = "RateLimitError" if server.fail_status == 429 else "ServiceUnavailableError"
                    return self._send(server.fail_status, _error("injected failure", kind),
                                      {"retry-after-ms": "10"})
                with server._count_lock:
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                try:
                    if n < server.fail_first + server.stall_first:
                        time.sleep(server.stall_seconds)
                    body = json.loads(raw)
                    self._send(200, server._complete(body))
                except _Refused as e:
                    self._send(e.status, _error(str(e), "BadRequestError" if e.status == 400 else "NotFoundError"))
                except (ValueError, TypeError, KeyError) as e:
                    self._send(400, _error(f"bad request: {e}", "BadRequestError"))
                finally:
                    with server._count_lock:
                        server.in_flight -= 1

        return Handler

    def _complete(self, body: dict) -> dict:
        if body.get("model") != self.model:
            raise _Refused(404, f"The model `{body.get('model')}` does not exist.")
        echo, k = bool(body.get("echo")), body.get("logprobs")
        if echo and not self.echo:
            raise _Refused(400, "'echo' is not supported")
        if body.get("prompt_logprobs") is not None and not self.prompt_logprobs:
            raise _Refused(400, "'prompt_logprobs' is not supported")
        prompts = body["prompt"]
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not all(isinstance(p, str) for p in prompts):
            raise _Refused(400, "this test server takes text prompts only")
        choices, n_prompt, n_gen = [], 0, 0
        for i, prompt in enumerate(prompts):
            choice, p, g = self._choice(prompt, body, echo, k)
            choices.append({"index": i, **choice})
            n_prompt, n_gen = n_prompt + p, n_gen + g
        return {"id": f"cmpl-{self.requests}", "object": "text_completion", "created": int(time.time()),
                "model": self.model, "choices": choices,
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_gen, "total_tokens": n_prompt + n_gen}}

    def _choice(self, prompt: str, body: dict, echo: bool, k: int | None):
        raw = self._raw[bool(body.get("add_special_tokens", True))]
        tok = raw.tokenizer
        ids = raw._encode([prompt])[0]
        max_tokens = int(body.get("max_tokens") if body.get("max_tokens") is not None else 16)
        if len(ids) + max_tokens > raw.max_length:
            raise _Refused(400, f"This model's maximum context length is {raw.max_length} tokens. However, you "
                                f"requested {len(ids) + max_tokens} tokens ({len(ids)} in the messages, "
                                f"{max_tokens} in the completion). Please reduce the length.")
        temperature = float(body.get("temperature") if body.get("temperature") is not None else 1.0)
        prompt_k = body.get("prompt_logprobs")
        with self._model_lock:
            t0 = time.perf_counter()
            gen = None
            if max_tokens > 0:
                gen = generate(raw, [prompt], max_new_tokens=max_tokens, temperature=temperature,
                               seed=int(body.get("seed") or 0), batch_size=1, progress=False)[0]
            new = list(gen.token_ids) if gen is not None else []
            logp = None
            if k is not None or prompt_k is not None:  # one teacher-forced pass: prompt log-probs and top-k
                with torch.inference_mode():
                    x = torch.tensor([ids + new], dtype=torch.long, device=raw.device)
                    logp = torch.log_softmax(raw.model(input_ids=x).logits[0].float(), dim=-1).cpu()
            self.model_seconds += time.perf_counter() - t0
        names = [tok.decode([t]) for t in ids + new]
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        shown = [f"token_id:{t}" for t in ids + new] if as_ids else names
        choice = {"text": (prompt if echo else "") + (gen.text if gen is not None else ""),
                  "finish_reason": "stop" if gen is not None and gen.finished else "length",
                  "stop_reason": None, "logprobs": None}
        if k is not None:
            first = 0 if echo else len(ids)  # positions shown: the prompt's too with echo
            values, tops = [], []
            for t in range(first, len(ids) + len(new)):
                if t == 0:  # nothing predicts the first token
                    values.append(None), tops.append(None)
                    continue
                chosen = (float(gen.logprobs[t - len(ids)]) if t >= len(ids) else float(logp[t - 1, ids[t]]))
                values.append(chosen)
                top = {}
                if k > 0:
                    v, j = logp[t - 1].topk(int(k))
                    top = {(f"token_id:{int(a)}" if as_ids else tok.decode([int(a)])): float(b) for a, b in zip(j, v)}
                top.setdefault(shown[t], chosen)
                tops.append(top)
            offsets, pos = [], 0 if echo else len(prompt)
            for s in shown[first:]:
                offsets.append(pos)
                pos += len(s)
            choice["logprobs"] = {"text_offset": offsets, "token_logprobs": values, "tokens": shown[first:],
                                  "top_logprobs": tops}
        if prompt_k is not None:
            entries = [None]
            for t in range(1, len(ids)):
                row = logp[t - 1]
                entry = {str(ids[t]): {"logprob": float(row[ids[t]]), "rank": int((row > row[ids[t]]).sum()) + 1,
                                       "decoded_token": names[t]}}
                if int(prompt_k) > 0:
                    v, j = row.topk(int(prompt_k))
                    for r, (a, b) in enumerate(zip(j.tolist(), v.tolist())):
                        entry.setdefault(str(a), {"logprob": b, "rank": r + 1, "decoded_token": tok.decode([a])})
                entries.append(entry)
            choice["prompt_logprobs"] = entries
        return choice, len(ids), len(new)


def main(argv=None) -> None:
    """``python -m robustft.backends.testing [--seed N] [--port P]``: serve the toy model of
    seed N as "toy" until interrupted; prints the API root on its first line of output."""
    import argparse

    from ..model import load_model

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="the toy model's seed (default 0)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--no-echo", action="store_true", help="refuse echo, as llama.cpp's server does")
    args = parser.parse_args(argv)
    # The toy is found through its entry point (this library never imports the plug-in).
    lm = load_model("toy", seed=args.seed, progress=False)
    server = TestServer(lm, echo=not args.no_echo, port=args.port)
    print(server.url, flush=True)
    try:
        server._thread.join()
    except KeyboardInterrupt:
        server.close()


def _error(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}, "object": "error"}


__all__ = ["TestServer", "main"]


if __name__ == "__main__":
    main()
