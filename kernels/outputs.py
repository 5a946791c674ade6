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

import numpy as np
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
        response_entropy: float32, the paper's *response entropy* (RobustFT §3.4, Eq. 7):
            the mean negative log-likelihood of the response tokens,
            ``-(1/|y|) Σ_j log p(y_j | q, y_<j)``. NaN when ``n_tokens == 0``.
        entropy: float32, mean Shannon entropy of the next-token distributions at the
            positions that predict response tokens. NaN when ``n_tokens == 0``.
        n_tokens: int64, number of response tokens scored.
        logp_sum: float32, ``Σ_j log p(y_j | ...)``, the sequence log-likelihood used for
            option-text scoring. 0 when ``n_tokens == 0``.
    """

    response_entropy: torch.Tensor
    entropy: torch.Tensor
    n_tokens: torch.Tensor
    logp_sum: torch.Tensor


class OptionScores(NamedTuple):
    """Scores of K candidate answers for each of B questions: the one type for option scores.

    The kernels (`option_logprobs`) return it with float32 torch tensors; the library's
    passes keep it with float64 numpy arrays (:meth:`numpy`), so the same fields and
    derived values serve both, and no caller recomputes them.

    Attributes:
        logprobs: ``[B, K]``, the log-probability the model gives each option, summed over
            the option's tokens; ``-inf`` for an option slot with no tokens (padding for
            questions with fewer options).
        n_tokens: int64 ``[B, K]``, tokens scored per option (1 in letter mode, 0 where
            absent).
        entropy: ``[B, K]``, mean Shannon entropy (nats) of the next-token distributions
            that predict the option's tokens. In letter mode every option is read from the
            same distribution, so a row repeats one value. NaN for an absent option. It
            comes from the same pass over the logits as the log-probabilities.
    """

    logprobs: torch.Tensor | np.ndarray
    n_tokens: torch.Tensor | np.ndarray
    entropy: torch.Tensor | np.ndarray

    def numpy(self) -> "OptionScores":
        """The same scores as numpy arrays (float64 log-probs and entropies)."""
        lp, nt, ent = (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
                       for x in self)
        return OptionScores(lp.astype(np.float64), nt.astype(np.int64), ent.astype(np.float64))

    @property
    def probs(self) -> np.ndarray:
        """``[B, K]`` float64 numpy: ``softmax(logprobs)`` over each row's options (the
        model's choice distribution restricted to the candidates; absent options get 0).
        A row with no option at all is NaN."""
        lp = self.numpy().logprobs
        out = np.full(lp.shape, np.nan)
        ok = np.isfinite(lp).any(axis=1) if lp.size else np.zeros(len(lp), dtype=bool)
        if ok.any():
            z = lp[ok] - lp[ok].max(axis=1, keepdims=True)
            e = np.exp(z)
            out[ok] = e / e.sum(axis=1, keepdims=True)
        return out

    @property
    def response_entropy(self) -> np.ndarray:
        """``[B, K]`` float64 numpy: each option's response entropy, the mean token NLL
        ``-logprobs / n_tokens`` (the paper's H of that answer); NaN where absent."""
        s = self.numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(s.n_tokens > 0, -s.logprobs / np.maximum(s.n_tokens, 1), np.nan)

    def best(self, length_normalize: bool = False) -> np.ndarray:
        """``[B]`` int64 numpy: the index of the most likely option per row (the first on a
        tie), by summed log-prob or, with `length_normalize`, by mean log-prob per token
        (lm-eval's ``acc_norm``-like choice for options of very different lengths); -1 for a
        row with no option."""
        score = -self.response_entropy if length_normalize else self.numpy().logprobs
        score = np.where(np.isnan(score), -np.inf, score)
        if score.shape[1] == 0:
            return np.full(len(score), -1, dtype=np.int64)
        return np.where(np.isfinite(score).any(axis=1), score.argmax(axis=1), -1).astype(np.int64)
