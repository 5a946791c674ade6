"""Public API of ``robustft.kernels`` and the one place that chooses a backend.

Backends:

* ``"triton"``: the kernels in :mod:`robustft.kernels.triton_ops`. Runs on CUDA tensors,
  and on CPU tensors only under ``TRITON_INTERPRET=1`` (set before triton is imported;
  slow, meant for tests).
* ``"torch"``: the chunked PyTorch path in :mod:`robustft.kernels.torch_ops`; bounded
  memory on any device; the CPU default.

``backend=None`` (or ``"auto"``) reads ``ROBUSTFT_KERNEL_BACKEND`` from the environment and
otherwise picks triton for CUDA tensors when triton imports, torch for everything else.
Triton is imported lazily: this module works without it installed.

Both backends return the same results (float32 accumulation, tolerances in
``tests/test_kernels.py``). Nothing here builds an autograd graph: these are inference-time
reductions.
"""

from __future__ import annotations

import os

import torch

from . import torch_ops
from .outputs import OptionScores, ResponseStats, TokenStats

BACKEND_ENV = "ROBUSTFT_KERNEL_BACKEND"
_BACKENDS = ("auto", "torch", "triton")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _triton_ops():
    """Import the Triton kernels module, or raise a clear error when triton is missing."""
    try:
        from . import triton_ops
    except ImportError as err:  # triton is an optional dependency (the `gpu` extra)
        raise RuntimeError(
            "backend='triton' needs the `triton` package (pip install 'robustft[gpu]'); "
            "use backend='torch' or leave backend=None to fall back automatically"
        ) from err
    return triton_ops


def triton_available() -> bool:
    """True when triton imports (it need not be able to run: that needs CUDA or the
    interpreter)."""
    try:
        _triton_ops()
    except RuntimeError:
        return False
    return True


def triton_interpreter_enabled() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """Return ``"torch"`` or ``"triton"`` for tensors on ``device``.

    Order: the ``backend`` argument, then ``$ROBUSTFT_KERNEL_BACKEND``, then auto.
    Forcing ``"triton"`` where it cannot run raises ``RuntimeError`` instead of silently
    falling back.
    """
    choice = (backend or os.environ.get(BACKEND_ENV) or "auto").lower()
    if choice not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {choice!r}")
    if choice == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if choice == "triton":
        _triton_ops()
        if device.type != "cuda" and not triton_interpreter_enabled():
            raise RuntimeError(
                f"backend='triton' needs CUDA tensors (got {device.type}); on CPU set "
                "TRITON_INTERPRET=1 before triton is imported (slow, for testing)"
            )
    return choice


def _check_logits(logits: torch.Tensor, dims: tuple[int, ...]) -> None:
    if logits.dim() not in dims:
        raise ValueError(f"expected logits with {dims} dimensions, got shape {tuple(logits.shape)}")
    if logits.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"logits must be float16, bfloat16 or float32, got {logits.dtype}")
    if logits.shape[-1] == 0:
        raise ValueError("the vocabulary dimension V must be at least 1")


def _flat_targets(targets, lead_shape, device) -> torch.Tensor | None:
    if targets is None:
        return None
    if tuple(targets.shape) != tuple(lead_shape):
        raise ValueError(f"targets shape {tuple(targets.shape)} != logits rows {tuple(lead_shape)}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must be an integer tensor, got {targets.dtype}")
    return targets.to(device=device, dtype=torch.int64).reshape(-1).contiguous()


def _pack(lse, logp, entropy, argmax, shape) -> TokenStats:
    lse = lse.view(shape)
    return TokenStats(
        lse=lse,
        logp=logp.view(shape),
        entropy=entropy.view(shape),
        argmax=argmax.view(shape),
        valid=~torch.isnan(lse),
    )


def _empty_stats(shape, device) -> TokenStats:
    f = torch.empty(shape, dtype=torch.float32, device=device)
    return TokenStats(f, f.clone(), f.clone(), torch.empty(shape, dtype=torch.int64, device=device),
                      torch.empty(shape, dtype=torch.bool, device=device))


def _row_stats(logits, targets, ignore_index, backend, skip_ignored=False):
    """Dispatch for [N, V] or [B, T, V] logits with flat int64 targets."""
    if resolve_backend(backend, logits.device) == "triton":
        return _triton_ops().token_stats_triton(logits, targets, ignore_index, skip_ignored=skip_ignored)
    return torch_ops.token_stats_torch(logits, targets, ignore_index, skip_ignored=skip_ignored)


