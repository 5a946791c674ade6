"""The data layer: official files, noise injection, exports, and errors on bad input."""
import csv
import json

import pytest

import robustft
from robustft import DataError, Sample, inject_noise, load_official, load_samples
from robustft.data import NOISE_LEVELS, to_alpaca, to_messages, to_official_csv

HEADER = ["id", "question", "answer", "options"]
GOOD = [
    ["q1", "What is 2+2?", "B", json.dumps(["3", "4", "5", "6"])],
    ["q2", 'Line one\nline "two"', "A", json.dumps(["yes", "no", "maybe"])],
    ["q3", "  Leading spaces", "D", json.dumps(["a", "b", "c", "d"])],
]


def write_csv(path, rows, header=HEADER):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def make_samples(n=200, k=4, seed=0):
    import random

    rng = random.Random(seed)
    return [Sample(id=str(i), question=f"q{i}", options=tuple(f"o{i}_{j}" for j in range(k)),
                   answer="ABCD"[rng.randrange(k)], category=f"c{i % 3}") for i in range(n)]


# ----------------------------------------------------------------------------- reading


def test_reads_official_csv_with_newlines_quotes_and_spaces(tmp_path):
    samples = load_samples(write_csv(tmp_path / "d.csv", GOOD))
    assert [s.id for s in samples] == ["q1", "q2", "q3"]
    assert samples[0].options == ("3", "4", "5", "6") and samples[0].answer == "B"
    assert samples[0].answer_text == "4"
    assert samples[1].question == 'Line one\nline "two"'
    assert samples[2].question == "  Leading spaces"  # kept verbatim
    assert all(s.task == "mc" and s.clean_answer is None for s in samples)


def test_ids_default_to_row_numbers_and_extras_are_kept(tmp_path):
    path = write_csv(tmp_path / "fpb.csv", [["s1", "positive", json.dumps(["negative", "neutral", "positive"]), "C"],
                                           ["s2", "negative", json.dumps(["negative", "neutral", "positive"]), "A"]],
                     header=["question", "gt", "options", "answer"])
    samples = load_samples(path)
    assert [s.id for s in samples] == ["0", "1"]
    assert samples[0].extra == {"gt": "positive"} and samples[0].answer == "C"


def test_json_jsonl_formats(tmp_path):
    recs = [{"id": r[0], "question": r[1], "answer": r[2], "options": json.loads(r[3])} for r in GOOD]
    (tmp_path / "d.json").write_text(json.dumps(recs))
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    a, b = load_samples(tmp_path / "d.json"), load_samples(tmp_path / "d.jsonl")
    c = load_samples(write_csv(tmp_path / "d.csv", GOOD))
    assert a == b == c


def test_exports_round_trip(tmp_path):
    samples, _ = inject_noise(make_samples(50), 0.3, seed=1)
    for writer, name in ((to_alpaca, "a.json"), (to_messages, "m.jsonl"), (to_official_csv, "denoise30.csv")):
        back = load_samples(writer(samples, tmp_path / name))
        assert [(s.id, s.question, s.options, s.answer, s.category) for s in back] == \
               [(s.id, s.question, s.options, s.answer, s.category) for s in samples], name
    alpaca = json.loads((tmp_path / "a.json").read_text())
    assert alpaca[0]["output"] == f"Answer: {samples[0].answer}"
    assert alpaca[0]["input"].startswith("Question: q0\nA. o0_0")
    msg = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in msg["messages"]] == ["user", "assistant"]
    with open(tmp_path / "denoise30.csv", newline="") as f:
        assert next(csv.reader(f))[:4] == ["id", "question", "answer", "options"]


def test_foreign_alpaca_file_reads_as_short_answers(tmp_path):
    (tmp_path / "alp.json").write_text(json.dumps([{"instruction": "Capital of France?", "input": "", "output": "Paris"},
                                                   {"instruction": "Add", "input": "2+3", "output": "5"}]))
    s = load_samples(tmp_path / "alp.json")
    assert [(x.task, x.question, x.answer) for x in s] == [("short", "Capital of France?", "Paris"), ("short", "Add\n\n2+3", "5")]


# ----------------------------------------------------------------------------- bad input


