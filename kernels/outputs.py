"""Result types shared by the PyTorch and the Triton backends.

Every statistic is float32 whatever the logits' dtype, because every backend accumulates
in float32. Conventions for rows that have no answer (one place, so both backends agree):

* A row whose logits are all ``-inf`` (a fully masked vocabulary) defines no distribution:
  ``lse``, ``logp`` and ``entropy`` are NaN, ``argmax`` is -1 and ``valid`` is False.
  Rows containing NaN or ``+inf`` also come out with NaN ``lse`` and ``valid`` False.
  They never yield a silent finite number.
* ``logp`` is NaN where there is no target: ``targets`` is None, the target equals
  ``ignore_index``, or it lies outside ``[0, V)``. NaN instead of 0 makes an accidental
  sum over ignored rows come out NaN instead of silently too high.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class TokenStats(NamedTuple):
    """Per-row statistics of the next-token distribution ``softmax(z)`` for logits ``z``.

    All fields have shape ``[N]`` (the leading dimensions of the input, flattened).

    Attributes:
        lse: float32, ``log Σ_v exp(z_v)``.
        logp: float32, ``log p(target) = z_target - lse``; NaN where the row has no target.
        entropy: float32, Shannon entropy ``-Σ_v p_v log p_v`` in nats.
        argmax: int64, index of the first largest logit (greedy token); -1 if not ``valid``.
        valid: bool, False where the row defines no distribution (all ``-inf``, or NaN/+inf
            present). Those rows have NaN ``lse``, ``logp`` and ``entropy``.
    """

    lse: torch.Tensor
    logp: torch.Tensor
    entropy: torch.Tensor
    argmax: torch.Tensor
    valid: torch.Tensor


class ResponseStats(NamedTuple):
    """Per-sequence statistics over the response tokens (labels != ``ignore_index``).

    All fields have shape ``[B]``.

    Attributes:
        nll: float32, mean negative log-likelihood of the response tokens,
            ``-(1/|y|) Σ_j log p(y_j | q, y_<j)``: the paper's *response entropy*
            (RobustFT Eq. for entropy-based selection). NaN when ``n_tokens == 0``.
        entropy: float32, mean Shannon entropy of the next-token distributions at the
            positions that predict response tokens. NaN when ``n_tokens == 0``.
        n_tokens: int64, number of response tokens scored.
        logp_sum: float32, ``Σ_j log p(y_j | ...)``, the sequence log-likelihood used for
            option-text scoring. 0 when ``n_tokens == 0``.
    """

    nll: torch.Tensor
    entropy: torch.Tensor
    n_tokens: torch.Tensor
    logp_sum: torch.Tensor


class OptionScores(NamedTuple):
    """Scores of K candidate answers for each of B questions.

    Attributes:
        logprobs: float32 ``[B, K]``, the log-probability the model gives each option
            (summed over the option's tokens, or their mean with ``length_normalized``);
            ``-inf`` for an option slot with no tokens (padding for questions with fewer
            options).
        probs: float32 ``[B, K]``, ``softmax(logprobs)`` over the K options: the model's
            choice distribution restricted to the candidates. Rows sum to 1.
        n_tokens: int64 ``[B, K]``, tokens scored per option (1 in letter mode).
        entropy: float32 ``[B, K]``, mean Shannon entropy (nats) of the next-token
            distributions that predict the option's tokens. In letter mode every option is
            read from the same distribution, so a row repeats one value. NaN for an absent
            option. It comes from the same pass over the logits as the log-probabilities.
    """

    logprobs: torch.Tensor
    probs: torch.Tensor
    n_tokens: torch.Tensor
    entropy: torch.Tensor
