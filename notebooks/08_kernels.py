# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The kernels: one read of the logits
#
# Outside training, almost every model call in RobustFT ends the same way: run the model,
# then *reduce* its logits. The direct expert needs the log-probability of each option, the
# selection stage the mean token NLL of an answer (the paper's response entropy), the
# generation loop the entropy of each next-token distribution. Each is a reduction along the
# vocabulary of a logit matrix $[N, V]$ — and $V$ is large: 151,936 for Qwen2.5, 128,256 for
# Llama 3.
#
# This chapter follows the pattern of Triton's own tutorials (`02-fused-softmax`):
#
# 1. the **math** of a one-pass log-sum-exp, entropy and target log-probability (the
#    *online softmax*);
# 2. the **naive version** and the bytes it moves, against the bytes a single read needs;
# 3. the **kernels** in `robustft.kernels` (Triton on a GPU, a chunked PyTorch path on a CPU)
#    and the **fused** variant that goes from hidden states to statistics without ever
#    building the logits;
# 4. **correctness** against a float64 reference on deliberately irregular shapes, on CPU,
#    and the Triton kernels themselves in Triton's CPU interpreter;
# 5. **memory** of the fused path against materialised logits, measured here;
# 6. the **benchmark**, read from `kernels/results/`.
#
# Everything here runs on a CPU. GPU timings are shown where a GPU run has left its results
# file, and marked as missing where none has.

# %% tags=["hide-input"]
# On Colab: this copy of the book names no repository to install robustft from,
# so this cell installs nothing and says how to. Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    print("This copy of the book names no repository to install robustft from.\n"
          "Clone or upload your copy of the robustft repository into this session,\n"
          'then run in a cell:  %pip install "./robustft[gpu,embed,compare]"')

# %% tags=["parameters"]
MODE = None  # None: $ROBUSTFT_MODE or "offline"; "real" (SmolLM2, CPU), "gpu" (Colab)
SEED = 0

# %% tags=["hide-input"]
import inspect
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from robustft import kernels
from robustft.kernels import benchmark, torch_ops
from robustft.kernels.reference import eager_token_stats, reference_token_stats
from robustft.notebook import glue, setup
from robustft.prompts import format_question

# %% [markdown]
# The set-up loads the mode's model; this chapter uses it at the end, where the kernels
# reduce that model's own hidden states. The kernels run on the device the model lives on:
# Triton on a GPU, the chunked PyTorch path on a CPU.

# %%
S = setup(MODE, seed=SEED)  # the mode's model, test set and noisy training sets
print(S)
torch.manual_seed(SEED)
device = S.lm.device  # CUDA in the gpu mode, else the CPU
print(
    "device:",
    device.type,
    "| backend chosen for it:",
    kernels.resolve_backend(None, device),
)

# %% [markdown]
# ## The math: statistics of a softmax in one pass
#
# For one row of logits $z_1, \dots, z_V$ we want, with $p_v = e^{z_v} / \sum_w e^{z_w}$:
#
# $$ \text{lse} = \log \sum_v e^{z_v}, \qquad \log p_{t} = z_{t} - \text{lse}, \qquad
#    H = -\sum_v p_v \log p_v = \text{lse} - \sum_v p_v z_v . $$
#
# The textbook way needs three passes: find the maximum $m$ (so that $e^{z - m}$ cannot
# overflow), sum $e^{z-m}$, then sum $p \cdot z$. The *online* way keeps, after the first $j$
# columns, three numbers: the running maximum $m$,
#
# $$ s = \sum_{v \le j} e^{z_v - m}, \qquad u = \sum_{v \le j} e^{z_v - m}(z_v - m), $$
#
# and updates them block by block. When a new block raises the maximum to $m'$, the old sums
# are rescaled by $\alpha = e^{m - m'}$:
#
# $$ s' = \alpha s + \sum_\text{block} e^{z - m'}, \qquad
#    u' = \alpha\big(u + (m - m') s\big) + \sum_\text{block} e^{z - m'}(z - m'). $$
#
# At the end, $\text{lse} = m + \log s$ and $H = \log s - u / s$. Keeping $z - m$ instead of
# $z$ avoids the cancellation in $\text{lse} - \mathbb{E}_p[z]$ when logits are large, and a
# column at $-\infty$ (a masked token) contributes $e^{-\infty} = 0$ to $s$ and, by
# definition, $0$ to $u$. The target's log-probability needs one more number: its logit,
# read once. So **one read of the row** gives all three statistics (and the argmax, the
# greedy token, for free).
#
# The recurrence, written out in numpy for one row and checked against float64:

# %%
def online_stats(z, block=7):
    """lse and entropy of one row z [V] in blocks of `block` columns: the kernel's
    recurrence."""
    m, s, u = -np.inf, 0.0, 0.0
    for start in range(0, len(z), block):
        zb = z[start : start + block]
        m_new = max(m, zb.max())
        alpha = np.exp(m - m_new)  # 0 on the first block (m = -inf)
        delta = 0.0 if m == -np.inf else m - m_new
        e = np.exp(zb - m_new)
        u = alpha * (u + delta * s) + (e * (zb - m_new)).sum()
        s = alpha * s + e.sum()
        m = m_new
    return m + np.log(s), np.log(s) - u / s


