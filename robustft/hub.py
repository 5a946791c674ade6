"""The paper's datasets from the Hugging Face Hub, mapped to `Sample`.

Each mapping reads one record in the Hub dataset's own schema. `load_hub` calls
`datasets.load_dataset` (a download on first use, then the local cache); pass ``source=`` a
local folder or a `datasets.Dataset` to work offline.

Datasets (name: Hub id, config; how the answer is read):

- ``mmlu``: cais/mmlu, ``all``; the integer answer index becomes a letter.
- ``arc``: allenai/ai2_arc, ``ARC-Challenge``; ``answerKey`` (A-E or 1-5) by its position.
- ``pubmedqa``: qiaojin/PubMedQA, ``pqa_labeled``; yes / no / maybe.
- ``fpb``: takala/financial_phrasebank, ``sentences_allagree``; sentiment 0 / 1 / 2.
- ``drop``: ucinlp/drop; the first answer span (a short-answer task).
"""
from __future__ import annotations

from typing import Callable, Iterable

from .sample import SHORT, Sample, letter


def _mmlu(rec: dict, i: int) -> Sample:
    subject = rec.get("subject") or None
    return Sample(id=f"{subject or 'mmlu'}-{i}", question=rec["question"], options=tuple(rec["choices"]),
                  answer=letter(int(rec["answer"])), category=subject)


def _arc(rec: dict, i: int) -> Sample:
    labels = list(rec["choices"]["label"])
    key = str(rec["answerKey"]).strip()
    if key not in labels:
        raise ValueError(f"ARC record {rec.get('id', i)}: answerKey {key!r} is not among the labels {labels}")
    # Some ARC items label options 1-4 instead of A-D; the position is what matters.
    return Sample(id=str(rec.get("id", i)), question=rec["question"], options=tuple(rec["choices"]["text"]),
                  answer=letter(labels.index(key)))


PUBMEDQA_OPTIONS = ("No", "Maybe", "Yes")  # the official CSVs' order


def _pubmedqa(rec: dict, i: int) -> Sample:
    ctx = rec["context"]
    parts = [f"({label}) {text}" if label else text for label, text in zip(ctx.get("labels") or [""] * len(ctx["contexts"]), ctx["contexts"])]
    question = "Article: " + "\n".join(parts) + f"\n\nNow answer this question: {rec['question']}"
    decision = str(rec["final_decision"]).strip().capitalize()
    return Sample(id=str(rec.get("pubid", i)), question=question, options=PUBMEDQA_OPTIONS,
                  answer=letter(PUBMEDQA_OPTIONS.index(decision)))


FPB_OPTIONS = ("negative", "neutral", "positive")  # the Hub's label ids 0, 1, 2


def _fpb(rec: dict, i: int) -> Sample:
    return Sample(id=str(i), question=f"Please justify the sentiment of the following sentence:\n{rec['sentence']}",
                  options=FPB_OPTIONS, answer=letter(int(rec["label"])), extra={"gt": FPB_OPTIONS[int(rec["label"])]})


def _drop(rec: dict, i: int) -> Sample:
    spans = list(rec["answers_spans"]["spans"])
    if not spans:
        raise ValueError(f"DROP record {rec.get('query_id', i)} has no answer span")
    return Sample(id=str(rec.get("query_id", i)), question=f"{rec['passage']}\n\n{rec['question']}", answer=spans[0],
                  task=SHORT, extra={"answers": spans})


HUB = {
    "mmlu": ("cais/mmlu", "all", _mmlu),
    "arc": ("allenai/ai2_arc", "ARC-Challenge", _arc),
    "pubmedqa": ("qiaojin/PubMedQA", "pqa_labeled", _pubmedqa),
    "fpb": ("takala/financial_phrasebank", "sentences_allagree", _fpb),
    "drop": ("ucinlp/drop", None, _drop),
}


def from_records(name: str, records: Iterable[dict]) -> list[Sample]:
    """Map records in the Hub schema of dataset ``name`` to samples (no download)."""
    _, _, mapping = _lookup(name)
    return [mapping(rec, i) for i, rec in enumerate(records)]


def load_hub(name: str, split: str = "test", source=None, config: str | None = None, limit: int | None = None) -> list[Sample]:
    """Load one of the paper's datasets from the Hub (or a local copy) as samples.

    Args:
        name: "mmlu", "arc", "pubmedqa", "fpb" or "drop".
        split: the dataset split ("train", "validation", "test").
        source: None for the Hub id above; a local folder / data file path for
            `datasets.load_dataset`; or an already loaded `datasets.Dataset`.
        config: overrides the Hub config (e.g. an MMLU subject).
        limit: keep only the first ``limit`` records.
    """
    hub_id, default_config, mapping = _lookup(name)
    if source is None or isinstance(source, str):
        import datasets

        if source is None:
            ds = datasets.load_dataset(hub_id, config or default_config, split=split)
        else:
            # A local folder in the Hub's schema: the config names a Hub subset, not a local one.
            ds = datasets.load_dataset(source, config, split=split) if config else datasets.load_dataset(source, split=split)
    else:
        ds = source
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds)))) if hasattr(ds, "select") else list(ds)[:limit]
    return [mapping(rec, i) for i, rec in enumerate(ds)]


def _lookup(name: str) -> tuple[str, str | None, Callable[[dict, int], Sample]]:
    try:
        return HUB[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(HUB)}") from None
