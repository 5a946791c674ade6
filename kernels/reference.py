"""Float64 reference statistics (the tests' oracle) and the eager baseline.

Neither is memory-efficient: both materialise ``[N, V]`` tensors on purpose.
"""

from __future__ import annotations

import torch


def reference_token_stats(logits: torch.Tensor, targets: torch.Tensor | None = None,
                          ignore_index: int = -100):
    """Exact statistics in float64, with the conventions of :class:`TokenStats`.

    Args:
        logits: ``[N, V]`` any float dtype (cast to float64 from the same values).
        targets: ``[N]`` int or None.

    Returns:
        ``(lse, logp, entropy, argmax)``: ``[N]`` float64 x3, int64.
    """
    x = logits.double()
    V = x.shape[-1]
    lse = torch.logsumexp(x, dim=-1)  # -inf for all -inf rows
    has_dist = lse > float("-inf")
    p = torch.exp(x - torch.where(has_dist, lse, 0)[:, None])
    entropy = torch.special.entr(p).sum(-1)  # entr(0) = 0: masked tokens contribute nothing
    nan = torch.full_like(lse, float("nan"))
    argmax = torch.where(has_dist, x.argmax(-1), -1)
    if targets is None:
        logp = nan.clone()
    else:
        t = targets.long()
        ok = (t != ignore_index) & (t >= 0) & (t < V)
        logp = torch.where(ok, x.gather(1, torch.where(ok, t, 0)[:, None])[:, 0] - lse, nan)
    return (torch.where(has_dist, lse, nan), torch.where(has_dist, logp, nan),
            torch.where(has_dist, entropy, nan), argmax)


def eager_token_stats(logits: torch.Tensor, targets: torch.Tensor):
    """What one writes without a kernel: the benchmark's eager (and torch.compile) baseline.

    Traffic for ``[N, V]`` logits of b bytes each (float32 temporaries of 4 bytes):
    upcast ``logits.float()`` reads bN·V, writes 4N·V; log_softmax reads 4N·V twice (max,
    sum) and once more to write 4N·V; ``exp`` reads 4N·V, writes 4N·V; the product reads
    8N·V, writes 4N·V; the sum reads 4N·V; argmax reads bN·V. About 17 passes of a [N, V]
    float32 array against the kernel's single read of bN·V bytes. (It also returns NaN
    entropy for rows with -inf logits: 0 · -inf.)
    """
    x = logits.float()
    logp_all = torch.log_softmax(x, dim=-1)
    lse = torch.logsumexp(x, dim=-1)
    logp = logp_all.gather(1, targets[:, None]).squeeze(1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return lse, logp, entropy, logits.argmax(-1)