z = np.random.default_rng(SEED).normal(0, 3, size=101).astype(np.float32)
lse, entropy = online_stats(z)
ref = reference_token_stats(torch.from_numpy(z)[None])
print(f"online:    lse {lse:.6f}  entropy {entropy:.6f}")
print(f"float64:   lse {ref[0].item():.6f}  entropy {ref[2].item():.6f}")
assert abs(lse - ref[0].item()) < 1e-4 and abs(entropy - ref[2].item()) < 1e-4

# %% [markdown]
# ## The naive version, and the bytes it moves
#
# What one writes without a kernel (`robustft.kernels.reference.eager_token_stats`):

# %%
print(textwrap.dedent(inspect.getsource(eager_token_stats).split('"""')[-1]).strip())

# %% [markdown]
# Every line is a full pass over an $[N, V]$ array, and most write a new float32 one. Its
# docstring counts the traffic: the upcast reads $bNV$ bytes ($b$ bytes per logit) and writes
# $4NV$; `log_softmax` reads that three times and writes it once; `exp`, the product and the
# sum read and write more; the argmax reads the input again. About **17 passes over a
# float32 $[N, V]$ array** against the kernel's single read of $bNV$ bytes, plus a few bytes
# per row for the targets and the four outputs. It also keeps three float32 $[N, V]$
# temporaries alive at once.
#
# Where the logits come from matters too. A model computes them from its last hidden states
# $h \in \mathbb{R}^{N \times H}$ and the output-embedding weight $W \in \mathbb{R}^{V \times
# H}$. The *materialised* path writes the logits $hW^\top$ to memory (in the model's dtype)
# and reads them back; the *fused* path (`linear_token_stats`) computes one tile of $hW^\top$
# at a time and folds it into the online state, so the logits never leave the chip:
#
# | path | reads | writes | extra memory |
# |---|---|---|---|
# | eager | $bNV + 17\cdot 4NV$ (about) | (included) | three $4NV$ temporaries |
# | kernel on logits | $bNV$ | $28N$ | none |
# | materialised: matmul, then kernel | $b(NH + VH) + bNV$ | $bNV$ | the $bNV$ logits |
# | fused hidden → stats | $b(NH + VH)$ | $28N$ + partial states | a few $[S, N]$ states |
#
# In numbers, for 16k tokens in bf16 (a batch of the reasoning expert's outputs) on the two
# real models of the book, and with an H100's specification-sheet bandwidth for the time
# that the traffic alone would take:

# %%
# H100 SXM HBM3 bandwidth, from NVIDIA's specification sheet (not measured here)
H100_GBPS = 3350
H100_BF16_TFLOPS = 989  # dense bf16 tensor-core peak, same source


def traffic(N, V, H, b=2):
    """Bytes each path moves (the table above) and the matmul's FLOPs."""
    head = b * (N * H + V * H)
    return {
        "eager": b * N * V + 17 * 4 * N * V,
        "kernel on logits": b * N * V + 28 * N,
        "materialised": head + 2 * b * N * V + 28 * N,
        "fused": head + 28 * N,
    }, 2 * N * H * V


MODELS = {"Qwen2.5-1.5B": (1536, 151936), "Llama-3-8B": (4096, 128256)}
N_TOKENS = 16384
rows, matmuls = [], []
for name, (H, V) in MODELS.items():
    moved, flops = traffic(N_TOKENS, V, H)
    for path, nbytes in moved.items():
        rows.append(
            {
                "model": name,
                "path": path,
                "GB moved": nbytes / 1e9,
                "ms at H100 spec peak": nbytes / (H100_GBPS * 1e9) * 1e3,
                "logits in memory (GB)": {
                    "eager": 3 * 4 * N_TOKENS * V,
                    "materialised": 2 * N_TOKENS * V,
                }.get(path, 0)
                / 1e9,
            }
        )
    matmuls.append(
        {
            "model": name,
            "hidden → logits matmul (TFLOP)": flops / 1e12,
            "ms at H100 bf16 spec peak": flops / (H100_BF16_TFLOPS * 1e12) * 1e3,
        }
    )
bytes_table = pd.DataFrame(rows)
# arithmetic, not traffic: a table of its own
flops_table = pd.DataFrame(matmuls).set_index("model")
q = bytes_table.set_index(["model", "path"])
glue(
    "eager_over_kernel",
    float(
        q.loc[("Qwen2.5-1.5B", "eager"), "GB moved"]
        / q.loc[("Qwen2.5-1.5B", "kernel on logits"), "GB moved"]
    ),
)
glue(
    "logits_gb", float(q.loc[("Qwen2.5-1.5B", "materialised"), "logits in memory (GB)"])
)
glue("matmul_ms", float(flops_table.loc["Qwen2.5-1.5B", "ms at H100 bf16 spec peak"]))
glue("mat_ms", float(q.loc[("Qwen2.5-1.5B", "materialised"), "ms at H100 spec peak"]))
glue("fused_ms", float(q.loc[("Qwen2.5-1.5B", "fused"), "ms at H100 spec peak"]))
print(f"bytes moved by each path, {N_TOKENS:,} tokens in bf16:")
display(bytes_table.round(2))
print(
    "the matmul from hidden states to logits, which the materialised and fused paths"
    " both do:"
)
display(flops_table.round(2))