@torch.no_grad()
def token_stats(
    logits: torch.Tensor,
    targets: torch.Tensor | None = None,
    ignore_index: int = -100,
    *,
    backend: str | None = None,
) -> TokenStats:
    """Per-row logsumexp, target log-probability, Shannon entropy and argmax of logits.

    One read of the logits: the kernel streams over the vocabulary keeping an online
    float32 state (max, Σ e^(z-max), Σ e^(z-max)·(z-max)) per row.

    Args:
        logits: ``[N, V]`` or ``[B, T, V]``, float16/bfloat16/float32, any strides (a slice
            such as ``model_logits[:, -1, :]`` is read in place, never copied).
        targets: integer tensor of shape ``logits.shape[:-1]``, or None.
        ignore_index: target value meaning "no target" (``logp`` is NaN there).
        backend: None/"auto", "torch" or "triton" (see module docstring).

    Returns:
        :class:`TokenStats` with fields of shape ``logits.shape[:-1]``. All -inf rows give
        NaN statistics, argmax -1 and ``valid=False``.
    """
    _check_logits(logits, (2, 3))
    lead = logits.shape[:-1]
    tgt = _flat_targets(targets, lead, logits.device)
    if logits.numel() == 0:
        return _empty_stats(lead, logits.device)
    return _pack(*_row_stats(logits, tgt, ignore_index, backend), lead)


