"""Logit reductions for RobustFT, imported as ``robustft.kernels``.

Almost all compute outside training is "run the model, then reduce the logits": option
scoring, response NLL (the paper's response entropy), token entropy. These functions read
each logit once and never build an ``[N, V]`` float32 copy:

* :func:`token_stats` -- per row: logsumexp, log p(target), Shannon entropy, argmax.
* :func:`response_stats` -- per sequence: mean response NLL, mean token entropy, counts.
* :func:`option_logprobs` -- [B, K] option log-probabilities (answer letters or texts).
* :func:`linear_token_stats` -- the same as token_stats from hidden states and the lm_head
  weight, without materialising the logits.

Triton kernels run on CUDA; a chunked PyTorch path is the CPU default (see
:mod:`robustft.kernels.dispatch`). Triton is optional: importing this package never
imports it.
"""

from .dispatch import (
    BACKEND_ENV,
    linear_token_stats,
    option_logprobs,
    resolve_backend,
    response_stats,
    shift_labels,
    token_stats,
    triton_available,
)
from .outputs import OptionScores, ResponseStats, TokenStats

__all__ = [
    "BACKEND_ENV",
    "OptionScores",
    "ResponseStats",
    "TokenStats",
    "linear_token_stats",
    "option_logprobs",
    "resolve_backend",
    "response_stats",
    "shift_labels",
    "token_stats",
    "triton_available",
]
