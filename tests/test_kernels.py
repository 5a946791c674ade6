"""Correctness of robustft.kernels against a float64 reference, for both backends.

One file, both backends: every test that takes ``backend`` runs for "torch" in-process.
The "triton" cases need either CUDA or the Triton interpreter, and the interpreter must be
switched on before triton is first imported, so on a CPU machine
``test_triton_cases_in_interpreter_subprocess`` re-runs this file with ``-k triton`` under
``TRITON_INTERPRET=1`` in a fresh interpreter and fails with its output if any case fails.
(Run that part alone with ``TRITON_INTERPRET=1 pytest tests/test_kernels.py -k triton``.)

Tolerances. The reference casts the *same* bf16/fp16/fp32 values to float64, so input
rounding cancels out and what is left is float32 accumulation over V terms (and, on the
GPU, the approximate exp). Worst error measured on CPU (both backends, all cases here):
~3e-7 relative for lse/logp/entropy (~5e-6 absolute), ~2e-6 relative for the fused linear
variant, whose logits are float32 dot products over H. The tolerances below leave 4-10x
headroom; they are the same for every input dtype for the reason above.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from robustft.kernels import (
    linear_token_stats,
    option_logprobs,
    resolve_backend,
    response_stats,
    shift_labels,
    token_stats,
)
from robustft.kernels import torch_ops
from robustft.kernels.reference import reference_token_stats

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TRITON_RUNS_HERE = HAS_TRITON and (DEVICE == "cuda" or INTERPRETING)

# "triton" cases are marked `triton_kernel`; where triton cannot run in this process (CPU
# without the interpreter) conftest.py deselects them and
# test_triton_cases_in_interpreter_subprocess runs them all under TRITON_INTERPRET=1.
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.triton_kernel)]
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
# (atol, rtol) against float64, per input dtype; see module docstring for why they agree.
TOL = {
    torch.bfloat16: dict(atol=2e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-5, rtol=1e-5),
    torch.float32: dict(atol=2e-5, rtol=1e-5),
}
# Fused linear variant: logits are themselves float32 dot products over H, so add the
# matmul's accumulation error (|z| ~ sqrt(H) ~ 8 here).
LINEAR_TOL = dict(atol=5e-4, rtol=1e-5)
IGNORE = -100


def _rand_logits(n, v, dtype, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, v, generator=g) * scale).to(dtype)


def _assert_close(got, want, tol, what):
    """Float outputs: same NaN pattern, finite/inf values equal within ``tol``."""
    got = got.detach().cpu().double()
    want = want.detach().cpu().double()
    assert torch.equal(torch.isnan(got), torch.isnan(want)), f"{what}: NaN pattern differs"
    keep = ~torch.isnan(want)
    torch.testing.assert_close(got[keep], want[keep], **tol, msg=lambda m: f"{what}: {m}")


def _check_against_reference(stats, logits, targets, tol):
    ref = reference_token_stats(logits.cpu(), None if targets is None else targets.cpu(), IGNORE)
    for name, got, want in zip(("lse", "logp", "entropy"), stats[:3], ref[:3]):
        _assert_close(got, want, tol, name)
    assert torch.equal(stats.argmax.cpu(), ref[3]), "argmax differs"
    assert torch.equal(stats.valid.cpu(), ~torch.isnan(ref[0])), "valid flag differs"
    assert stats.argmax.dtype == torch.int64 and stats.lse.dtype == torch.float32


def _masked_case(n, v, dtype, seed=0):
    """Logits with masked vocabulary and awkward targets.

    Row 0: all -inf (no distribution). Row 1: everything but the last column -inf, so the
    only mass is in the final, partial block. Row 2: every other column -inf. Targets hit
    ignore_index, an out-of-range id, and a -inf (masked) column.
    """
    x = _rand_logits(n, v, dtype, seed)
    t = torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(seed + 1))
    if n >= 6:
        x[0] = float("-inf")
        x[1, :-1] = float("-inf")
        if v > 1:
            x[2, ::2] = float("-inf")
            t[2] = 0  # a masked target: log p = -inf, not NaN
        t[3] = IGNORE
        t[4] = v + 5  # out of range: NaN, like an ignored row
    return x, t


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("V", [1, 7, 1000, 32003])
def test_token_stats_matches_float64(backend, dtype, V):
    n = 6 if V == 32003 else 33
    x, t = _masked_case(n, V, dtype)
    x, t = x.to(DEVICE), t.to(DEVICE)
    stats = token_stats(x, t, IGNORE, backend=backend)
    _check_against_reference(stats, x, t, TOL[dtype])
    # The documented no-distribution result, stated explicitly.
    assert not stats.valid[0] and stats.argmax[0] == -1
    assert all(math.isnan(f[0].item()) for f in stats[:3])
    if V > 1:
        assert stats.logp[2].item() == float("-inf")
    assert math.isnan(stats.logp[3].item()) and math.isnan(stats.logp[4].item())
    assert stats.valid[1:].all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_token_stats_non_contiguous_rows(backend, dtype):
    wide, t = _masked_case(24, 1500, dtype, seed=3)
    wide, t = wide.to(DEVICE), t.to(DEVICE)
    rows = wide[::2, 100:1100]  # row stride 3000, offset start, V=1000
    stats = token_stats(rows, t[::2], IGNORE, backend=backend)
    _check_against_reference(stats, rows, t[::2], TOL[dtype])
    cols = wide[:, :1000].t().contiguous().t()  # column stride 24, row stride 1
    stats = token_stats(cols, t, IGNORE, backend=backend)
    _check_against_reference(stats, cols, t, TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_stats_large_logits_and_ties(backend):
    # Logits near 1e4: E_p[z] and lse are both ~1e4, entropy ~1; the shifted form keeps it.
    x = (_rand_logits(8, 1000, torch.float32, seed=5) + 1e4).to(DEVICE)
    x[5, 10] = x[5, 900] = x[5].max() + 1  # tie: the first index wins
    stats = token_stats(x, backend=backend)
    _check_against_reference(stats, x, None, TOL[torch.float32])
    assert stats.argmax[5].item() == 10
    assert torch.isnan(stats.logp).all()  # no targets given


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_stats_shapes_and_empty(backend):
    x, t = _masked_case(12, 50, torch.bfloat16)
    x3, t3 = x.view(3, 4, 50).to(DEVICE), t.view(3, 4).to(DEVICE)
    stats3 = token_stats(x3, t3, IGNORE, backend=backend)
    assert stats3.lse.shape == (3, 4)
    flat = token_stats(x.to(DEVICE), t.to(DEVICE), IGNORE, backend=backend)
    for a, b in zip(stats3, flat):
        assert torch.equal(a.reshape(-1).cpu(), b.cpu()) or torch.allclose(
            a.reshape(-1).cpu().double(), b.cpu().double(), equal_nan=True)
    empty = token_stats(torch.empty(0, 32003, dtype=torch.bfloat16, device=DEVICE),
                        torch.empty(0, dtype=torch.int64, device=DEVICE), backend=backend)
    assert all(f.shape == (0,) for f in empty)
    assert empty.lse.dtype == torch.float32 and empty.argmax.dtype == torch.int64
    with pytest.raises(ValueError):
        token_stats(torch.empty(4, 0, device=DEVICE), backend=backend)
    with pytest.raises(ValueError):
        token_stats(x.to(DEVICE), t[:5].to(DEVICE), backend=backend)


@pytest.mark.triton_kernel
@pytest.mark.parametrize("block_v", [16, 64])
def test_triton_multi_block_online_merge(block_v):
    """Small blocks: many online rescales, fully masked leading blocks, a partial tail."""
    from robustft.kernels.triton_ops import token_stats_triton

    x, t = _masked_case(9, 1000, torch.bfloat16, seed=7)
    x[6, :700] = float("-inf")  # mass starts many blocks in
    x[7, 500] = 50.0  # the max arrives mid-row and rescales everything before it
    x, t = x.to(DEVICE), t.to(DEVICE)
    from robustft.kernels.outputs import TokenStats

    lse, logp, ent, arg = token_stats_triton(x, t, IGNORE, block_v=block_v)
    stats = TokenStats(lse, logp, ent, arg, ~torch.isnan(lse))
    _check_against_reference(stats, x, t, TOL[torch.bfloat16])


def _reference_response(logits, labels):
    """Float64: shift, score every non-ignored target, masked means per sequence."""
    B, T, V = logits.shape
    targets = shift_labels(labels.cpu(), IGNORE)
    lse, logp, ent, _ = reference_token_stats(logits.cpu().reshape(B * T, V), targets.reshape(-1), IGNORE)
    mask = targets != IGNORE
    logp, ent = logp.view(B, T), ent.view(B, T)
    n = mask.sum(1)
    lsum = torch.where(mask, logp, 0).sum(1)
    return -lsum / n, torch.where(mask, ent, 0).sum(1) / n, n, lsum


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_response_stats_matches_float64(backend, dtype):
    B, T, V = 5, 11, 1000
    big = _rand_logits(B * (T + 3), V, dtype, seed=11).view(B, T + 3, V)
    logits = big[:, 2 : 2 + T]  # non-contiguous [B, T, V] view: never flattened by a copy
    labels = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(12))
    labels[:, :4] = IGNORE  # prompt
    labels[1, 8:] = IGNORE  # padding
    labels[2] = IGNORE  # no response at all
    labels[3, :-1] = IGNORE  # exactly one response token, the last position
    # Rows that predict ignored tokens are never read: poison them.
    poisoned = logits.clone()
    poisoned[shift_labels(labels, IGNORE) == IGNORE] = float("nan")
    got = response_stats(poisoned.to(DEVICE), labels.to(DEVICE), IGNORE, backend=backend)
    nll, ent, n, lsum = _reference_response(logits, labels)
    assert got.n_tokens.cpu().tolist() == n.tolist() == [7, 4, 0, 1, 7]
    _assert_close(got.response_entropy, nll, TOL[dtype], "response entropy")
    _assert_close(got.entropy, ent, TOL[dtype], "entropy")
    _assert_close(got.logp_sum, lsum, dict(atol=1e-3, rtol=1e-5), "logp_sum")
    assert math.isnan(got.response_entropy[2].item()) and got.logp_sum[2].item() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_response_stats_shift_by_hand(backend):
    """logits[0, t] predicts labels[0, t+1]: uniform over V=4 except a known peak."""
    logits = torch.zeros(1, 3, 4, device=DEVICE)
    logits[0, 1, 2] = math.log(5.0)  # p(token 2 | position 1) = 5/8
    labels = torch.tensor([[IGNORE, IGNORE, 2]], device=DEVICE)  # one response token: t=2
    got = response_stats(logits, labels, backend=backend)
    assert got.n_tokens.item() == 1
    assert got.response_entropy.item() == pytest.approx(-math.log(5 / 8), abs=1e-6)
    p = torch.tensor([1, 1, 5, 1]) / 8
    assert got.entropy.item() == pytest.approx(-(p * p.log()).sum().item(), abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_response_stats_all_ignored_and_empty(backend):
    logits = _rand_logits(6, 7, torch.float32).view(2, 3, 7).to(DEVICE)
    labels = torch.full((2, 3), IGNORE, device=DEVICE)
    got = response_stats(logits, labels, backend=backend)
    assert got.n_tokens.tolist() == [0, 0] and got.logp_sum.tolist() == [0.0, 0.0]
    assert torch.isnan(got.response_entropy).all() and torch.isnan(got.entropy).all()
    empty = response_stats(torch.empty(0, 5, 7, device=DEVICE),
                           torch.empty(0, 5, dtype=torch.int64, device=DEVICE), backend=backend)
    assert empty.response_entropy.shape == (0,)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_option_logprobs_letters(backend, dtype):
    B, V = 6, 1000
    x = _rand_logits(B, V, dtype, seed=21).to(DEVICE)
    letters = torch.tensor([32, 33, 34, 35], device=DEVICE)
    got = option_logprobs(x, letters, backend=backend)
    ref = torch.log_softmax(x.cpu().double(), -1)[:, letters.cpu()]
    _assert_close(got.logprobs, ref, TOL[dtype], "letter logprobs")
    _assert_close(torch.from_numpy(got.probs), torch.softmax(ref, -1), TOL[dtype], "letter probs")
    assert got.n_tokens.shape == (B, 4)
    ent = reference_token_stats(x.cpu(), None, IGNORE)[2]
    _assert_close(got.entropy, ent[:, None].expand(B, 4), TOL[dtype], "letter entropy")
    # Per-question ids with an absent option: -inf log-prob, probability 0, NaN entropy.
    ids = letters.expand(B, 4).clone()
    ids[0, 3] = IGNORE
    got2 = option_logprobs(x, ids, backend=backend)
    assert got2.logprobs[0, 3].item() == float("-inf") and got2.probs[0, 3] == 0.0
    assert torch.isnan(got2.entropy[0, 3]) and torch.isfinite(got2.entropy[0, :3]).all()
    np.testing.assert_allclose(got2.probs.sum(-1), np.ones(B), atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_option_logprobs_texts(backend):
    B, K, T, V = 3, 4, 9, 300
    logits = _rand_logits(B * K * T, V, torch.bfloat16, seed=31).view(B * K, T, V).to(DEVICE)
    labels = torch.randint(0, V, (B * K, T), generator=torch.Generator().manual_seed(32))
    labels[:, :5] = IGNORE
    labels[1, 7:] = IGNORE  # a shorter option
    labels[K + 3] = IGNORE  # question 1 has only 3 options
    labels = labels.to(DEVICE)
    got = option_logprobs(logits, labels, num_options=K, backend=backend)
    nll, ent, n, lsum = _reference_response(logits, labels)
    want = torch.where(n > 0, lsum, float("-inf")).view(B, K)
    _assert_close(got.logprobs, want, dict(atol=1e-3, rtol=1e-5), "option logprobs")
    _assert_close(got.entropy, ent.view(B, K), TOL[torch.bfloat16], "option entropy")
    assert torch.isnan(got.entropy[1, 3])
    assert got.n_tokens.cpu().view(-1).tolist() == n.tolist()
    assert got.probs[1, 3] == 0.0
    np.testing.assert_allclose(got.probs.sum(-1), np.ones(B), atol=1e-12)
    # The derived per-option response entropy is the reference mean token NLL (NaN if absent).
    want_h = torch.where(n > 0, nll, float("nan")).view(B, K).double().numpy()
    np.testing.assert_allclose(got.response_entropy, want_h, atol=1e-3, rtol=0, equal_nan=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("V", [1, 7, 1000])
def test_linear_token_stats_matches_float64(backend, dtype, V):
    N, H = 37, 48  # H not a multiple of the K tile
    g = torch.Generator().manual_seed(41)
    hidden = torch.randn(N, H, generator=g).to(dtype).to(DEVICE)
    weight = torch.randn(V, H, generator=g).to(dtype).to(DEVICE)
    targets = torch.randint(0, V, (N,), generator=g)
    targets[3] = IGNORE
    targets = targets.to(DEVICE)
    stats = linear_token_stats(hidden, weight, targets, IGNORE, backend=backend)
    logits64 = hidden.cpu().double() @ weight.cpu().double().T
    _check_against_reference(stats, logits64, targets, LINEAR_TOL)


@pytest.mark.triton_kernel
@pytest.mark.parametrize("num_splits", [1, 3])
def test_triton_linear_small_tiles_and_splits(num_splits):
    """Several row tiles, vocabulary tiles and splits, a strided hidden; V=32003 tail."""
    from robustft.kernels.outputs import TokenStats
    from robustft.kernels.triton_ops import linear_token_stats_triton

    g = torch.Generator().manual_seed(43)
    hidden = torch.randn(40, 2 * 64, generator=g).bfloat16()[:, ::2].to(DEVICE)  # stride 2
    weight = torch.randn(32003, 64, generator=g).bfloat16().to(DEVICE)
    targets = torch.randint(0, 32003, (40,), generator=g).to(DEVICE)
    out = linear_token_stats_triton(hidden, weight, targets, IGNORE, block_n=16, block_v=128,
                                    block_k=32, num_splits=num_splits)
    stats = TokenStats(*out, ~torch.isnan(out[0]))
    _check_against_reference(stats, hidden.cpu().double() @ weight.cpu().double().T, targets, LINEAR_TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_token_stats_shapes_and_empty(backend):
    hidden = torch.randn(2, 3, 16, device=DEVICE)
    weight = torch.randn(20, 16, device=DEVICE)
    stats = linear_token_stats(hidden, weight, backend=backend)
    assert stats.lse.shape == (2, 3)
    empty = linear_token_stats(hidden[:0], weight, backend=backend)
    assert empty.lse.shape == (0, 3)
    with pytest.raises(TypeError):
        linear_token_stats(hidden.half(), weight, backend=backend)


# ------------------------------------------------------------------------------------
# Torch path details, backend choice, and the Triton-on-CPU run
# ------------------------------------------------------------------------------------


def test_torch_path_chunks_rows(monkeypatch):
    """Tiny chunks (1-3 rows, tiles of 16 columns) give the same answers."""
    x, t = _masked_case(20, 1000, torch.bfloat16, seed=51)
    ref = token_stats(x, t, backend="torch")
    monkeypatch.setattr(torch_ops, "CHUNK_ELEMENTS", 2500)
    out = torch_ops.token_stats_torch(x, t, IGNORE, chunk_elements=2500)
    for a, b in zip(out, ref):
        assert torch.allclose(a.double(), b.double(), equal_nan=True, atol=1e-6)
    h, w = torch.randn(20, 32), torch.randn(1000, 32)
    lin = torch_ops.linear_token_stats_torch(h, w, t, IGNORE, chunk_elements=48, block_v=16)
    full = token_stats(h @ w.T, t, backend="torch")
    for a, b in zip(lin, full):
        assert torch.allclose(a.double(), b.double(), equal_nan=True, atol=1e-4)


@pytest.mark.parametrize("V", [1, 63, 64, 130, 1000])
def test_row_max_argmax_first_occurrence(V):
    """The grouped argmax of the torch path equals torch's first-occurrence argmax, with
    many ties (integer logits), ragged tails and -inf rows."""
    g = torch.Generator().manual_seed(V)
    x = torch.randint(-3, 4, (50, V), generator=g).float()
    x[0] = float("-inf")
    x[1, : V // 2] = float("-inf")
    m, arg = torch_ops.row_max_argmax(x)
    want_m, want_arg = x.max(dim=-1)
    assert torch.equal(m, want_m)
    assert torch.equal(arg[1:], want_arg[1:])  # row 0 has no max; the API reports -1 there


def test_backend_choice(monkeypatch):
    monkeypatch.delenv("ROBUSTFT_KERNEL_BACKEND", raising=False)
    cpu = torch.device("cpu")
    assert resolve_backend(None, cpu) == "torch"  # auto never picks the slow interpreter
    assert resolve_backend("torch", cpu) == "torch"
    with pytest.raises(ValueError):
        resolve_backend("cuda", cpu)
    monkeypatch.setenv("ROBUSTFT_KERNEL_BACKEND", "torch")
    assert resolve_backend(None, torch.device("cuda")) == "torch"
    if HAS_TRITON and not INTERPRETING:
        monkeypatch.delenv("ROBUSTFT_KERNEL_BACKEND")
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            token_stats(torch.zeros(2, 3), backend="triton")


def test_import_works_without_the_gpu_extra():
    """`import robustft.kernels` works with triton absent; forcing triton says why not."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from robustft.kernels import token_stats, triton_available\n"
        "assert not triton_available()\n"
        "s = token_stats(torch.zeros(2, 3), torch.tensor([0, 1]))\n"
        "assert abs(s.logp[0].item() + 1.0986123) < 1e-5\n"
        "try:\n"
        "    token_stats(torch.zeros(2, 3), backend='triton')\n"
        "except RuntimeError as e:\n"
        "    assert 'triton' in str(e); print('OK')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr


def _compile_for_nvidia(kernel, arch, types, constexprs, aligned, **options):
    """Compile ``kernel`` for sm_<arch> without a GPU, specialised the way a launch on
    typical tensors is: unit strides as constants, pointers and row strides divisible by 16."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = kernel.arg_names
    sig = {n: ("constexpr" if n in constexprs else types.get(n, "i32")) for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    src = ASTSource(kernel, sig, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


@pytest.mark.skipif(not HAS_TRITON or INTERPRETING, reason="needs triton in compile mode")
@pytest.mark.parametrize("arch", [80, 90])
def test_kernels_compile_for_nvidia(arch):
    """Both kernels compile to a cubin for Ampere and Hopper, no GPU needed. Catches code the
    interpreter accepts but the compiler rejects, and checks the code generation the
    performance depends on: 16-byte logit loads, tensor-core matmul in the fused kernel."""
    from robustft.kernels import triton_ops

    k = _compile_for_nvidia(
        triton_ops._token_stats_kernel, arch,
        types={"logits_ptr": "*bf16", "targets_ptr": "*i64", "argmax_ptr": "*i64",
               **{n: "*fp32" for n in ("lse_ptr", "logp_ptr", "entropy_ptr")}},
        constexprs={"HAS_TARGETS": True, "SKIP_IGNORED": True, "BLOCK_V": 4096, "GROUP": 8, "stride_v": 1},
        aligned=("logits_ptr", "stride_b", "stride_t", "V"), num_warps=8)
    assert "ld.global.v4.b32" in k.asm["ptx"]  # 8 bf16 logits per load instruction
    k = _compile_for_nvidia(
        triton_ops._linear_token_stats_kernel, arch,
        types={"hidden_ptr": "*bf16", "weight_ptr": "*bf16", "targets_ptr": "*i64", "arg_ptr": "*i32",
               **{n: "*fp32" for n in ("m_ptr", "s_ptr", "u_ptr", "zt_ptr")}},
        constexprs={"HAS_TARGETS": True, "DOT_PRECISION": "tf32", "UPCAST_DOT": False,
                    "BLOCK_N": 128, "BLOCK_V": 128, "BLOCK_K": 64, "stride_hk": 1, "stride_wk": 1},
        aligned=("hidden_ptr", "weight_ptr", "stride_hn", "stride_wv", "H"), num_warps=8, num_stages=3)
    mma = "wgmma" if arch == 90 else "mma.sync"
    assert mma in k.asm["ptx"]  # the fused epilogue did not knock the matmul off tensor cores


@pytest.mark.skipif(not HAS_TRITON or TRITON_RUNS_HERE, reason="triton cases already run in-process")
def test_triton_cases_in_interpreter_subprocess():
    """Run every "triton" case of this file on CPU under TRITON_INTERPRET=1."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("ROBUSTFT_KERNEL_BACKEND", None)
    cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-k", "triton", "-p", "no:cacheprovider",
           "-W", "ignore::RuntimeWarning"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tail = (out.stdout + out.stderr)[-6000:]
    assert out.returncode == 0, tail
    passed = re.search(r"(\d+) passed", out.stdout)
    assert passed and int(passed.group(1)) >= 40, tail
    assert "failed" not in out.stdout.splitlines()[-1], tail
    print(out.stdout.splitlines()[-1])


def test_torch_path_runs_its_worker_threads_under_the_callers_inference_mode():
    # Outputs made under torch.inference_mode() are inference tensors; the CPU workers must
    # write them in that mode too (a worker thread starts outside it). Many small chunks and
    # two threads force the threaded path.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 50, generator=g)
    targets = torch.randint(50, (64,), generator=g)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            lse, logp, ent, arg = torch_ops.token_stats_torch(logits, targets, chunk_elements=50 * 4)
    finally:
        torch.set_num_threads(threads)
    r_lse, r_logp, r_ent, r_arg = reference_token_stats(logits, targets)
    assert torch.allclose(lse.double(), r_lse, atol=1e-5) and torch.allclose(logp.double(), r_logp, atol=1e-5)
    assert torch.allclose(ent.double(), r_ent, atol=1e-5) and torch.equal(arg, r_arg)