def shift_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Causal shift, done once: ``targets[b, t] = labels[b, t + 1]``, last position ignored.

    With Hugging Face labels (``labels[b, t]`` is the token at position t, ``ignore_index``
    on prompt and padding) and logits ``[B, T, V]`` where ``logits[b, t]`` predicts the
    token at t+1, row (b, t) of the logits is scored against ``targets[b, t]``. Shifting
    the small integer labels instead of slicing the logits keeps the logits uncopied.
    """
    targets = torch.full_like(labels, ignore_index)
    targets[:, :-1] = labels[:, 1:]
    return targets


@torch.no_grad()
def response_stats(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    *,
    backend: str | None = None,
) -> ResponseStats:
    """Per-sequence response entropy (the paper's mean token NLL) and mean token entropy.

    Args:
        logits: ``[B, T, V]`` float16/bfloat16/float32, any strides; ``logits[b, t]``
            predicts the token at position t+1 (a causal LM's output).
        labels: ``[B, T]`` integer, Hugging Face convention: ``labels[b, t]`` is the token at
            position t, ``ignore_index`` on prompt and padding. The shift is done here
            (:func:`shift_labels`); do not pre-shift.
        ignore_index: label value excluded from the statistics.

    Returns:
        :class:`ResponseStats`, fields ``[B]``. A sequence with no response tokens has
        ``n_tokens = 0``, ``logp_sum = 0`` and NaN ``response_entropy`` / ``entropy``.

    Only rows that predict a response token are read (prompt rows are skipped), so scoring
    a short answer after a long prompt costs the answer's length, not the prompt's.
    """
    _check_logits(logits, (3,))
    B, T, _ = logits.shape
    if tuple(labels.shape) != (B, T):
        raise ValueError(f"labels shape {tuple(labels.shape)} != logits [B, T] {(B, T)}")
    targets = shift_labels(labels.to(logits.device), ignore_index)
    mask = targets != ignore_index
    n_tokens = mask.sum(1)
    if logits.numel() == 0:
        nan = torch.full((B,), float("nan"), device=logits.device)
        return ResponseStats(nan, nan.clone(), n_tokens, torch.zeros(B, device=logits.device))
    flat = targets.to(torch.int64).reshape(-1).contiguous()
    _, logp, entropy, _ = _row_stats(logits, flat, ignore_index, backend, skip_ignored=True)
    return reduce_response(logp.view(B, T), entropy.view(B, T), mask)


def reduce_response(logp: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor) -> ResponseStats:
    """Segment reduction of per-position statistics ``[B, T]`` over ``mask`` ``[B, T]``.

    Tiny (B·T floats), so plain torch on either backend.
    """
    zero = torch.zeros_like(logp)
    n_tokens = mask.sum(1)
    logp_sum = torch.where(mask, logp, zero).sum(1)
    entropy_sum = torch.where(mask, entropy, zero).sum(1)
    n = n_tokens.to(torch.float32)  # 0/0 -> NaN for sequences with no response tokens
    return ResponseStats(response_entropy=-logp_sum / n, entropy=entropy_sum / n, n_tokens=n_tokens,
                         logp_sum=logp_sum)


@torch.no_grad()
def option_logprobs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    num_options: int | None = None,
    ignore_index: int = -100,
    *,
    backend: str | None = None,
) -> OptionScores:
    """Log-probabilities of K candidate answers for each of B questions, in one call.

    Two modes, chosen by ``logits.dim()``:

    * **Letter mode** (single-token answers such as "A".."D"): ``logits`` is ``[B, V]``,
      the logits at the last prompt position; ``targets`` is ``[K]`` (the same letter token
      ids for every question) or ``[B, K]`` int. ``logprobs[b, k] = log p(targets[b, k])``
      under the full next-token distribution. A target equal to ``ignore_index`` marks an
      absent option (``-inf``).
    * **Text mode** (multi-token options): ``logits`` is ``[B*K, T, V]`` for B·K sequences
      "prompt + option k" (question-major: row ``b*K + k``), ``targets`` the matching
      ``[B*K, T]`` labels in Hugging Face convention (option tokens; ``ignore_index`` on
      prompt and padding, see :func:`response_stats`), ``num_options=K``.
      ``logprobs[b, k] = Σ_j log p(y_j | prompt, y_<j)`` over option k's tokens. An option
      with no tokens gets ``-inf``.

    Returns:
        :class:`OptionScores`: ``logprobs`` and the mean next-token ``entropy`` ``[B, K]``
        float32, ``n_tokens`` ``[B, K]`` int64 (its ``probs``, ``response_entropy`` and
        ``best`` are derived from them).
    """
    if logits.dim() == 2:
        B = logits.shape[0]
        ids = targets.to(device=logits.device, dtype=torch.int64)
        ids = ids.expand(B, -1) if ids.dim() == 1 else ids
        if ids.dim() != 2 or ids.shape[0] != B:
            raise ValueError(f"letter mode needs targets [K] or [B, K], got {tuple(targets.shape)}")
        stats = token_stats(logits, backend=backend)  # one pass over [B, V] for lse
        V = logits.shape[-1]
        present = (ids != ignore_index) & (ids >= 0) & (ids < V)
        z = logits.gather(1, torch.where(present, ids, 0)).float()
        lp = torch.where(present, z - stats.lse[:, None], torch.full_like(z, float("-inf")))
        n_tokens = present.to(torch.int64)
        ent = torch.where(present, stats.entropy[:, None], torch.full_like(z, float("nan")))
    elif logits.dim() == 3:
        if num_options is None or num_options < 1 or logits.shape[0] % num_options:
            raise ValueError("text mode needs num_options=K with logits.shape[0] == B*K")
        K = num_options
        rs = response_stats(logits, targets, ignore_index, backend=backend)
        score = torch.where(rs.n_tokens > 0, rs.logp_sum, torch.full_like(rs.logp_sum, float("-inf")))
        lp, n_tokens, ent = score.view(-1, K), rs.n_tokens.view(-1, K), rs.entropy.view(-1, K)
    else:
        raise ValueError(f"logits must be [B, V] (letter mode) or [B*K, T, V] (text mode), "
                         f"got shape {tuple(logits.shape)}")
    return OptionScores(logprobs=lp, n_tokens=n_tokens, entropy=ent)


@torch.no_grad()
def linear_token_stats(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor | None = None,
    ignore_index: int = -100,
    *,
    backend: str | None = None,
) -> TokenStats:
    """:func:`token_stats` of ``hidden @ weight.T`` without materialising the logits.

    Tiles over the vocabulary, computes each ``[rows, tile]`` logit block with a matmul
    (tensor cores on the GPU, float32 accumulation) and folds it into the online state
    straight away, so no ``[N, V]`` tensor ever exists. Logits are kept in float32
    (not rounded to the input dtype as ``lm_head`` would).

    Args:
        hidden: ``[N, H]`` (or ``[..., H]``) last hidden states, float16/bfloat16/float32.
        weight: ``[V, H]`` lm_head weight (``model.lm_head.weight``), same dtype.
        targets: integer tensor of shape ``hidden.shape[:-1]``, or None.

    Returns:
        :class:`TokenStats` of shape ``hidden.shape[:-1]``.
    """
    if hidden.dtype not in _FLOAT_DTYPES or weight.dtype != hidden.dtype:
        raise TypeError(f"hidden and weight must share a float16/bfloat16/float32 dtype, "
                        f"got {hidden.dtype} and {weight.dtype}")
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"need hidden [..., H] and weight [V, H], got {tuple(hidden.shape)} "
                         f"and {tuple(weight.shape)}")
    if weight.shape[0] == 0:
        raise ValueError("the vocabulary dimension V must be at least 1")
    lead = hidden.shape[:-1]
    h2 = hidden.reshape(-1, hidden.shape[-1])
    tgt = _flat_targets(targets, lead, hidden.device)
    if h2.shape[0] == 0:
        return _empty_stats(lead, hidden.device)
    if resolve_backend(backend, hidden.device) == "triton":
        out = _triton_ops().linear_token_stats_triton(h2, weight, tgt, ignore_index)
    else:
        out = torch_ops.linear_token_stats_torch(h2, weight, tgt, ignore_index)
    return _pack(*out, lead)
