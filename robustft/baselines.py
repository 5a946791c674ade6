"""The baselines RobustFT is compared with (the paper's Tables 1–2), and one it was not.

Each has a pure core over arrays and a thin wrapper that runs the model. The denoising
baselines take and return what `robustft.denoise` does — ``(samples, lm, config, out=...)``
→ `DenoiseResult` (training set, provenance, detection report) — and share its expert passes
through the run folder's `PassStore`, so a direct pass computed once serves every method.

- **SelfSelect** (`self_select`): the model judges each given label with a Y/N prompt
  (`prompts.self_select_prompt`); labels judged wrong are dropped. The paper's SelfSelect
  asks the model to pick clean samples; ours scores "Yes"/"No" as option texts instead of
  parsing a generation.
- **SelfRAG** (`self_rag`): no fine-tuning; at test time each question is answered with its
  k most similar *training* samples, noisy labels included, as worked examples. The original
  (Asai et al., 2024) trains reflection tokens that decide when to retrieve and critique
  passages; here retrieval is always on and the references are the training set, as in the
  paper's use of it. It returns an `EvalResult`, not a training set.
- **NoiseAL** (`noiseal`, Yuan et al., 2024): small-loss selection of clean samples, then LLM
  relabeling of the rest. The original trains small models whose per-sample loss a
  two-component mixture splits into clean and noisy, and asks an LLM to relabel the noisy
  part with clean examples in context, keeping the relabels the two agree on. Simplified
  here: the loss is the base model's own NLL of the given label (no small model is trained),
  split by a two-component Gaussian mixture (scikit-learn); the noisy part is relabeled by
  CER with k clean examples, and a relabel is kept when the model gives it probability ≥
  `keep` (default 0.5).
- **Confident learning** (`confident_learning`, Northcutt et al., 2021; not in the paper):
  cleanlab's `find_label_issues` on the direct expert's option probabilities; flagged
  samples are dropped (the usual "prune, then train" use).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .denoise import CLEAN, DROPPED, SELECTED, DenoiseConfig, DenoiseResult, detection_report, training_set
from .detect import run_direct_expert
from .backends import Backend, require
from .experts import PassStore, run_pass
from .metrics import EvalResult
from .prompts import self_select_prompt
from .sample import MC, Sample, letter_index


# ------------------------------------------------------------------------------ pure cores
def self_select_flags(verdicts: np.ndarray) -> np.ndarray:
    """[n] bool, True where the model judged the label wrong: log p("No") > log p("Yes").

    Args:
        verdicts: [n, 2] float, log-probabilities of "Yes" (column 0) and "No" (column 1).
    """
    v = np.asarray(verdicts, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 2:
        raise ValueError(f"verdicts must be [n, 2] (yes, no), got {v.shape}")
    return v[:, 1] > v[:, 0]


def confident_learning_flags(labels: Sequence[int], pred_probs: np.ndarray) -> np.ndarray:
    """[n] bool label issues by confident learning (cleanlab's `find_label_issues`, default
    filter "prune_by_noise_rate").

    Args:
        labels: [n] int, given labels as option indices (classes are option positions).
        pred_probs: [n, K] float, out-of-sample probabilities of each option (rows are
            renormalised; nan counts as 0).
    """
    try:
        from cleanlab.filter import find_label_issues
    except ImportError as e:
        raise ImportError("confident learning needs cleanlab: pip install 'robustft[compare]'") from e
    p = np.nan_to_num(np.asarray(pred_probs, dtype=np.float64))
    p = p / np.where(p.sum(1, keepdims=True) > 0, p.sum(1, keepdims=True), 1.0)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels for {len(p)} rows of probabilities")
    # cleanlab needs every class among the labels; positions no label uses are dropped.
    used = np.unique(y)
    remap = {int(c): i for i, c in enumerate(used)}
    q = p[:, used]
    q = q / np.where(q.sum(1, keepdims=True) > 0, q.sum(1, keepdims=True), 1.0)
    return np.asarray(find_label_issues(np.array([remap[int(c)] for c in y]), q), dtype=bool)


def small_loss_clean(losses: Sequence[float], seed: int = 0) -> np.ndarray:
    """[n] probability that each sample is clean, from a two-component Gaussian mixture over
    the per-sample losses (the component with the lower mean is the clean one)."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(losses, dtype=np.float64)
    x = np.where(np.isfinite(x), x, np.nanmax(x[np.isfinite(x)]) if np.isfinite(x).any() else 0.0)[:, None]
    if len(x) < 2 or np.ptp(x) == 0:
        return np.ones(len(x))
    gmm = GaussianMixture(2, random_state=seed, reg_covar=1e-4).fit(x)
    return gmm.predict_proba(x)[:, int(np.argmin(gmm.means_[:, 0]))]


# ------------------------------------------------------------------------------ wrappers
def _store(out):
    return PassStore(out) if out is not None else None


def _direct(lm, samples, config, store, progress):
    return run_direct_expert(lm, samples, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
                             store=store, progress=progress)


def _check_mc(samples, name):
    if any(s.task != MC for s in samples):
        raise ValueError(f"{name} scores options: multiple-choice samples only")


def _result(samples, provenance, config, stats=None) -> DenoiseResult:
    kept = training_set(samples, provenance)
    report = detection_report(samples, provenance) if all(s.clean_answer is not None for s in samples) else None
    return DenoiseResult(kept, provenance, config, report, stats or {})


