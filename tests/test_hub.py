"""Hub loaders: each mapping on a small local dataset in the Hub dataset's own schema."""
import json

import pytest

from robustft.hub import HUB, from_records, load_hub

MMLU = [{"question": "Which planet is largest?", "subject": "astronomy", "choices": ["Mars", "Jupiter", "Venus", "Earth"], "answer": 1},
        {"question": "2+2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "22"], "answer": 1}]
ARC = [{"id": "Mercury_1", "question": "What melts ice?", "choices": {"text": ["heat", "cold", "dark", "wind"], "label": ["A", "B", "C", "D"]}, "answerKey": "A"},
       {"id": "NYSED_2", "question": "Pick three", "choices": {"text": ["one", "two", "three"], "label": ["1", "2", "3"]}, "answerKey": "3"}]
PUBMEDQA = [{"pubid": 21645374, "question": "Do mitochondria play a role?",
             "context": {"contexts": ["Background text.", "Results text."], "labels": ["BACKGROUND", "RESULTS"], "meshes": ["Cells"]},
             "long_answer": "Yes they do.", "final_decision": "yes"},
            {"pubid": 7, "question": "Is it unclear?", "context": {"contexts": ["Only text."], "labels": ["AIM"], "meshes": []},
             "long_answer": "Maybe.", "final_decision": "maybe"}]
FPB = [{"sentence": "Profit fell 37 % .", "label": 0}, {"sentence": "Sales rose .", "label": 2}]
DROP = [{"section_id": "s1", "query_id": "q-1", "passage": "The Bears scored 3 touchdowns.", "question": "How many touchdowns?",
         "answers_spans": {"spans": ["3"], "types": ["number"]}}]


@pytest.mark.parametrize("name, records, expected", [
    ("mmlu", MMLU, [("astronomy-0", "B", "Jupiter", "astronomy"), ("elementary_mathematics-1", "B", "4", "elementary_mathematics")]),
    ("arc", ARC, [("Mercury_1", "A", "heat", None), ("NYSED_2", "C", "three", None)]),
    ("pubmedqa", PUBMEDQA, [("21645374", "C", "Yes", None), ("7", "B", "Maybe", None)]),
    ("fpb", FPB, [("0", "A", "negative", None), ("1", "C", "positive", None)]),
])
def test_multiple_choice_mappings(name, records, expected):
    samples = from_records(name, records)
    assert [(s.id, s.answer, s.answer_text, s.category) for s in samples] == expected
    assert all(s.task == "mc" for s in samples)


def test_pubmedqa_question_carries_the_article_like_the_official_csv():
    s = from_records("pubmedqa", PUBMEDQA)[0]
    assert s.question == "Article: (BACKGROUND) Background text.\n(RESULTS) Results text.\n\nNow answer this question: Do mitochondria play a role?"
    assert s.options == ("No", "Maybe", "Yes")


def test_drop_is_short_answer():
    s = from_records("drop", DROP)[0]
    assert (s.task, s.answer, s.options, s.extra["answers"]) == ("short", "3", (), ["3"])
    assert s.question.endswith("How many touchdowns?")


def test_arc_bad_answer_key_is_reported():
    bad = [dict(ARC[0], answerKey="E")]
    with pytest.raises(ValueError, match="Mercury_1: answerKey 'E' is not among"):
        from_records("arc", bad)


@pytest.mark.parametrize("name, records", [("mmlu", MMLU), ("arc", ARC), ("pubmedqa", PUBMEDQA), ("fpb", FPB), ("drop", DROP)])
def test_load_hub_reads_a_local_folder_through_datasets(tmp_path, monkeypatch, name, records):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / name
    folder.mkdir()
    (folder / "test.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    got = load_hub(name, split="test", source=str(folder))
    assert got == from_records(name, records)
    assert load_hub(name, split="test", source=str(folder), limit=1) == got[:1]


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'squad'"):
        load_hub("squad")
    assert set(HUB) == {"mmlu", "arc", "pubmedqa", "fpb", "drop"}