# %% [markdown]
# On logits that already exist, one read instead of about seventeen float32 passes is a
# factor of {glue:text}`eager_over_kernel:.0f` in traffic for Qwen2.5: the kernel is bound by
# memory bandwidth, and its roofline is one read. From hidden states the picture changes:
# the matmul's arithmetic alone takes {glue:text}`matmul_ms:.1f` ms at the tensor cores'
# peak, against {glue:text}`mat_ms:.1f` ms for the materialised path's traffic and
# {glue:text}`fused_ms:.2f` ms for the fused path's. So the fused path saves a part of the time
# and, above all, *memory*: the {glue:text}`logits_gb:.1f` GB of bf16 logits for Qwen2.5 that
# the materialised path must hold.
# Peak memory, not time, is what decides how many sequences fit in one batch.
#
# ## The kernels
#
# **On logits.** `_token_stats_kernel` (in `kernels/triton_ops.py`) runs one program per row.
# It streams the row in blocks of `BLOCK_V` columns and keeps the online state in registers;
# per block it loads the logits once, in their own dtype, and accumulates in float32. The
# heart of the loop is the update above, line for line:

# %%
source = (Path(kernels.__file__).parent / "triton_ops.py").read_text()
first = source.index("    for start in range(0, v_end, BLOCK_V):")
loop = source[first : source.index("    s = tl.sum(s, axis=0)")]
print(loop)

# %% [markdown]
# Two details make it fast on a GPU. The running maximum is a scalar per row, but the sums
# are kept per *lane* (a group of adjacent columns one thread holds): a block needs a
# cross-warp reduction for the maximum only, where a single state per row would need one for
# each of the maximum, the two sums and the argmax. The lanes are summed once, after the
# last block. And rows whose target is `ignore_index` (prompt
# positions, when scoring an answer) are not read at all.
#
# On a CPU the same math runs in chunked PyTorch (`kernels/torch_ops.py`): rows are taken a
# chunk at a time (about a million logits, so the temporaries stay in the CPU's cache), and
# the statistics use the shift-invariant form with `exp2`:

# %%
print(inspect.getsource(torch_ops._exp_moments))

# %% [markdown]
# **From hidden states.** `_linear_token_stats_kernel` tiles the output over rows and
# vocabulary: each program multiplies a `[BLOCK_N, H]` tile of hidden states by a
# `[BLOCK_V, H]` tile of the weight on tensor cores, and folds the `[BLOCK_N, BLOCK_V]`
# logit tile into per-row states in the epilogue. The vocabulary is split among programs;
# each writes a partial state $(m, s, u, \text{argmax}, z_t)$, and `merge_split_states`
# combines the splits with the same rescaling rule. The model code uses it through
# `robustft.inference.fused_head`: when the model's output layer is a plain bias-free linear
# layer (no logit soft-capping or scaling), `response_stats_of` runs the backbone, takes the
# last hidden states and calls `linear_token_stats` instead of the `lm_head`. It is the
# default on CUDA; `ROBUSTFT_FUSED_HEAD=1` turns it on anywhere.

# %% [markdown]
# ## Correctness on irregular shapes
#
# The tests that matter are the awkward ones: a vocabulary that is no multiple of any block,
# 16-bit inputs, a strided view (the last position of a `[B, T, V]` tensor), masked
# vocabularies (`-inf` columns), a fully masked row, and `ignore_index` targets. Each is
# compared with `reference_token_stats`, which computes the same statistics in float64 from
# the same input values.

# %% tags=["nbval-ignore-output"]
def compare(stats, logits, targets):
    """Largest absolute errors of a TokenStats against the float64 reference (NaN where
    both are)."""
    lse, logp, ent, arg = reference_token_stats(
        logits.reshape(-1, logits.shape[-1]),
        None if targets is None else targets.reshape(-1),
    )

    def err(got, want):
        got, want = got.reshape(-1).double(), want
        both_nan = torch.isnan(got) & torch.isnan(want)
        assert torch.equal(torch.isnan(got), torch.isnan(want)), "NaN pattern differs"
        # equal infinities: no error
        diff = torch.where(got == want, 0.0, (got - want).abs())
        return diff[~both_nan].max().item() if (~both_nan).any() else 0.0

    return {
        "lse": err(stats.lse, lse),
        "log p(target)": err(stats.logp, logp),
        "entropy": err(stats.entropy, ent),
        "argmax equal": bool(torch.equal(stats.argmax.reshape(-1), arg)),
    }


def sci(frame):
    """Errors in scientific notation, for display."""
    return frame.apply(
        lambda col: col.map(lambda v: f"{v:.1e}") if col.dtype.kind == "f" else col
    )


