"""Triton kernels: per-row logit statistics, and the fused lm_head variant.

Importing this module imports triton; :mod:`robustft.kernels.dispatch` does so lazily.

# Why a kernel

For ``[N, V]`` logits of b bytes per element, the eager PyTorch computation (see
:func:`robustft.kernels.reference.eager_token_stats`) moves about ``bNV + 17·4NV`` bytes and
allocates three float32 ``[N, V]`` temporaries. Everything asked for (logsumexp,
log p(target), entropy, argmax) is a reduction along V, so one program per row can stream
the row once and keep an online state in registers:

    read  b·N·V  (logits)  + 8·N  (targets)
    write 3·4·N + 8·N      (lse, logp, entropy, argmax)

At bf16, N=16k, V=128,256 that is 4.2 GB read: ~1.3 ms at an H100's 3.35 TB/s peak,
against ~17 passes of 8.4 GB float32 arrays for eager. The practical roofline is what a
device-to-device copy reaches; the benchmark (``kernels/benchmark.py``) measures it in the
same run and reports the kernel's fraction of it.

# Online state

Per row, after the first j columns, with m the running max:

    s = Σ e^(z-m)          u = Σ e^(z-m)·(z-m)          (and argmax, first index of m)

When a new block raises the max to m', both are rescaled by α = e^(m-m'):
``s' = α·s``, ``u' = α·(u + (m-m')·s)``. At the end ``lse = m + log s`` and
``entropy = log s - u/s``. Keeping (z - m) instead of z avoids cancellation in
``lse - E_p[z]`` for large logits. Columns at -inf contribute e = 0 and e·(z-m) := 0.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .torch_ops import finish_state, merge_split_states


@triton.jit
def _token_stats_kernel(
    logits_ptr,
    stride_b,
    stride_t,
    stride_v,
    T,
    V,
    targets_ptr,
    ignore_index,
    lse_ptr,
    logp_ptr,
    entropy_ptr,
    argmax_ptr,
    HAS_TARGETS: tl.constexpr,
    SKIP_IGNORED: tl.constexpr,
    BLOCK_V: tl.constexpr,
    GROUP: tl.constexpr,
):
    """One program per row: stream the row in BLOCK_V columns, one read of each logit.

    Rows are indexed r = b*T + t over logits viewed as [B, T, V] (a 2-D [N, V] input is
    passed as B=1, T=N, stride_b=0), so a strided slice of a 3-D tensor needs no copy.

    Args:
        logits_ptr: logits, float16/bfloat16/float32, element (b, t, v) at
            ``b*stride_b + t*stride_t + v*stride_v`` (strides in elements).
        stride_b, stride_t, stride_v: strides of the [B, T, V] view.
        T: rows per leading index b (to split r into (b, t)).
        V: vocabulary size; the last block is masked with -inf.
        targets_ptr: int64 [B*T] contiguous target ids (unused unless HAS_TARGETS).
        ignore_index: target value with no log-prob (output NaN).
        lse_ptr, logp_ptr, entropy_ptr: float32 [B*T] outputs.
        argmax_ptr: int64 [B*T] output; -1 for rows with no finite logit.
        HAS_TARGETS: whether targets_ptr is read.
        SKIP_IGNORED: rows whose target is ignore_index are not read at all (outputs NaN);
            response scoring skips every prompt row this way.
        BLOCK_V: columns per iteration (power of two).
        GROUP: adjacent columns per lane of state (power of two dividing BLOCK_V); match the
            columns one thread loads (16 bytes of the input: 8 for 16-bit, 4 for fp32).
    """
    row = tl.program_id(0).to(tl.int64)  # int64: b*stride_b exceeds 2^31 at N·V > 2^31
    b = row // T
    t = row - b * T
    row_ptr = logits_ptr + b * stride_b + t * stride_t

    v_end = V
    if HAS_TARGETS:
        target = tl.load(targets_ptr + row)
        if SKIP_IGNORED:
            v_end = tl.where(target == ignore_index, 0, V)

    # The max is a scalar (one cross-warp reduction per block: the exp shift must be common
    # to all lanes). Sums and argmax are kept per lane, a lane being GROUP adjacent columns
    # that one thread holds, reduced in registers; the cross-warp reductions for them happen
    # once, after the loop. So a block costs one cross-warp reduction instead of four, for
    # 4 registers of state per GROUP columns. Rescaling by the scalar alpha = e^(m_old-m_new)
    # costs no extra exp per element.
    LANES: tl.constexpr = BLOCK_V // GROUP
    m = tl.full((), float("-inf"), tl.float32)  # running max
    s = tl.zeros((LANES,), tl.float32)  # per lane: Σ e^(z-m)
    u = tl.zeros((LANES,), tl.float32)  # per lane: Σ e^(z-m)·(z-m)
    best = tl.full((LANES,), float("-inf"), tl.float32)  # per lane: max so far
    best_col = tl.zeros((LANES,), tl.int32)  # per lane: first column holding it
    lane_cols = tl.reshape(tl.arange(0, BLOCK_V), (LANES, GROUP))
    for start in range(0, v_end, BLOCK_V):
        cols = start + lane_cols
        z = tl.load(row_ptr + cols * stride_v, mask=cols < V, other=float("-inf")).to(tl.float32)
        z_max = tl.max(z, axis=1)
        z_arg = start + tl.min(tl.where(z == z_max[:, None], lane_cols, BLOCK_V), axis=1)
        better = z_max > best  # strict: a lane keeps its first occurrence
        best = tl.where(better, z_max, best)
        best_col = tl.where(better, z_arg, best_col)
        m_new = tl.maximum(m, tl.max(z_max, axis=0))
        # While every logit so far is -inf there is no mass: shift by 0 instead of -inf.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_safe)  # 0 on the first block with mass (m = -inf)
        delta = tl.where(m == float("-inf"), 0.0, m - m_safe)
        y = z - m_safe
        e = tl.exp(y)
        ey = tl.where(z == float("-inf"), 0.0, e * y)  # p log p -> 0 as p -> 0
        u = alpha * (u + delta * s) + tl.sum(ey, axis=1)
        s = alpha * s + tl.sum(e, axis=1)
        m = m_new

    s = tl.sum(s, axis=0)
    u = tl.sum(u, axis=0)
    # First occurrence overall = smallest first-column among the lanes that hold the max.
    arg = tl.min(tl.where(best == m, best_col, V), axis=0)
    has_dist = m > float("-inf")
    log_s = tl.log(s)
    lse = tl.where(has_dist, m + log_s, float("nan"))
    entropy = tl.where(has_dist, log_s - u / s, float("nan"))
    tl.store(lse_ptr + row, lse)
    tl.store(entropy_ptr + row, entropy)
    tl.store(argmax_ptr + row, tl.where(has_dist, arg, -1).to(tl.int64))
    if HAS_TARGETS:
        has_target = (target != ignore_index) & (target >= 0) & (target < V)
        # One extra element per row: the target's logit (already in cache).
        z_t = tl.load(row_ptr + target * stride_v, mask=has_target, other=0.0).to(tl.float32)
        tl.store(logp_ptr + row, tl.where(has_target, z_t - lse, float("nan")))
    else:
        tl.store(logp_ptr + row, float("nan"))


# Launch configuration of _token_stats_kernel: 4096 columns (8 KiB of bf16) per iteration,
# 16 per thread with 8 warps, as two 16-byte loads. Compiled for sm_90 it takes 74 registers
# and no spills (ptxas), so 3 programs fit per SM. Not yet timed on hardware:
# `python -m robustft.kernels.benchmark` sweeps alternatives on CUDA.
TOKEN_STATS_BLOCK_V = 4096
TOKEN_STATS_NUM_WARPS = 8


def _default_block_v(V: int) -> int:
    return min(TOKEN_STATS_BLOCK_V, triton.next_power_of_2(V))


def token_stats_triton(
    logits: torch.Tensor,
    targets: torch.Tensor | None,
    ignore_index: int = -100,
    skip_ignored: bool = False,
    block_v: int | None = None,
    num_warps: int | None = None,
):
    """Host function for :func:`_token_stats_kernel`.

    Args:
        logits: ``[N, V]`` or ``[B, T, V]``, float16/bfloat16/float32, any strides.
        targets: ``[R]`` int64 contiguous (R = number of rows) or None.
        skip_ignored: leave rows whose target is ``ignore_index`` unread (NaN outputs).
        block_v, num_warps: launch overrides (tests use small blocks to cross block edges).

    Returns:
        ``(lse, logp, entropy, argmax)``, each ``[R]``: float32 x3, int64.
    """
    if logits.dim() == 2:
        N, V = logits.shape
        B, T = 1, N
        stride_b, stride_t, stride_v = 0, logits.stride(0), logits.stride(1)
    else:
        B, T, V = logits.shape
        stride_b, stride_t, stride_v = logits.stride()
    R = B * T
    dev = logits.device
    lse = torch.empty(R, dtype=torch.float32, device=dev)
    logp = torch.empty_like(lse)
    entropy = torch.empty_like(lse)
    argmax = torch.empty(R, dtype=torch.int64, device=dev)
    if R == 0:
        return lse, logp, entropy, argmax
    block_v = block_v or _default_block_v(V)
    if num_warps is None:
        num_warps = TOKEN_STATS_NUM_WARPS if block_v >= 2048 else 4
    has_targets = targets is not None
    _token_stats_kernel[(R,)](
        logits, stride_b, stride_t, stride_v, T, V,
        targets if has_targets else lse,  # dummy pointer, never read
        ignore_index,
        lse, logp, entropy, argmax,
        HAS_TARGETS=has_targets,
        SKIP_IGNORED=skip_ignored and has_targets,
        BLOCK_V=block_v,
        GROUP=min(block_v, 16 // logits.element_size()),  # one 16-byte load per lane
        num_warps=num_warps,
    )
    return lse, logp, entropy, argmax


# --------------------------------------------------------------------------------------
# Fused lm_head + statistics
# --------------------------------------------------------------------------------------


@triton.jit
def _linear_token_stats_kernel(
    hidden_ptr,
    stride_hn,
    stride_hk,
    weight_ptr,
    stride_wv,
    stride_wk,
    targets_ptr,
    N,
    V,
    H,
    cols_per_split,
    num_splits,
    m_ptr,
    s_ptr,
    u_ptr,
    arg_ptr,
    zt_ptr,
    HAS_TARGETS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Program (row tile, vocabulary split): logits tile = hidden tile @ weight tileᵀ on
    tensor cores, folded into per-row online states in the epilogue; writes the split's
    partial state. The [N, V] logits exist only one [BLOCK_N, BLOCK_V] tile at a time.

    The 1-D grid enumerates splits fastest, so programs resident together share a few row
    tiles of ``hidden`` (re-read per vocabulary tile from L2) and stream distinct weight
    tiles, like a grouped matmul schedule.

    Args:
        hidden_ptr: [N, H] float16/bfloat16/float32, element (n, k) at
            ``n*stride_hn + k*stride_hk``.
        weight_ptr: [V, H] same dtype, element (v, k) at ``v*stride_wv + k*stride_wk``.
        targets_ptr: int64 [N] contiguous (unused unless HAS_TARGETS).
        N, V, H: sizes.
        cols_per_split: vocabulary columns per split (a multiple of BLOCK_V).
        num_splits: number of vocabulary splits S.
        m_ptr, s_ptr, u_ptr: float32 [S, N] partial max, Σ e^(z-m), Σ e^(z-m)(z-m).
        arg_ptr: int32 [S, N] partial argmax (global column), -1 if no finite logit.
        zt_ptr: float32 [S, N] target logit if the target column is in the split, else 0.
        DOT_PRECISION: "ieee" for float32 inputs (no silent TF32), "tf32" otherwise
            (ignored for 16-bit inputs, which accumulate in float32 either way).
        UPCAST_DOT: cast the tiles to float32 before tl.dot. Only for the CPU interpreter,
            whose tl.dot multiplies bfloat16's raw uint16 storage (triton 3.9); exact for
            16-bit inputs, so results match the tensor-core path up to summation order.
        BLOCK_N, BLOCK_V, BLOCK_K: tile sizes (multiples of 16 for tl.dot).
    """
    pid = tl.program_id(0)
    pid_n = pid // num_splits
    pid_s = pid - pid_n * num_splits
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    if HAS_TARGETS:
        target = tl.load(targets_ptr + rows, mask=row_ok, other=-1)

    v_lo = pid_s * cols_per_split
    v_hi = tl.minimum(v_lo + cols_per_split, V)
    m = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    s = tl.zeros((BLOCK_N,), tl.float32)
    u = tl.zeros((BLOCK_N,), tl.float32)
    arg = tl.full((BLOCK_N,), -1, tl.int32)
    z_t = tl.zeros((BLOCK_N,), tl.float32)
    ks = tl.arange(0, BLOCK_K)
    h_ptrs = hidden_ptr + rows[:, None].to(tl.int64) * stride_hn + ks[None, :] * stride_hk
    for v0 in range(v_lo, v_hi, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_ok = cols < v_hi
        w_ptrs = weight_ptr + cols[:, None].to(tl.int64) * stride_wv + ks[None, :] * stride_wk
        acc = tl.zeros((BLOCK_N, BLOCK_V), tl.float32)
        for k0 in range(0, H, BLOCK_K):
            k_ok = (k0 + ks) < H
            h = tl.load(h_ptrs + k0 * stride_hk, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(w_ptrs + k0 * stride_wk, mask=col_ok[:, None] & k_ok[None, :], other=0.0)
            if UPCAST_DOT:
                h = h.to(tl.float32)
                w = w.to(tl.float32)
            acc = tl.dot(h, tl.trans(w), acc, input_precision=DOT_PRECISION)

        # Epilogue: the same online update as _token_stats_kernel, vectorised over rows.
        z = tl.where(col_ok[None, :], acc, float("-inf"))
        tile_max = tl.max(z, axis=1)
        tile_arg = tl.argmax(z, axis=1, tie_break_left=True)
        m_new = tl.maximum(m, tile_max)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_safe)
        delta = tl.where(m == float("-inf"), 0.0, m - m_safe)
        y = z - m_safe[:, None]
        e = tl.exp(y)
        ey = tl.where(z == float("-inf"), 0.0, e * y)
        u = alpha * (u + delta * s) + tl.sum(ey, axis=1)
        s = alpha * s + tl.sum(e, axis=1)
        arg = tl.where(tile_max > m, v0 + tile_arg, arg)
        m = m_new
        if HAS_TARGETS:
            z_t += tl.sum(tl.where(cols[None, :] == target[:, None], z, 0.0), axis=1)

    out = pid_s * N + rows
    tl.store(m_ptr + out, m, mask=row_ok)
    tl.store(s_ptr + out, s, mask=row_ok)
    tl.store(u_ptr + out, u, mask=row_ok)
    tl.store(arg_ptr + out, arg, mask=row_ok)
    tl.store(zt_ptr + out, z_t, mask=row_ok)


# The CPU interpreter (TRITON_INTERPRET=1 at import) turns @triton.jit into InterpretedFunction.
_INTERPRETED = not isinstance(_linear_token_stats_kernel, triton.runtime.JITFunction)


def linear_token_stats_triton(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor | None,
    ignore_index: int = -100,
    block_n: int = 128,
    block_v: int = 128,
    block_k: int = 64,
    num_splits: int | None = None,
    num_warps: int = 8,
    num_stages: int = 3,
):
    """Host function for :func:`_linear_token_stats_kernel`.

    Extra memory: 5 float32/int32 arrays of ``[S, N]`` partial states (S vocabulary splits,
    a few MB at N=8k), merged by :func:`robustft.kernels.torch_ops.merge_split_states`.
    Traffic: the weight is read once per wave of resident row tiles, hidden tiles are
    re-read from L2; the [N, V] logits never touch memory.

    Args:
        hidden: ``[N, H]`` float16/bfloat16/float32, any strides.
        weight: ``[V, H]``, same dtype, any strides.
        targets: ``[N]`` int64 contiguous or None.
        block_n, block_v, block_k, num_warps, num_stages: launch configuration (untuned
            defaults for Hopper-class GPUs; the tests pass small tiles).
        num_splits: vocabulary splits; default gives the GPU about 4 programs per SM.

    Returns:
        ``(lse, logp, entropy, argmax)``, each ``[N]``.
    """
    N, H = hidden.shape
    V = weight.shape[0]
    dev = hidden.device
    n_row_tiles = triton.cdiv(N, block_n)
    n_col_tiles = triton.cdiv(V, block_v)
    if num_splits is None:
        n_sm = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 4
        num_splits = triton.cdiv(4 * n_sm, n_row_tiles)
    num_splits = max(1, min(num_splits, n_col_tiles))
    cols_per_split = triton.cdiv(n_col_tiles, num_splits) * block_v
    num_splits = triton.cdiv(V, cols_per_split)  # drop splits that would be empty

    part = torch.empty(4, num_splits, N, dtype=torch.float32, device=dev)
    arg = torch.empty(num_splits, N, dtype=torch.int32, device=dev)
    has_targets = targets is not None
    _linear_token_stats_kernel[(n_row_tiles * num_splits,)](
        hidden, hidden.stride(0), hidden.stride(1),
        weight, weight.stride(0), weight.stride(1),
        targets if has_targets else part,  # dummy pointer, never read
        N, V, H, cols_per_split, num_splits,
        part[0], part[1], part[2], arg, part[3],
        HAS_TARGETS=has_targets,
        DOT_PRECISION="ieee" if hidden.dtype == torch.float32 else "tf32",
        UPCAST_DOT=_INTERPRETED and hidden.dtype != torch.float32,
        BLOCK_N=block_n,
        BLOCK_V=block_v,
        BLOCK_K=block_k,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    state = merge_split_states(part[0], part[1], part[2], arg.to(torch.int64), part[3])
    return finish_state(state, targets, ignore_index, V)