def assert_error(path, row, field, match, **kw):
    with pytest.raises(DataError, match=match) as e:
        load_samples(path, **kw)
    msg = str(e.value)
    assert str(path) in msg, msg
    assert (e.value.row, e.value.field) == (row, field), msg
    if row is not None:
        assert f"row {row}" in msg, msg
    if field is not None:
        assert f"field '{field}'" in msg, msg


@pytest.mark.parametrize("col", ["question", "options", "answer"])
def test_missing_column(tmp_path, col):
    header = [h for h in HEADER if h != col]
    rows = [[v for h, v in zip(HEADER, r) if h != col] for r in GOOD]
    assert_error(write_csv(tmp_path / "d.csv", rows, header), 1, col, "column is missing")


def test_malformed_csv_wrong_field_count(tmp_path):
    path = tmp_path / "d.csv"
    write_csv(path, GOOD)
    with open(path, "a") as f:
        f.write('q4,What?,A,"[""x"", ""y""]",extra\n')
    assert_error(path, 5, None, "malformed CSV: 5 fields")  # GOOD has 3 rows after the header


def test_malformed_csv_unclosed_quote(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('id,question,answer,options\nq1,"never closed,A,"[""a"",""b""]"\n')
    with pytest.raises(DataError, match="malformed CSV") as e:
        load_samples(path)
    assert str(path) in str(e.value) and e.value.row == 2


@pytest.mark.parametrize("options, match", [
    ("['a', 'b']", "not a JSON list.*single quotes"),
    ('{"a": 1}', "JSON dict, expected a list"),
    ("[]", "empty list"),
    ("", "is empty"),
    ('["only"]', "single option"),
    ("not json", "not a JSON list"),
])
def test_bad_options(tmp_path, options, match):
    rows = [GOOD[0], ["q2", "Q?", "A", options]]
    assert_error(write_csv(tmp_path / "d.csv", rows), 3, "options", match)


@pytest.mark.parametrize("answer, match", [("E", "letter E is outside the 4 options"), ("7", "not an option letter"),
                                           ("", "is empty"), ("AB", "not an option letter")])
def test_bad_answer(tmp_path, answer, match):
    rows = [GOOD[0], GOOD[2][:2] + [answer] + GOOD[2][3:]]
    assert_error(write_csv(tmp_path / "d.csv", rows), 3, "answer", match)


def test_answer_outside_options_can_be_kept(tmp_path):
    path = write_csv(tmp_path / "d.csv", [GOOD[0][:2] + ["E"] + GOOD[0][3:]])
    with pytest.warns(UserWarning, match=r"row 2, field 'answer'"):
        s = load_samples(path, on_bad_answer="keep")
    assert s[0].answer == "E" and s[0].task == "mc"


def test_duplicate_ids(tmp_path):
    rows = GOOD + [["q2"] + GOOD[0][1:]]
    assert_error(write_csv(tmp_path / "d.csv", rows), 5, "id", "duplicate id 'q2' \\(first seen in row 3\\)")


def test_empty_question(tmp_path):
    assert_error(write_csv(tmp_path / "d.csv", [GOOD[0], ["q2", "  ", "A", GOOD[0][3]]]), 3, "question", "is empty")


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"id": 1, "question": "q", "options": ["a", "b"], "answer": "A"}) + "\n{broken\n")
    assert_error(path, 2, None, "malformed JSON line")
    path.write_text(json.dumps({"id": 1, "question": "q", "options": "a|b", "answer": "A"}) + "\n")
    assert_error(path, 1, "options", "not a JSON list")


def write_json(path, records):
    path.write_text(json.dumps(records, allow_nan=True))
    return path


@pytest.mark.parametrize("record, field, match", [
    ({"question": ["Q?"], "options": ["a", "b"], "answer": "A"}, "question", "JSON list, expected a string"),
    ({"question": float("inf"), "options": ["a", "b"], "answer": "A"}, "question", "JSON number, expected a string"),
    ({"question": "Q?", "options": ["a", float("inf")], "answer": "A"}, "options", "option 2 is inf"),
    ({"question": "Q?", "options": ["a", " "], "answer": "A"}, "options", "option 2 is an empty string"),
    ({"question": "Q?", "options": [str(i) for i in range(27)], "answer": "A"}, "options", "27 options; at most 26"),
    ({"id": {"x": 1}, "question": "Q?", "options": ["a", "b"], "answer": "A"}, "id", "JSON object"),
    ({"instruction": None, "output": "yes"}, "instruction", "is empty"),
    ({"instruction": "Say yes"}, "output", "is missing"),
])
def test_json_values_of_the_wrong_type_are_errors_not_text(tmp_path, record, field, match):
    """A list, an object, inf or an empty option is never turned into text by str()."""
    assert_error(write_json(tmp_path / "d.json", [{"question": "ok?", "options": ["a", "b"], "answer": "B"}, record]),
                 2, field, match)