def _rows(samples, noisy, **per_sample):
    rows = []
    for i, s in enumerate(samples):
        row = {"id": s.id, "given": s.answer, "noisy": bool(noisy[i]), "stage": DROPPED if noisy[i] else CLEAN,
               "label": None if noisy[i] else s.answer, "relabel": None}
        row.update({k: v[i] for k, v in per_sample.items()})
        if s.clean_answer is not None:
            row["clean_answer"] = s.clean_answer
        rows.append(row)
    return rows


def self_select(samples: Sequence[Sample], lm: Backend, config: DenoiseConfig | None = None, *,
                out: str | os.PathLike | None = None, progress: bool = True) -> DenoiseResult:
    """SelfSelect: drop the samples whose label the model itself judges wrong (see the module
    docstring). `config` gives batch_size; `out` stores the pass."""
    config = config or DenoiseConfig()
    samples = list(samples)
    require(lm, "score_options", stage="SelfSelect")
    judged = [Sample(id=s.id, question=self_select_prompt(s), options=("Yes", "No"), answer="A") for s in samples]
    out_ = run_pass("self_select", lm, judged, [j.question for j in judged], by="text", batch_size=config.batch_size,
                    store=_store(out), progress=progress)
    noisy = self_select_flags(out_.scores.logprobs[:, :2])
    return _result(samples, _rows(samples, noisy), config)


def confident_learning(samples: Sequence[Sample], lm: Backend, config: DenoiseConfig | None = None, *,
                       out: str | os.PathLike | None = None, progress: bool = True) -> DenoiseResult:
    """Confident learning: drop the label issues cleanlab finds in the direct expert's option
    probabilities (see the module docstring)."""
    config = config or DenoiseConfig()
    samples = list(samples)
    _check_mc(samples, "confident learning")
    require(lm, "score_options", stage="confident learning")
    direct = _direct(lm, samples, config, _store(out), progress)
    noisy = confident_learning_flags([s.answer_index for s in samples], direct.probs)
    return _result(samples, _rows(samples, noisy, direct=direct.answers), config)


def noiseal(samples: Sequence[Sample], lm: Backend, config: DenoiseConfig | None = None, *,
            out: str | os.PathLike | None = None, keep: float = 0.5, progress: bool = True) -> DenoiseResult:
    """NoiseAL, simplified (see the module docstring): small-loss split of the given labels
    under the base model, CER relabeling of the rest (k = ``config.k`` clean examples), relabels
    kept when their probability is at least `keep`."""
    from .detect import detection_needs, run_detection_experts
    from .relabel import embed, relabel, relabel_needs

    config = config or DenoiseConfig()
    samples = list(samples)
    _check_mc(samples, "NoiseAL")
    require(lm, *detection_needs(samples), *relabel_needs(samples, k=max(config.k, 1), embedder=config.embedder),
            stage="NoiseAL")
    store = _store(out)
    kw = dict(batch_size=config.batch_size, store=store, progress=progress)
    direct, reasoning = run_detection_experts(lm, samples, max_new_tokens=config.max_new_tokens, **kw)
    probs = np.nan_to_num(direct.probs)
    loss = -np.log(np.maximum(probs[np.arange(len(samples)), [s.answer_index for s in samples]], 1e-12))
    noisy = small_loss_clean(loss) < 0.5
    k = max(config.k, 1)
    embeddings = embed(samples, config.embedder, lm, config.batch_size) if noisy.any() else None
    rel = relabel(lm, samples, noisy, reasoning, k=k, review="none", embeddings=embeddings,
                  max_new_tokens=config.max_new_tokens, **kw)
    rows = _rows(samples, noisy, direct=direct.answers, loss=[float(v) for v in loss])
    cer = rel.context.probs
    for j, i in enumerate(rel.indices):
        y = rel.labels[j]
        p = float(np.nan_to_num(cer[j, letter_index(y)])) if y is not None else 0.0
        rows[i].update(relabel=y, confidence=p)
        if y is not None and p >= keep:
            rows[i].update(stage=SELECTED, label=y)
    return _result(samples, rows, config)


def self_rag(lm: Backend, references: Sequence[Sample], test: Sequence[Sample], *, k: int = 3,
             embedder: str = "auto", batch_size: int = 64, progress: bool = False) -> EvalResult:
    """SelfRAG as the paper runs it: answer each test question with its k most similar
    reference samples (the noisy training set, labels as given) as worked examples; no
    fine-tuning. Returns the `EvalResult` on `test` (see the module docstring)."""
    from .evaluate import evaluate
    from .relabel import embed, fit_context_prompts, nearest_clean, relabel_needs

    references, test = list(references), list(test)
    require(lm, *relabel_needs(test, k=k, embedder=embedder), stage="SelfRAG")
    emb = embed([*references, *test], embedder, lm, batch_size)
    pool = np.zeros(len(emb), dtype=bool)
    pool[:len(references)] = True
    neighbours = nearest_clean(emb, pool, np.arange(len(references), len(emb)), k)
    prompts = fit_context_prompts(lm, test, [[references[j] for j in row if j >= 0] for row in neighbours], budget=8)
    by_id = {s.id: p for s, p in zip(test, prompts)}
    return evaluate(lm, test, prompt=lambda s: by_id[s.id], batch_size=batch_size, progress=progress)


__all__ = ["self_select", "self_select_flags", "self_rag", "noiseal", "small_loss_clean", "confident_learning",
           "confident_learning_flags"]
