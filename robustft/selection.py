"""Entropy-based selection (RobustFT, section 3.4): keep the relabels the model is surest of.

The paper scores a relabeled sample by the *response entropy* of the context-enhanced answer,
``H(y | q) = -(1/len(y)) Σ_j log p(y_j | q, y_<j)``: the mean negative log-probability per token of the response (the official code computes
exactly this from the generation's token log-probs) — strictly a mean NLL, not the Shannon
entropy of a distribution. It keeps the β fraction (paper: 50 %) with the lowest H.

`response_entropy` computes, from an expert pass's option scores, one of:

- ``"nll"`` (the paper's H): the mean token NLL of the new label's answer tokens under the
  CER prompt. With option scoring every option is scored, so this is H of the *final*
  label even where the review agent changed CER's answer (a label CER did not favour gets a
  high H);
- ``"shannon"``: the mean Shannon entropy (nats) of the next-token distributions over the
  same tokens (the true per-token entropy; same kernel pass);
- ``"options"``: the Shannon entropy of the option distribution (the model's uncertainty
  over the choices, renormalised over the options).

Generated answers (short-answer tasks) have only the response's own statistics: "nll" and
"shannon" are those of the generated response; "options" is not defined for them (nan).

`supporting_entropy` is this project's variant (not the paper's): the entropy of the new label
under the expert(s) that gave it — the CER answer's H when CER gave it, the least sure token
of the step-by-step response when the reasoning expert gave it (a mean NLL over a templated
reasoning text is dominated by the template's sure tokens; with several sampled responses,
-log of the share that voted for it), the lower of the two when both did — so a relabel that
came from the reasoning expert is ranked by the reasoning's confidence instead of CER's.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .experts import ExpertOutputs
from .metrics import answers_match
from .sample import MC, letter_index

MEASURES = ("nll", "shannon", "options")


def response_entropy(outputs: ExpertOutputs, labels: Sequence[str | None], measure: str = "nll") -> np.ndarray:
    """[m] float64 entropy of each label under an expert pass (nan where undefined).

    Args:
        outputs: the pass (e.g. CER) over m samples.
        labels: the m labels to measure (option letters for scored rows; ignored for
            generated rows, which measure their own response). None gives nan.
        measure: "nll", "shannon" or "options" (see the module docstring).
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    if len(labels) != len(outputs.answers):
        raise ValueError(f"{len(labels)} labels for a pass over {len(outputs.answers)} samples")
    probs = outputs.probs if measure == "options" else None
    n_tokens, option_h = outputs.scores.n_tokens, outputs.scores.response_entropy
    out = np.full(len(labels), np.nan)
    for i, y in enumerate(labels):
        scored = n_tokens.shape[1] > 0 and n_tokens[i].any()
        if y is None:
            continue
        if not scored:  # a generated response: its own statistics
            out[i] = {"nll": outputs.response_entropy[i], "shannon": outputs.token_entropy[i]}.get(measure, np.nan)
            continue
        j = letter_index(y)
        if measure == "nll":
            out[i] = option_h[i, j] if j < option_h.shape[1] else np.nan
        elif measure == "shannon":
            out[i] = outputs.scores.entropy[i, j]
        else:
            p = probs[i][np.isfinite(probs[i]) & (probs[i] > 0)]
            out[i] = float(-(p * np.log(p)).sum())
    return out


def select_by_entropy(entropy: Sequence[float], beta: float = 0.5) -> np.ndarray:
    """Keep the β fraction of samples with the lowest entropy.

    Args:
        entropy: [m] entropies (nan: no usable answer, never kept).
        beta: the fraction to keep, in [0, 1] (the paper: 0.5). round(β·m) samples are kept
            (half up), fewer when fewer have a finite entropy; ties go to the earlier sample.

    Returns:
        [m] bool, True for the kept samples.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    h = np.asarray(entropy, dtype=np.float64)
    keep = np.zeros(len(h), dtype=bool)
    n_keep = min(math.floor(beta * len(h) + 0.5), int(np.isfinite(h).sum()))
    order = np.argsort(np.where(np.isfinite(h), h, np.inf), kind="stable")
    keep[order[:n_keep]] = True
    return keep


def supporting_entropy(labels: Sequence[str | None], context: ExpertOutputs, context_entropy: np.ndarray,
                       reasoning_answers: Sequence[str | None], reasoning_uncertainty: np.ndarray,
                       tasks: Sequence[str] | None = None) -> np.ndarray:
    """[m] entropy of each new label under the experts that support it (see the module
    docstring); nan where neither the CER nor the reasoning expert gave that label.

    Args:
        labels: the m new labels.
        context: the CER pass; `context_entropy` [m] its entropy of each label
            (`response_entropy(context, labels)`).
        reasoning_answers, reasoning_uncertainty: the reasoning expert's m answers and [m]
            `ExpertOutputs.answer_uncertainty` of them: the largest token NLL of its one
            response, or -log of the vote's share when it sampled several (self-consistency).
        tasks: m task types (answers compare as `metrics.answers_match` does); default mc.
    """
    out = np.full(len(labels), np.nan)
    tasks = [MC] * len(labels) if tasks is None else tasks
    for i, (y, task) in enumerate(zip(labels, tasks)):
        if y is None:
            continue
        support = []
        if answers_match(context.answers[i], y, task):
            support.append(context_entropy[i])
        if answers_match(reasoning_answers[i], y, task):
            support.append(reasoning_uncertainty[i])
        support = [h for h in support if np.isfinite(h)]
        if support:
            out[i] = min(support)
    return out
