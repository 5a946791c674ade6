"""Noise-aware denoising (ours, not the paper's): tell "the label is wrong" from "the model
does not know".

RobustFT's checker flags every label an expert disagrees with. Where the model never saw a
fact its experts guess, so the checker flags nearly all of those labels — and the relabels
that replace them are guesses too. At a low noise rate such a label is still right most of
the time (1 - ε): throwing it away, or replacing it by a guess, loses to keeping it.

This module weighs each label against the experts *as reliable as they measure on this very
data*, in three steps (all arrays, no model):

1. **Noise rate** (`estimate_noise_rate`): on the samples where the experts are surest (both
   give the same answer, the direct expert with probability ≥ `sure`), the experts are taken
   to be right, so the share of labels that disagree with them estimates the noise rate ε.
2. **Reliability** (`expert_reliability`): the experts' confidence is not their accuracy (a
   small model can be sure of a guess). Under uniform label noise over K options, the rate
   g at which the labels agree with an expert's answer and the expert's accuracy a are tied
   by ``g = a (1 - ε) + (1 - a) ε / (K - 1)``. Fitting g as a monotone function of the
   expert's confidence (scikit-learn's isotonic regression), separately where the two
   experts agree and where they do not, and solving for a gives each answer's calibrated
   probability of being right.
3. **Posterior** (`label_posterior`): the prior over the true answer puts the calibrated
   reliabilities on the experts' answers and spreads the rest over the other options; the
   noise model multiplies it by 1 - ε on the given label and ε / (K - 1) elsewhere. The
   training label is the most probable answer; a sample is *flagged* when its given label
   is more likely wrong than right (posterior < 0.5).

The labels enter only through agreement rates and the noise model: no true label, no noise
rate and no knowledge of which facts the model saw is used.

A known limit: inverting g for a divides by 1 - ε·K/(K-1), which at 70 % noise and four
options amplifies g's sampling error 15-fold. There a guessing expert can come out as
reliable as the label by chance, and the posterior then replaces some labels of unknown facts
by a guess (right 1/K of the time, against 1 - ε = 30 % for the label). Shrinking the
estimate toward chance by its standard error fixed that on synthetic data but, with the
small blocks isotonic regression makes, also discounted the sure experts of known facts,
and lost more on the offline benchmark than it won.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


def _ints(x, n: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.int64)
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
    return a


def estimate_noise_rate(labels: Sequence[int], direct_probs: np.ndarray, reasoning: Sequence[int], *,
                        sure: float = 0.99, n_options: Sequence[int] | None = None) -> float:
    """ε: the share of labels that disagree with the experts where the experts are surest.

    Args:
        labels: [n] int, the given labels as option indices.
        direct_probs: [n, K] float, the direct expert's option probabilities (rows sum to 1
            over each sample's options; absent options 0 or nan).
        reasoning: [n] int, the reasoning expert's answers as option indices (-1: none).
        sure: the direct expert's probability from which a sample counts as sure.
        n_options: [n] int, options per sample (default K). ε is capped at 0.95·(K-1)/K: at
            (K-1)/K a label says nothing and the noise model cannot be inverted.

    Returns ε in [0, 0.95·(K-1)/K]; nan when no sample is sure.
    """
    p = np.nan_to_num(np.asarray(direct_probs, dtype=np.float64))
    n, K = p.shape
    y, r = _ints(labels, n, "labels"), _ints(reasoning, n, "reasoning")
    k = np.full(n, K) if n_options is None else _ints(n_options, n, "n_options")
    d = p.argmax(1)
    surest = (d == r) & (p.max(1) >= sure)
    if not surest.any():
        return float("nan")
    eps = float(np.mean(y[surest] != d[surest]))
    return min(eps, 0.95 * float(np.mean((k[surest] - 1) / k[surest])))


def _accuracy_from_agreement(agree: np.ndarray, eps: float, k: np.ndarray) -> np.ndarray:
    """Invert g = a(1-ε) + (1-a)ε/(K-1) for a, clipped to [0, 1]."""
    off = eps / (k - 1)
    return np.clip((agree - off) / (1.0 - eps - off), 0.0, 1.0)


def _isotonic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The agreement rate as a monotone function of confidence (scikit-learn's isotonic
    regression)."""
    from sklearn.isotonic import IsotonicRegression

    if len(x) == 0:
        return np.zeros(0)
    return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, y).predict(x)