def test_a_missing_option_value_is_kept_with_a_warning(tmp_path):
    # The official MMLU test.csv has one NaN option (pandas' missing value): it must still load.
    path = write_json(tmp_path / "d.json", [{"question": "Q?", "options": ["a", float("nan")], "answer": "A"}])
    with pytest.warns(UserWarning, match=r"row 1, field 'options': option 2 is NaN"):
        assert load_samples(path)[0].options == ("a", "nan")


def test_chat_content_parts_are_joined(tmp_path):
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Capital of "}, {"type": "text", "text": "France?"}]},
            {"role": "assistant", "content": "Paris"}]
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"messages": msgs}) + "\n")
    s = load_samples(path)[0]
    assert (s.question, s.answer, s.task) == ("Capital of France?", "Paris", "short")
    msgs[0]["content"] = [{"type": "image_url", "image_url": {"url": "x"}}]
    path.write_text(json.dumps({"messages": msgs}) + "\n")
    assert_error(path, 1, "messages", "content parts")


def test_files_that_are_not_utf8_name_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("id,question,answer,options\n1,Caf\u00e9?,A,\"[\"\"a\"\", \"\"b\"\"]\"\n".encode("latin-1"))
    assert_error(path, None, None, r"not UTF-8 text: byte 0xe9 on line 2")


def test_a_column_named_twice_is_an_error(tmp_path):
    path = write_csv(tmp_path / "d.csv", [GOOD[0] + ["again"]], header=HEADER + ["question"])
    assert_error(path, 1, "question", "more than once")


def test_malformed_json_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"question": "q", "options": ["a", "b"], "answer": "A"},\n  {broken}\n]\n')
    assert_error(path, None, None, "malformed JSON on line 3")


def test_data_never_evaluated(tmp_path):
    # A Python expression in a field must stay inert text, not be evaluated.
    path = write_csv(tmp_path / "d.csv", [["q1", "__import__('os').system('false')", "A", '["a", "b"]']])
    assert load_samples(path)[0].question == "__import__('os').system('false')"
    bad = write_csv(tmp_path / "e.csv", [["q1", "Q", "A", "__import__('os').getcwd()"]])
    assert_error(bad, 2, "options", "not a JSON list")


# ----------------------------------------------------------------------------- noise


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
def test_inject_noise_exact_count_never_same_letter(rate):
    clean = make_samples(333)
    noisy, changed = inject_noise(clean, rate, seed=7)
    assert len(changed) == int(rate * 333 + 0.5) and changed == sorted(set(changed))
    assert [i for i, (a, b) in enumerate(zip(clean, noisy)) if a.answer != b.answer] == changed
    assert all(n.clean_answer == c.answer for n, c in zip(noisy, clean))
    assert sum(n.is_noisy for n in noisy) == len(changed)
    again, changed2 = inject_noise(clean, rate, seed=7)
    assert again == noisy and changed2 == changed
    _, other = inject_noise(clean, rate, seed=8)
    assert other != changed


def test_inject_noise_wrong_letters_are_uniform():
    clean = [Sample(id=str(i), question="q", options=("a", "b", "c", "d"), answer="A") for i in range(3000)]
    noisy, changed = inject_noise(clean, 1.0, seed=0)
    counts = {l: sum(s.answer == l for s in noisy) for l in "ABCD"}
    assert counts["A"] == 0 and len(changed) == 3000
    assert all(abs(counts[l] - 1000) < 100 for l in "BCD"), counts  # ±5 sd of a binomial(3000, 1/3)


