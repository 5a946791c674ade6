"""Chunked PyTorch path: the CPU default, and the Triton kernels' math written in torch.

The naive computation

    logp_all = torch.log_softmax(logits.float(), -1)          # [N, V] fp32
    logp     = logp_all.gather(1, targets[:, None])
    entropy  = -(logp_all.exp() * logp_all).sum(-1)           # two more [N, V] fp32

keeps three ``[N, V]`` float32 temporaries alive (8 GB each at N=16k, V=128k) and reads
the logits several times. Here rows are processed in chunks of ``CHUNK_ELEMENTS`` logits,
so the largest temporaries are two ``[chunk, V]`` float32 blocks, whatever N is. For the
fused linear variant the vocabulary is tiled too, and per-row partial states are merged
online, exactly as the Triton kernel does it on the GPU.

Shift-invariant form of the statistics, for a row z with max m, y = z - m <= 0:

    s   = Σ e^y                    lse     = m + log s
    t   = Σ e^y · y                entropy = log s - t / s      (= lse - E_p[z])

Working with y instead of z avoids the cancellation in ``lse - E_p[z]`` when the logits are
large, and ``e^y · y`` is taken as 0 where z = -inf (p = 0 there, so p log p = 0).
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import torch

# Logits per chunk: the two float32 temporaries are 4 MiB each (plus 4 MiB for the upcast of
# 16-bit input), so a chunk's passes run from the CPU's last-level cache, far below any
# [N, V] copy, yet large enough that per-op overhead (a thread barrier per torch op) stays
# small. Measured on 2 EPYC cores, N=4k V=32k fp32: 2^20 was fastest; 2^22 was 4x slower
# (out of cache), 2^19 suffered most from barrier overhead when the cores were shared.
# Rows per chunk = this // V (at least 1).
CHUNK_ELEMENTS = 1 << 20
# On a GPU the torch path is only a fallback (Triton is the default there); chunks are
# larger so that kernel-launch overhead, not the chunking, stays negligible: 256 MiB buffers.
CUDA_CHUNK_ELEMENTS = 1 << 26

_NEG_INF = float("-inf")
_NAN = float("nan")
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


def _chunk_stats(x: torch.Tensor, targets: torch.Tensor | None, ignore_index: int, work: torch.Tensor):
    """Statistics of a block of rows, with the whole vocabulary present.

    Args:
        x: ``[c, V]`` logits, any float dtype, any strides.
        targets: ``[c]`` int64 or None.
        work: float32 workspace ``[2 or 3, >= c, V]`` (the third slot for upcasting 16-bit
            input), reused across chunks: no allocation and no page faults per chunk.

    Returns:
        ``(lse, logp, entropy, argmax)``: ``[c]`` float32 x3 and ``[c]`` int64.
    """
    c, V = x.shape
    if x.dtype == torch.float32:
        x32 = x  # a view: no copy
    else:
        x32 = work[2, :c]
        x32.copy_(x)  # upcast one chunk
    m, argmax = row_max_argmax(x32)
    has_dist = m > _NEG_INF  # False for all -inf rows (and NaN rows)
    m_safe = torch.where(has_dist, m, torch.zeros_like(m))  # avoids -inf - -inf = NaN
    s, t = _exp_moments(x32, m_safe, work[0, :c], work[1, :c])
    log_s = torch.log(s)
    nan = torch.full_like(m, _NAN)
    lse = torch.where(has_dist, m + log_s, nan)
    entropy = torch.where(has_dist, log_s - t / s, nan)
    argmax = torch.where(has_dist, argmax, torch.full_like(argmax, -1))
    logp = _target_logp(x32, lse, targets, ignore_index, V)
    return lse, logp, entropy, argmax


def row_max_argmax(x: torch.Tensor, group: int = 64):
    """Row max and the first index reaching it, for ``x`` ``[c, V]`` float32.

    ``x.max(dim=-1)`` tracks indices element by element and runs ~15x slower on CPU than
    the vectorised ``amax``. So: ``amax`` over groups of ``group`` columns (one pass), pick
    the first group holding the max (a [c, V/group] problem), then the first match inside
    that group. First group + first match inside = first occurrence overall.
    """
    c, V = x.shape
    n_full = V // group
    if n_full < 2:
        return x.max(dim=-1)
    group_max = x[:, : n_full * group].unflatten(-1, (n_full, group)).amax(-1)
    if V % group:  # ragged tail: one more, shorter group
        group_max = torch.cat([group_max, x[:, n_full * group :].amax(-1, keepdim=True)], 1)
    m, g = group_max.max(dim=-1)
    cols = g[:, None] * group + torch.arange(group, device=x.device)
    inside = cols < V
    vals = x.gather(1, torch.where(inside, cols, 0))
    hit = (vals == m[:, None]) & inside  # all True on an all -inf row: index 0, masked later
    return m, g * group + hit.to(torch.int8).argmax(dim=-1)


def _exp_moments(z: torch.Tensor, m: torch.Tensor, y2: torch.Tensor | None = None,
                 e: torch.Tensor | None = None):
    """``(Σ e^(z-m), Σ e^(z-m)·(z-m))`` per row of ``z`` ``[c, V]`` float32, shift ``m`` ``[c]``.

    Works in base 2: y2 = (z - m)·log2(e), then exp2, which is ~3x cheaper than exp on CPU;
    Σ e·y = ln(2)·Σ e·y2. (Subtract first: z·log2(e) - m·log2(e) would cancel catastrophically
    for large logits.) ``y2`` and ``e`` are optional ``[c, V]`` float32 output buffers.
    """
    y2 = torch.sub(z, m[:, None], out=y2).mul_(_LOG2E)
    e = torch.exp2(y2, out=e)
    s = e.sum(-1)
    # -inf logits: e = 0 and y2 = -inf, and 0 * -inf is NaN; any finite y2 gives 0 instead.
    y2.clamp_(min=torch.finfo(torch.float32).min)
    # Σ e·y2 in place (no third temporary). torch.sum accumulates pairwise; a BLAS dot
    # (bmm) is faster but ~1e-5 relative off at V = 32k.
    t = e.mul_(y2).sum(-1) * _LN2
    return s, t


def _target_logp(x32, lse, targets, ignore_index, V):
    """``z[target] - lse`` where the target is a real token, NaN elsewhere."""
    if targets is None:
        return torch.full_like(lse, _NAN)
    has_target = (targets != ignore_index) & (targets >= 0) & (targets < V)
    z_t = x32.gather(1, torch.where(has_target, targets, 0)[:, None]).view(-1)
    return torch.where(has_target, z_t - lse, torch.full_like(lse, _NAN))


def run_chunks(n_chunks: int, body, make_work, device: torch.device) -> None:
    """Call ``body(i, work)`` for every chunk ``i``, each worker with its own workspace.

    On CPU the chunks are spread over ``torch.get_num_threads()`` Python threads, each
    running single-threaded torch ops (they release the GIL), instead of every op being
    split across threads. A chunk is ~10 ops, and intra-op threading ends each op on a
    thread barrier: on cores shared with other processes one descheduled thread stalls
    every barrier, which was measured to make the chunked path 10-40x slower. Workers
    take chunks from a shared counter, so a stalled worker delays only its own chunk.
    ``torch.set_num_threads`` is process-wide: it is set to 1 for the duration and
    restored.
    """
    workers = min(torch.get_num_threads(), n_chunks) if device.type == "cpu" else 1
    if workers <= 1:
        work = make_work()
        for i in range(n_chunks):
            body(i, work)
        return
    counter = itertools.count()  # next() on it is atomic under the GIL
    # Grad and inference mode are thread-local: a worker starts in the defaults, and writing
    # into outputs made under torch.inference_mode() from outside it is an error.
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def worker(_):
        work = make_work()
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            while (i := next(counter)) < n_chunks:
                body(i, work)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(worker, range(workers)))  # list(): re-raise a worker's exception
    finally:
        torch.set_num_threads(threads)


def token_stats_torch(
    logits: torch.Tensor,
    targets: torch.Tensor | None,
    ignore_index: int = -100,
    skip_ignored: bool = False,
    chunk_elements: int | None = None,
):
    """Row statistics of ``logits`` in bounded memory.

    Extra memory: per worker thread, 2 float32 ``[chunk, V]`` buffers (3 for 16-bit input),
    chunk = ``chunk_elements // V`` rows; never an ``[N, V]`` copy.

    Args:
        logits: ``[N, V]`` or ``[B, T, V]``, float16/bfloat16/float32, any strides. Rows are
            the flattened leading dimensions (row ``b * T + t``); nothing is copied except
            one chunk at a time.
        targets: ``[R]`` int64 with R = number of rows, or None.
        skip_ignored: compute only rows whose target is not ``ignore_index`` (the others
            come out NaN / -1). Used by ``response_stats``, where prompt rows are most rows.

    Returns:
        ``(lse, logp, entropy, argmax)``, each ``[R]``: float32 x3, int64.
    """
    V = logits.shape[-1]
    if logits.dim() == 3 and not skip_ignored:
        try:  # [B, T, V] whose rows are evenly strided: a 2-D view, sliced without copies
            logits = logits.view(-1, V)
        except RuntimeError:
            pass
    rows_2d = logits.dim() == 2
    R = logits.shape[0] if rows_2d else logits.shape[0] * logits.shape[1]
    device = logits.device
    outs = (
        torch.full((R,), _NAN, dtype=torch.float32, device=device),  # lse
        torch.full((R,), _NAN, dtype=torch.float32, device=device),  # logp
        torch.full((R,), _NAN, dtype=torch.float32, device=device),  # entropy
        torch.full((R,), -1, dtype=torch.int64, device=device),  # argmax
    )
    if chunk_elements is None:
        chunk_elements = CHUNK_ELEMENTS if device.type == "cpu" else CUDA_CHUNK_ELEMENTS
    step = max(1, min(chunk_elements // V, R))
    n_buffers = 2 if logits.dtype == torch.float32 else 3

    def make_work():
        return torch.empty(n_buffers, step, V, dtype=torch.float32, device=device)

    if rows_2d and not skip_ignored:
        # Contiguous row ranges: every chunk is a view, never a copy (fp32 input).
        def body(i, work):
            lo, hi = i * step, min((i + 1) * step, R)
            tgt = None if targets is None else targets[lo:hi]
            for dst, val in zip(outs, _chunk_stats(logits[lo:hi], tgt, ignore_index, work)):
                dst[lo:hi] = val

        run_chunks(triton_cdiv(R, step), body, make_work, device)
        return outs

    # General case: gather the chunk's rows by index (copies one chunk only).
    if skip_ignored and targets is not None:
        rows = torch.nonzero(targets != ignore_index).view(-1)
    else:
        rows = torch.arange(R, device=device)
    T = 1 if rows_2d else logits.shape[1]

    def body(i, work):
        idx = rows[i * step : (i + 1) * step]
        x = logits[idx] if rows_2d else logits[idx // T, idx % T]
        tgt = None if targets is None else targets[idx]
        for dst, val in zip(outs, _chunk_stats(x, tgt, ignore_index, work)):
            dst[idx] = val

    run_chunks(triton_cdiv(rows.numel(), step), body, make_work, device)
    return outs


def triton_cdiv(a: int, b: int) -> int:
    """Ceiling division (named after triton.cdiv; triton is not imported here)."""
    return -(-a // b)


# --------------------------------------------------------------------------------------
# Online merge of partial states: used when the vocabulary arrives in tiles (the fused
# linear variant here, and the split-V partials of the Triton linear kernel).
# A partial state over a set of columns is (m, s, t, arg, z_t):
#   m = max z, s = Σ e^(z-m), t = Σ e^(z-m)·(z-m), arg = first index of m,
#   z_t = the target's logit if the target is among the columns, else 0.
# --------------------------------------------------------------------------------------


def tile_state(z: torch.Tensor, col0: int, targets: torch.Tensor | None):
    """Partial state of a ``[n, v]`` float32 tile whose first column is ``col0``."""
    m, arg = row_max_argmax(z)
    m_safe = torch.where(m > _NEG_INF, m, torch.zeros_like(m))
    s, t = _exp_moments(z, m_safe)
    if targets is None:
        z_t = torch.zeros_like(m)
    else:
        local = targets - col0
        inside = (local >= 0) & (local < z.shape[1])
        z_t = z.gather(1, torch.where(inside, local, 0)[:, None]).view(-1)
        z_t = torch.where(inside, z_t, torch.zeros_like(z_t))
    return m, s, t, arg + col0, z_t


def merge_states(a, b):
    """Merge two partial states over disjoint columns; ``a``'s columns come first.

    Rescaling to the common max M: s' = s·e^(m-M) and t' = e^(m-M)·(t + (m-M)·s).
    A state with m = -inf (no mass yet) contributes nothing.
    """
    m_a, s_a, t_a, arg_a, zt_a = a
    m_b, s_b, t_b, arg_b, zt_b = b
    m = torch.maximum(m_a, m_b)
    m_safe = torch.where(m > _NEG_INF, m, torch.zeros_like(m))
    zero = torch.zeros_like(m)
    d_a = torch.where(m_a > _NEG_INF, m_a - m_safe, zero)
    d_b = torch.where(m_b > _NEG_INF, m_b - m_safe, zero)
    alpha_a, alpha_b = torch.exp(m_a - m_safe), torch.exp(m_b - m_safe)
    s = alpha_a * s_a + alpha_b * s_b
    t = alpha_a * (t_a + d_a * s_a) + alpha_b * (t_b + d_b * s_b)
    arg = torch.where(m_b > m_a, arg_b, arg_a)  # ties keep the earlier column
    return m, s, t, arg, zt_a + zt_b


def finish_state(state, targets: torch.Tensor | None, ignore_index: int, V: int):
    """Turn a complete state into ``(lse, logp, entropy, argmax)``."""
    m, s, t, arg, z_t = state
    has_dist = m > _NEG_INF
    nan = torch.full_like(m, _NAN)
    log_s = torch.log(s)
    lse = torch.where(has_dist, m + log_s, nan)
    entropy = torch.where(has_dist, log_s - t / s, nan)
    argmax = torch.where(has_dist, arg, torch.full_like(arg, -1))
    if targets is None:
        logp = nan
    else:
        has_target = (targets != ignore_index) & (targets >= 0) & (targets < V)
        logp = torch.where(has_target, z_t - lse, nan)
    return lse, logp, entropy, argmax


def linear_token_stats_torch(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor | None,
    ignore_index: int = -100,
    chunk_elements: int | None = None,
    block_v: int = 1024,
):
    """Statistics of ``hidden @ weight.T`` without materialising the ``[N, V]`` logits.

    Each row chunk (``chunk_elements // block_v`` rows, in parallel on CPU) walks the
    vocabulary in tiles of ``block_v`` columns: one float32 ``[rows, block_v]`` logit tile
    at a time, folded into per-row online states (:func:`tile_state`, :func:`merge_states`),
    as the Triton kernel does per program. Logits are computed in float32 (16-bit inputs
    are upcast per tile, not rounded back as ``lm_head`` would).

    Args:
        hidden: ``[N, H]`` float16/bfloat16/float32.
        weight: ``[V, H]``, same dtype (the lm_head weight, as stored by nn.Linear).
        targets: ``[N]`` int64 or None.

    Returns:
        ``(lse, logp, entropy, argmax)``, each ``[N]``.
    """
    N, V = hidden.shape[0], weight.shape[0]
    dev = hidden.device
    outs = (
        torch.empty(N, device=dev),
        torch.empty(N, device=dev),
        torch.empty(N, device=dev),
        torch.empty(N, dtype=torch.int64, device=dev),
    )
    if chunk_elements is None:
        chunk_elements = CHUNK_ELEMENTS if dev.type == "cpu" else CUDA_CHUNK_ELEMENTS
    rows = max(1, min(chunk_elements // block_v, N))

    def body(i, _work):
        lo, hi = i * rows, min((i + 1) * rows, N)
        h = hidden[lo:hi].float()
        tgt = None if targets is None else targets[lo:hi]
        state = None
        for v0 in range(0, V, block_v):
            z = h @ weight[v0 : v0 + block_v].float().T
            tile = tile_state(z, v0, tgt)
            state = tile if state is None else merge_states(state, tile)
        for dst, val in zip(outs, finish_state(state, tgt, ignore_index, V)):
            dst[lo:hi] = val

    run_chunks(triton_cdiv(N, rows), body, lambda: None, dev)
    return outs


def merge_split_states(m, s, t, arg, z_t):
    """Merge S partial states per row at once; inputs ``[S, N]``, split s covering columns
    before split s+1. Vectorised over S (a handful of launches, not S merges)."""
    M = m.max(dim=0).values
    M_safe = torch.where(M > _NEG_INF, M, torch.zeros_like(M))
    alpha = torch.exp(m - M_safe)  # 0 for splits with no mass (m = -inf)
    d = torch.where(m > _NEG_INF, m - M_safe, torch.zeros_like(m))
    s_all = (alpha * s).sum(0)
    t_all = (alpha * (t + d * s)).sum(0)
    first = (m == M).to(torch.int32).argmax(dim=0)  # earliest split reaching the max
    arg_all = arg.gather(0, first[None, :]).view(-1)
    return M, s_all, t_all, arg_all, z_t.sum(0)