def expert_reliability(labels: Sequence[int], direct_probs: np.ndarray, reasoning: Sequence[int],
                       reasoning_confidence: Sequence[float], noise_rate: float,
                       n_options: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probability that each expert's answer is right: (direct [n], reasoning [n]).

    Where the two experts agree, one answer with the reliability fitted on those samples
    against the direct expert's probability; where they disagree, each answer with its own
    fit (the direct expert's against its probability, the reasoning expert's against
    `reasoning_confidence`, e.g. minus its largest token NLL). The reasoning reliability is 0
    where it agrees with the direct answer (counted there) or gave none. The two are scaled
    down together when they sum above 1.
    """
    p = np.nan_to_num(np.asarray(direct_probs, dtype=np.float64))
    n, K = p.shape
    y, r = _ints(labels, n, "labels"), _ints(reasoning, n, "reasoning")
    k = np.full(n, K) if n_options is None else _ints(n_options, n, "n_options")
    rc = np.asarray(reasoning_confidence, dtype=np.float64)
    rc = np.where(np.isfinite(rc), rc, np.nanmin(rc[np.isfinite(rc)]) - 1 if np.isfinite(rc).any() else 0.0)
    d, conf = p.argmax(1), p.max(1)
    agree = d == r
    a_d, a_r = np.zeros(n), np.zeros(n)
    for group in (agree, ~agree):
        a_d[group] = _accuracy_from_agreement(_isotonic(conf[group], (y == d)[group].astype(float)),
                                              noise_rate, k[group])
    other = ~agree & (r >= 0)
    a_r[other] = _accuracy_from_agreement(_isotonic(rc[other], (y == r)[other].astype(float)), noise_rate, k[other])
    total = a_d + a_r
    scale = np.where(total > 1.0, 1.0 / np.where(total > 0, total, 1.0), 1.0)
    return a_d * scale, a_r * scale


@dataclass
class LabelPosterior:
    """The output of `label_posterior` for n samples with up to K options.

    Attributes:
        posterior: [n, K] float, P(true answer = option | experts, label, ε) (0 beyond a
            sample's options).
        labels: [n] int, the most probable answer: the training label.
        noisy: [n] bool, the given label is more likely wrong than right (posterior < 0.5).
        noise_rate: the ε used.
        reliability: [n] float, the calibrated probability that the direct expert is right.
    """

    posterior: np.ndarray
    labels: np.ndarray
    noisy: np.ndarray
    noise_rate: float
    reliability: np.ndarray


def label_posterior(labels: Sequence[int], direct_probs: np.ndarray, reasoning: Sequence[int],
                    reasoning_confidence: Sequence[float], n_options: Sequence[int] | None = None, *,
                    noise_rate: float | None = None, sure: float = 0.99) -> LabelPosterior:
    """The posterior of each sample's true answer given the experts and its given label.

    Args:
        labels: [n] int, given labels as option indices. A label at or beyond its sample's
            `n_options` (a letter the question does not have, which `load_official` keeps
            with a warning) can never be right: it says nothing about the true answer, and
            the sample is noisy with its experts' prior as the posterior.
        direct_probs: [n, K] float, the direct expert's option probabilities.
        reasoning: [n] int, the reasoning expert's answers as option indices (-1: none).
        reasoning_confidence: [n] float, larger = surer (e.g. minus the largest token NLL of
            the reasoning; nan: unknown, treated as the least sure).
        n_options: [n] int, options per sample (default K).
        noise_rate: ε when known; default `estimate_noise_rate` (0 when no sample is sure).
        sure: see `estimate_noise_rate`.

    Returns a `LabelPosterior`.
    """
    p = np.nan_to_num(np.asarray(direct_probs, dtype=np.float64))
    n, K = p.shape
    y, r = _ints(labels, n, "labels"), _ints(reasoning, n, "reasoning")
    k = np.full(n, K) if n_options is None else _ints(n_options, n, "n_options")
    if (y < 0).any():
        raise ValueError("every label must be an option index (>= 0)")
    outside = y >= k
    eps = estimate_noise_rate(y, p, r, sure=sure, n_options=k) if noise_rate is None else float(noise_rate)
    eps = 0.0 if not np.isfinite(eps) else eps
    a_d, a_r = expert_reliability(y, p, r, reasoning_confidence, eps, k)
    d = p.argmax(1)
    valid = np.arange(K)[None, :] < k[:, None]
    has_r = (r >= 0) & (r != d)
    rest = np.clip(1.0 - a_d - a_r, 0.0, 1.0) / np.maximum(k - 1 - has_r, 1)
    prior = np.where(valid, rest[:, None], 0.0)
    rows = np.arange(n)
    prior[rows, d] = a_d
    prior[rows[has_r], r[has_r]] = a_r[has_r]
    given = np.zeros((n, K), dtype=bool)
    given[rows[~outside], y[~outside]] = True
    likelihood = np.where(given, 1.0 - eps, (eps / np.maximum(k - 1, 1))[:, None]) * valid
    likelihood[outside] = valid[outside]  # the label is noise for sure: every option alike
    post = prior * likelihood
    total = post.sum(1, keepdims=True)
    # A prior of 0 on every option the label could come from: the label decides alone (an
    # outside label cannot: then every option of the sample alike).
    fallback = np.where(outside[:, None], valid / np.maximum(k, 1)[:, None], given.astype(float))
    post = np.where(total > 0, post / np.where(total > 0, total, 1.0), fallback)
    p_given = np.where(outside, 0.0, post[rows, np.minimum(y, K - 1)])
    return LabelPosterior(post, post.argmax(1), p_given < 0.5, eps, a_d)