def test_inject_noise_short_answers():
    clean = [Sample(id=str(i), question=f"q{i}", answer=str(i % 5), task="short") for i in range(100)]
    noisy, changed = inject_noise(clean, 0.5, seed=3)
    assert len(changed) == 50
    assert all(noisy[i].answer != clean[i].answer and noisy[i].answer in {"0", "1", "2", "3", "4"} for i in changed)


def test_inject_noise_rejects_impossible_requests():
    with pytest.raises(ValueError, match="rate must be in"):
        inject_noise(make_samples(10), 1.5)
    same = [Sample(id=str(i), question="q", answer="x", task="short") for i in range(4)]
    with pytest.raises(ValueError, match="only 0 have a wrong answer"):
        inject_noise(same, 0.5)


# ----------------------------------------------------------------------------- official files


@pytest.mark.filterwarnings("ignore:.*is outside the")  # ARC's one out-of-range noisy label, tested below
@pytest.mark.parametrize("name, n, changed", [
    ("arc", 1778, {30: 533, 50: 889, 70: 1244}),
    ("pubmedqa", 700, {30: 210, 50: 350, 70: 489}),
    ("fpb", 1585, {30: 475, 50: 792, 70: 1109}),
])
def test_official_noise_rates(official, name, n, changed):
    expected_rate = {30: 0.300, 50: 0.500, 70: 0.699 if name == "pubmedqa" else 0.700}
    for noise in NOISE_LEVELS:
        data = load_official(official / name, noise=noise)
        assert len(data.train) == n and len(data.noisy_rows) == changed[noise]
        assert round(data.noise_rate, 3) == expected_rate[noise]
        assert all(s.clean_answer is not None for s in data.train)
    assert data.test and all(s.clean_answer is None for s in data.test)


def test_official_arc_out_of_range_noisy_label_is_kept_and_noisy(official):
    with pytest.warns(UserWarning, match=r"noisy50.csv, row 894, field 'answer': letter D is outside the 3 options"):
        data = load_official(official / "arc", noise=50)
    s = data.train[892]
    assert s.id == "NYSEDREGENTS_2008_4_15" and s.answer == "D" and len(s.options) == 3 and s.is_noisy


def test_official_fpb_gt_is_not_the_label(official):
    data = load_official(official / "fpb", noise=70)
    flipped = [s for s in data.train if s.is_noisy]
    # In the noisy files FPB's `gt` keeps the clean sentiment while `answer` is flipped.
    assert all(s.extra["gt"] == s.options["ABC".index(s.clean_answer)] for s in data.train)
    assert all(s.extra["gt"] != s.answer_text for s in flipped)


def test_official_mmlu_test_only_with_subjects(official):
    data = load_official(official / "mmlu")
    assert len(data.train) == 0 and len(data.test) == 1879 and data.noise_rate is None
    assert len({s.category for s in data.test}) == 57
    assert len({s.id for s in data.test}) == 1879  # the repeated pandas index is not used as the id


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("name", ["arc", "pubmedqa", "fpb"])
def test_inject_noise_on_official_labeled_sets(official, name, rate):
    labeled = load_samples(official / name / "labeled.csv")
    noisy, changed = inject_noise(labeled, rate, seed=0)
    assert len(changed) == int(rate * len(labeled) + 0.5)
    assert abs(len(changed) / len(labeled) - rate) < 0.5 / len(labeled) + 1e-12
    assert all(n.answer != c.answer and n.answer in n.letters for n, c in zip((noisy[i] for i in changed), (labeled[i] for i in changed)))
    assert inject_noise(labeled, rate, seed=0) == (noisy, changed)


def test_every_official_file_reads(official):
    files = sorted(official.rglob("*.csv"))
    assert len(files) == 16
    for f in files:
        samples = load_samples(f, on_bad_answer="keep") if "noisy" in f.name else load_samples(f)
        assert samples and all(s.options and s.question for s in samples), f


def test_public_api_names_are_the_functions():
    # `finetune`/`evaluate` are also module names: importing the modules must not shadow them.
    import importlib

    importlib.import_module("robustft.evaluate")
    importlib.import_module("robustft.finetune")
    assert callable(robustft.evaluate) and callable(robustft.finetune) and callable(robustft.load_model)
    assert robustft.evaluate.__module__ == "robustft.evaluate" and robustft.finetune.__module__ == "robustft.finetune"
    with pytest.raises(AttributeError):
        robustft.no_such_thing