def irregular_cases():
    g = torch.Generator().manual_seed(SEED)

    def logits(*shape, dtype=torch.float32, scale=3.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    def targets(*shape, V):
        t = torch.randint(0, V, shape, generator=g)
        t.view(-1)[::5] = -100  # every fifth row has no target
        return t

    yield "1823 x 781 fp32", logits(1823, 781), targets(1823, V=781)
    yield (
        "1823 x 781 bf16",
        logits(1823, 781, dtype=torch.bfloat16),
        targets(1823, V=781),
    )
    yield (
        "257 x 50257 fp16",
        logits(257, 50257, dtype=torch.float16),
        targets(257, V=50257),
    )
    x = logits(97, 3001)
    x[:, 1000:2000] = float("-inf")  # a masked part of the vocabulary
    x[13] = float("-inf")  # a row with no distribution at all
    yield "97 x 3001, masked columns, one all -inf row", x, targets(97, V=3001)
    big = logits(6, 40, 32003, dtype=torch.bfloat16, scale=30.0)  # large logits
    yield "[6, 40, 32003][:, -1] bf16 view, |z| ~ 30", big[:, -1], targets(6, V=32003)
    yield "5 x 1 (V = 1)", logits(5, 1), torch.zeros(5, dtype=torch.long)


rows = []
for name, x, t in irregular_cases():
    # on a GPU: the Triton kernel (backend chosen by device)
    x, t = x.to(device), t.to(device)
    stats = kernels.token_stats(x, t)
    rows.append(
        {
            "case": name,
            "dtype": str(x.dtype).replace("torch.", ""),
            **compare(stats, x, t),
        }
    )
errors = pd.DataFrame(rows).set_index("case")
sci(errors)

# %% [markdown]
# Every error is at the level of float32 rounding, for every input dtype (a 16-bit logit is
# exact in float32, so the accumulation is the only source of error), and the argmax picks
# the same first maximum. The checks, with the tolerance of `tests/test_kernels.py`:

# %%
assert errors[["lse", "log p(target)", "entropy"]].max().max() < 1e-4, errors
assert errors["argmax equal"].all(), errors
print(
    "token_stats: every statistic within 1e-4 of float64, same argmax, same NaN pattern:"
    " checked"
)

# %% [markdown]
# The fused path, on the same kind of input: hidden states and a weight of odd sizes, in
# float32 and bfloat16, against float64 statistics of the float64 product $hW^\top$.

# %% tags=["nbval-ignore-output"]
rows = []
g = torch.Generator().manual_seed(SEED)
for N, H, V, dtype in [
    (333, 96, 5003, torch.float32),
    (129, 200, 32003, torch.bfloat16),
]:
    h = torch.randn(N, H, generator=g).to(dtype)
    w = (torch.randn(V, H, generator=g) / H**0.5 * 4).to(dtype)
    t = torch.randint(0, V, (N,), generator=g)
    h, w, t = h.to(device), w.to(device), t.to(device)
    stats = kernels.linear_token_stats(h, w, t)
    rows.append(
        {
            "case": f"hidden {N} x {H}, weight {V} x {H}",
            "dtype": str(dtype).replace("torch.", ""),
            **compare(stats, h.double() @ w.double().T, t),
        }
    )
linear_errors = pd.DataFrame(rows).set_index("case")
assert linear_errors[["lse", "log p(target)", "entropy"]].max().max() < 1e-3, (
    linear_errors
)
assert linear_errors["argmax equal"].all(), linear_errors
sci(linear_errors)

# %% [markdown]
# ### The Triton kernels themselves, on a CPU
#
# With `TRITON_INTERPRET=1` set before `triton` is imported, Triton runs a kernel's Python
# source on numpy instead of compiling it for a GPU. It is slow (a few seconds even for the
# small shapes below) but it executes the very code of `triton_ops.py`, masks and block edges
# included. We run it in a subprocess, so this notebook's own `triton` import (if any) is
# unaffected, with small blocks so that every row crosses several block edges.

# %% tags=["nbval-ignore-output"]
CHECK = r"""
import json, warnings
import torch
# numpy warns about -inf arithmetic the kernel masks out
warnings.filterwarnings("ignore")
from robustft.kernels import triton_ops
from robustft.kernels.reference import reference_token_stats

g = torch.Generator().manual_seed(0)
out = {}
x = (torch.randn(37, 1000, generator=g) * 3).to(torch.bfloat16)
x[5] = float("-inf"); x[6, :500] = float("-inf")
t = torch.randint(0, 1000, (37,), generator=g); t[3] = -100
got = triton_ops.token_stats_triton(x, t, block_v=128)
ref = reference_token_stats(x, t)
def err(a, b):
    ok = ~torch.isnan(b)
    a, b = a.double()[ok], b[ok]
    # equal infinities: no error
    return float(torch.where(a == b, 0.0, (a - b).abs()).max())
def errors(got, ref):
    return [err(got[i], ref[i]) for i in range(3)] + [bool(torch.equal(got[3], ref[3]))]
out["token_stats 37 x 1000 bf16, BLOCK_V=128"] = errors(got, ref)
h = torch.randn(50, 72, generator=g)
w = torch.randn(300, 72, generator=g) / 8
t = torch.randint(0, 300, (50,), generator=g)
got = triton_ops.linear_token_stats_triton(h, w, t, block_n=16, block_v=32, block_k=32,
                                           num_splits=3)
ref = reference_token_stats(h.double() @ w.double().T, t)
out["linear_token_stats 50 x 72 -> 300 fp32, 16x32x32 tiles, 3 splits"] = errors(got, ref)
print(json.dumps(out))
"""
if kernels.triton_available():
    # `env VAR=1 python ...`: this process's environment, plus the interpreter switch
    done = subprocess.run(
        ["env", "TRITON_INTERPRET=1", sys.executable, "-c", CHECK],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    interp = pd.DataFrame(
        json.loads(done.stdout.strip().splitlines()[-1]),
        index=["lse", "log p(target)", "entropy", "argmax equal"],
    ).T
    assert (
        interp[["lse", "log p(target)", "entropy"]].astype(float).max().max() < 1e-4
    ), interp
    assert interp["argmax equal"].all(), interp
    print(
        "Triton kernels in the interpreter: within 1e-4 of float64, same argmax: checked"
    )
    interp[["lse", "log p(target)", "entropy"]] = interp[
        ["lse", "log p(target)", "entropy"]
    ].astype(float)
    display(sci(interp))
else:
    print(
        "triton is not installed: `pip install triton` to run the kernels in the"
        " interpreter"
    )

# %% [markdown]
# ## The kernels on this mode's model
#
# The shapes so far were made up. Here are the same two calls on the set-up's model: its last
# hidden states $h$ for the first test questions (every position of each prompt, with the
# next token as the target) and its own output layer $W$ — the toy model offline, SmolLM2-135M
# in the real mode, Qwen2.5-1.5B on a GPU. The materialised path is checked against float64
# statistics of the very logits it reduces, the fused path against float64 statistics of
# $hW^\top$ computed in float64.

# %% tags=["nbval-ignore-output"]
N_QUESTIONS = 8  # test questions whose prompts are reduced
base = S.lm.base_model
weight = base.get_output_embeddings().weight.detach()  # [V, H], the output layer
prompts = [format_question(s) for s in S.test[:N_QUESTIONS]]
batch = S.lm.tokenizer(prompts, return_tensors="pt", padding=True).to(device)
ids, mask = batch["input_ids"], batch["attention_mask"].bool()
with torch.no_grad():
    hidden = base.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    pairs = mask[:, :-1] & mask[:, 1:]  # a real position and a real next token
    h, t = hidden[:, :-1][pairs].to(weight.dtype), ids[:, 1:][pairs]
    logits = h @ weight.T  # materialised, in the model's dtype
    own = {
        "materialised: token_stats(h @ W.T)": compare(
            kernels.token_stats(logits, t), logits, t
        ),
        "fused: linear_token_stats(h, W)": compare(
            kernels.linear_token_stats(h, weight, t), h.double() @ weight.double().T, t
        ),
    }
V_MODEL, H_MODEL = weight.shape
print(
    f"{S.lm.name}: {len(t)} positions, H = {H_MODEL:,}, V = {V_MODEL:,}, "
    f"{str(weight.dtype).replace('torch.', '')}; its logits take "
    f"{logits.numel() * logits.element_size() / 2**20:.1f} MiB"
)
model_errors = pd.DataFrame.from_dict(own, orient="index")
backend = kernels.resolve_backend(None, device)
model_errors = model_errors.rename_axis(f"{device.type}, {backend}")
sci(model_errors)

# %% [markdown]
# In every mode both paths agree with float64 and pick the same greedy token as the
# reference, on the model's own hidden states and vocabulary:

# %%
assert model_errors[["lse", "log p(target)", "entropy"]].max().max() < 1e-3, (
    model_errors
)
assert model_errors["argmax equal"].all(), model_errors
print("the mode's own model: both paths within 1e-3 of float64, same argmax: checked")

# %% [markdown]
# In [the chapter run with SmolLM2 on the paper's ARC files](../real-mode/08_kernels.ipynb)
# this section reduces SmolLM2-135M's own hidden states over its own vocabulary, on a CPU
# with the chunked PyTorch path; the rest of that run is the same CPU code as here. What a
# 135M model on a CPU cannot show is what the kernels are for: the Triton kernels' time
# against a GPU's copy bandwidth, and the memory the fused path saves at a vocabulary of
# Qwen2.5's size.

# %% [markdown]
# ## Memory: fused hidden → stats against materialised logits
#
# How much memory does each path take beyond its inputs? On a CPU the honest measurement is
# the process's peak resident memory. `robustft.kernels.benchmark.peak_cpu` runs one call
# in a fresh process, with every large allocation mapped on its own so that freed memory
# really leaves, and reports the peak resident memory during the call minus the memory
# before it (outputs included). We sweep the number of rows $N$ at a fixed, scaled-down
# output layer ($H$ = 256, $V$ = 32,000, float32), and then the vocabulary $V$ at a fixed
# $N$ = 1024, for the two paths:
#
# - **materialised**: `token_stats(hidden @ weight.T, targets)`, the logits built first;
# - **fused**: `linear_token_stats(hidden, weight, targets)`.

# %% tags=["nbval-ignore-output"]
H_MEM, V_MEM = 256, 32000
NS = [256, 1024, 4096]
N_VOCAB, VS = 1024, [8000, 32000, 128000]  # the vocabulary sweep, at a fixed N
PATHS = {
    "materialised": "matmul + token_stats",
    "fused": f"fused ({kernels.resolve_backend(None, device)})",
}


def peak_mib(N, V, method):
    if device.type == "cuda":  # torch.cuda.max_memory_allocated around one call
        args = benchmark.make_linear_inputs(N, H_MEM, V, torch.float32, device)
        nbytes = benchmark.peak_cuda(benchmark.linear_methods(device)[method], args)
    else:  # peak resident memory of a fresh process
        nbytes = benchmark.peak_cpu("linear", method, [N, H_MEM, V], "fp32")
    return np.nan if nbytes is None else nbytes / 2**20


mem = []
start = time.time()
for N, V in [(N, V_MEM) for N in NS] + [(N_VOCAB, V) for V in VS if V != V_MEM]:
    for path, method in PATHS.items():
        mem.append(
            {
                "N": N,
                "V": V,
                "path": path,
                "peak extra MiB": peak_mib(N, V, method),
                "fp32 logits MiB": N * V * 4 / 2**20,
            }
        )
mem = pd.DataFrame(mem)
print(f"{time.time() - start:.0f} s")
mem.pivot(index=["N", "V"], columns="path", values="peak extra MiB").assign(
    **{"fp32 logits MiB": mem.groupby(["N", "V"])["fp32 logits MiB"].first()}
).round(1)

# %% tags=["nbval-ignore-output"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
sweeps = [
    (
        "N",
        mem[mem["V"] == V_MEM],
        NS,
        lambda N: N * V_MEM * 4 / 2**20,
        f"rows N (tokens), V = {V_MEM:,}",
    ),
    (
        "V",
        mem[mem["N"] == N_VOCAB],
        VS,
        lambda V: N_VOCAB * V * 4 / 2**20,
        f"vocabulary V, N = {N_VOCAB:,}",
    ),
]
for ax, (col, data, xs, logits, xlabel) in zip(axes, sweeps):
    for path, style in zip(PATHS, ("o-", "D-")):
        d = data[data["path"] == path].sort_values(col)
        ax.plot(d[col], d["peak extra MiB"], style, label=path)
    ax.plot(xs, [logits(x) for x in xs], "k:", label="size of the fp32 logits")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(xs, [f"{x:,}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_title(f"peak extra memory against {col}")
axes[0].set_ylabel("peak extra memory (MiB)")
axes[0].legend(loc="upper left", fontsize=9)
fig.suptitle(
    f"{device.type.upper()}, H = {H_MEM}, float32: materialised logits against the fused"
    " path"
)
fig.tight_layout()
m = mem.set_index(["N", "V", "path"])["peak extra MiB"]
glue("mem_mat", float(m[NS[-1], V_MEM, "materialised"]))
glue("mem_fused", float(m[NS[-1], V_MEM, "fused"]))
glue("mem_ratio", float(m[NS[-1], V_MEM, "materialised"] / m[NS[-1], V_MEM, "fused"]))
glue("mem_fused_vmin", float(m[N_VOCAB, VS[0], "fused"]))
glue("mem_fused_vmax", float(m[N_VOCAB, VS[-1], "fused"]))
glue("mem_mat_vmax", float(m[N_VOCAB, VS[-1], "materialised"]));

# %%
m = mem.set_index(["N", "V", "path"])["peak extra MiB"]
logits_mib = NS[-1] * V_MEM * 4 / 2**20
# it holds the whole logit matrix
assert m[NS[-1], V_MEM, "materialised"] >= 0.9 * logits_mib, m
# a tile per worker, not the matrix
assert m[NS[-1], V_MEM, "fused"] <= 0.25 * logits_mib, m
# Over the vocabulary sweep: materialised grows with V, fused does not (within 2x + 8
# MiB of its smallest-V peak, for a vocabulary 16 times larger).
assert m[N_VOCAB, VS[-1], "materialised"] >= 0.9 * N_VOCAB * VS[-1] * 4 / 2**20, m
assert m[N_VOCAB, VS[-1], "fused"] <= 2 * m[N_VOCAB, VS[0], "fused"] + 8, m
print(
    f"at N = {NS[-1]}: materialised holds the logits, fused stays under a quarter of"
    " them; "
    f"from V = {VS[0]:,} to {VS[-1]:,} the fused peak stays flat: checked"
)

# %% [markdown]
# The materialised path's peak grows with $N$ and follows the size of the float32 logits
# (the dotted line): at $N$ = 4096 it needs {glue:text}`mem_mat:.0f` MiB beyond its inputs.
# The fused path needs {glue:text}`mem_fused:.0f` MiB, {glue:text}`mem_ratio:.0f` times
# less: a few logit tiles per worker thread and the $[N]$ outputs. Its tiles have a fixed
# number of columns, so the algorithm's memory does not depend on $V$, and the right panel
# measures that: from $V$ = 8,000 to 128,000 at $N$ = 1024 the fused path's peak goes from
# {glue:text}`mem_fused_vmin:.0f` to {glue:text}`mem_fused_vmax:.0f` MiB, while the
# materialised path's grows with the logits, to {glue:text}`mem_mat_vmax:.0f` MiB. (We measured
# up to $V$ = 128,000; Qwen2.5's 151,936 is beyond the sweep, and the algorithm gives no reason
# for a change there.)
# On a GPU the same comparison is made with `torch.cuda.max_memory_allocated` by the
# benchmark script; its numbers appear in the next section when a GPU results file exists.
#
# ## The benchmark
#
# `python -m robustft.kernels.benchmark` times every path against eager PyTorch and
# `torch.compile` of the same math, measures the device's copy bandwidth in the same run (the
# practical roofline of a kernel that reads its input once), and writes
# `kernels/results/<device>.{json,md,png}`: `cpu-…` for a CPU run, `cuda-…` for a GPU. This
# section reads every results file there, so a GPU run added later shows up here without a
# change to the chapter.

# %%
results = {}
for path in sorted(benchmark.RESULTS_DIR.glob("*.json")):
    data = json.loads(path.read_text())
    results[path.stem] = data
    print(
        f"{path.name}: {data['meta']['device_name']} ({data['meta']['device']}), "
        f"{data['meta']['date']}, "
        f"torch {data['meta']['torch']}, "
        f"copy bandwidth {data['meta']['copy_GBps']:.1f} GB/s"
    )
gpu_runs = [k for k, d in results.items() if d["meta"]["device"] == "cuda"]
cpu_runs = [k for k, d in results.items() if d["meta"]["device"] == "cpu"]
if not gpu_runs:
    print(
        "GPU results: MISSING. No kernels/results/cuda-*.json yet; the Triton kernels"
        " have not been timed on hardware. Run `python -m robustft.kernels.benchmark`"
        " on a CUDA machine to add them."
    )

# %%
def token_table(run):
    rows = [r for r in results[run]["rows"] if r["op"] == "token_stats"]
    return pd.DataFrame(
        [
            {
                "N": r["N"],
                "V": r["V"],
                "dtype": r["dtype"],
                "method": r["method"],
                "ms (median)": r["ms"],
                "GB/s": r["GB/s"],
                "% of copy bandwidth": r["pct_copy_bw"],
                "peak extra MiB": r["peak_extra_MiB"],
            }
            for r in rows
        ]
    )


def linear_table(run):
    rows = [r for r in results[run]["rows"] if r["op"] == "linear_token_stats"]
    return pd.DataFrame(
        [
            {
                "N": r["N"],
                "H": r["H"],
                "V": r["V"],
                "model": r["model"],
                "dtype": r["dtype"],
                "method": r["method"],
                "ms (median)": r["ms"],
                "TFLOP/s": r["TFLOP/s"],
                "peak extra MiB": r["peak_extra_MiB"],
            }
            for r in rows
        ]
    )


for run in cpu_runs + gpu_runs:
    print(f"== {run}: token_stats (GB/s counts one read of the logits)")
    display(token_table(run).round(2))
    print(f"== {run}: linear_token_stats")
    display(linear_table(run).round(2))

# %% [markdown]
# On the CPU, eager PyTorch reaches a small fraction of the copy bandwidth: it streams the
# $[N, V]$ float32 temporaries through memory many times. The chunked path keeps each chunk's
# temporaries in cache and is an order of magnitude faster, with a peak memory of a few
# chunks instead of three $[N, V]$ arrays. `torch.compile` fuses the eager graph into loops
# that need almost no extra memory, and lands between the two in time. How close it comes to
# the chunked path depends on the shape: at $N$ = 4096, $V$ = 32,000 in bf16 it takes
# {glue:text}`compile_over_chunked_4096_32000_bf16:.2f` times the chunked path's time (nearly
# level), in fp32 {glue:text}`compile_over_chunked_4096_32000_fp32:.2f` times, and at
# $N$ = 1024, $V$ = 128,256 in bf16 {glue:text}`compile_over_chunked_1024_128256_bf16:.2f`
# times. The GPU rows — the Triton kernel's fraction of the copy bandwidth,
# which is what the kernel was written for — come from a GPU results file.

# %%
cpu_tok = token_table(cpu_runs[0]) if cpu_runs else None
if cpu_tok is not None:
    key = (
        (cpu_tok["N"] == 4096) & (cpu_tok["V"] == 32000) & (cpu_tok["dtype"] == "fp32")
    )
    t = cpu_tok[key].set_index("method")
    glue(
        "cpu_speedup",
        float(t.loc["eager", "ms (median)"] / t.loc["torch chunked", "ms (median)"]),
    )
    glue(
        "cpu_mem_ratio",
        float(
            t.loc["eager", "peak extra MiB"] / t.loc["torch chunked", "peak extra MiB"]
        ),
    )
    assert t.loc["torch chunked", "ms (median)"] < t.loc["eager", "ms (median)"], t
    assert (
        t.loc["torch chunked", "peak extra MiB"]
        < 0.25 * t.loc["eager", "peak extra MiB"]
    ), t
    for (N, V, dt), cfg in cpu_tok.groupby(["N", "V", "dtype"]):
        ms = cfg.set_index("method")["ms (median)"]
        glue(
            f"compile_over_chunked_{N}_{V}_{dt}",
            float(ms["torch.compile"] / ms["torch chunked"]),
        )
        # compile: in between
        assert ms["torch chunked"] < ms["torch.compile"] < ms["eager"], (N, V, dt, ms)
    print(
        "stored CPU run: the chunked path is faster than eager and needs under a quarter"
        " of its memory; "
        "torch.compile lands between the two at every shape: checked"
    )

# %%
runs = cpu_runs + gpu_runs
tok = pd.concat(
    [token_table(r).assign(run=r, device=results[r]["meta"]["device"]) for r in runs]
)
lin = pd.concat(
    [linear_table(r).assign(run=r, device=results[r]["meta"]["device"]) for r in runs]
)
tok["shape"] = [
    f"{n:,} × {v:,}\n{dt}" for n, v, dt in zip(tok["N"], tok["V"], tok["dtype"])
]
shapes = list(dict.fromkeys(tok["shape"]))
series = list(dict.fromkeys(zip(tok["device"], tok["method"])))
fig, axes = plt.subplots(
    1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.5, 1]}
)
ax, width = axes[0], 0.8 / len(series)
for j, (dev, method) in enumerate(
    series
):  # one bar per shape and method: separate measurements
    d = (
        tok[(tok["device"] == dev) & (tok["method"] == method)]
        .set_index("shape")
        .reindex(shapes)
    )
    ax.bar(
        np.arange(len(shapes)) + (j - (len(series) - 1) / 2) * width,
        d["% of copy bandwidth"],
        width,
        label=f"{method} ({dev})",
    )
ax.set_xticks(range(len(shapes)), shapes, fontsize=10)
ax.set_xlabel("logits N × V, dtype")
ax.set_ylabel("% of the device's copy bandwidth")
ax.set_title("token_stats: fraction of the roofline")
ax.set_ylim(0, 1.3 * tok["% of copy bandwidth"].max())  # headroom for the legend
ax.legend(fontsize=9, loc="upper center", ncol=len(series) if len(series) <= 3 else 2)
ax = axes[1]
labels = [f"{m} ({dev})" for m, dev in zip(lin["method"], lin["device"])]
ax.barh(labels, lin["peak extra MiB"], color="tab:gray")
ax.invert_yaxis()
ax.tick_params(axis="y", labelsize=10)
ax.set_xlabel("peak extra memory (MiB)")
first = lin.iloc[0]
ax.set_title(f"linear_token_stats: {first['N']}×{first['H']} → {first['V']:,}")
fig.suptitle(
    "stored benchmark runs: "
    + ", ".join(runs)
    + ("" if gpu_runs else " (GPU results missing: CPU only)"),
    color="black" if gpu_runs else "tab:red",
)
fig.tight_layout()

# %% [markdown]
# In the stored CPU run, at $N$ = 4096, $V$ = 32,000 in float32, the chunked path is
# {glue:text}`cpu_speedup:.1f` times faster than eager PyTorch and needs
# {glue:text}`cpu_mem_ratio:.0f` times less extra memory. Those are CPU numbers, measured with
# other processes sharing the two cores (the medians of interleaved rounds). What a GPU
# gains is a separate question: the Triton kernel's target is one read of the logits at
# close to the copy bandwidth, and the fused kernel's is the speed of the bare matmul with
# none of the logits' memory. Until a `cuda-*.json` file is in `kernels/results/`, those
# numbers are **missing**, not estimated.
#
# ## Summary
#
# - Log-sum-exp, the target's log-probability, the entropy and the argmax of a softmax all
#   come from one read of the logits, with an online state $(m, s, u)$ rescaled whenever the
#   maximum grows.
# - The naive PyTorch version makes about seventeen float32 passes over $[N, V]$ and keeps
#   three such arrays alive; the kernel reads the logits once, in their own dtype.
# - The fused variant goes from hidden states to statistics tile by tile and never holds the
#   logits: its memory does not grow with the vocabulary (measured here from 8,000 to 128,000
#   columns).
# - Both backends agree with float64 on irregular shapes, masked vocabularies and strided
#   views; the Triton kernels are tested on a CPU in Triton's interpreter.
#
# **Exercises.** (1) In `online_stats`, process the blocks in reverse order: why is the result
# the same? What breaks if you drop the `delta` term? (2) Add a row with a `NaN` logit to one
# of the irregular cases and read `stats.valid`: what does each backend return, and why is
# that better than a finite number? (3) With `traffic()`, find the number of tokens $N$ at
# which the materialised logits of Llama-3-8B alone fill a 16 GB T4, and compare it with the
# fused path's extra memory at that $N$.
