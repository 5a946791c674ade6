"""Loading, validating, noising and exporting SFT data. Everything returns lists of `Sample`.

Formats read by `load_samples` (detected from the extension and content, or forced with
``format=``):

- ``csv``      the official RobustFT CSV: ``question``, ``options`` (a JSON list), ``answer``
               (a letter), optional ``id``, dataset extras (FPB ``gt``, MMLU ``Subject``,
               pandas' unnamed index column) kept in ``Sample.extra``.
- ``json``     a JSON list of records with the same fields (``options`` a list or a JSON string).
- ``jsonl``    one such record per line, or chat records ``{"messages": [...]}``.
- ``alpaca``   a JSON list of ``{"instruction", "input", "output"}`` records.

Row numbers in errors are 1-based as a person would find them: for CSV the spreadsheet row
(the header is row 1, so the first sample is row 2), for JSONL the line, for JSON the record.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from . import prompts
from .files import atomic_open, write_json, write_jsonl
from .sample import LETTERS, MC, SHORT, TASK_TYPES, Sample, letter, letter_index

NOISE_LEVELS = (30, 50, 70)  # the paper's noise rates, as in the official file names

# Official CSV columns that name a category (MMLU's `Subject`).
_CATEGORY_COLUMNS = ("category", "Subject", "subject")
# pandas writes its index as an unnamed first column; it is not an id (MMLU's repeats).
_INDEX_COLUMNS = ("", "Unnamed: 0")


class DataError(ValueError):
    """Bad input data. The message names the file, the 1-based row and the field."""

    def __init__(self, path, row: int | None, field: str | None, problem: str):
        self.path, self.row, self.field, self.problem = str(path), row, field, problem
        where = [f"{self.path}"]
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {problem}")


# --------------------------------------------------------------------------- parsing rows


def _parse_options(value, path, row) -> list[str]:
    """Options as a list of strings. Strings are parsed as JSON — never evaluated."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise DataError(path, row, "options", "is empty; expected a JSON list of option strings")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            hint = " (it looks like a Python list with single quotes; write JSON with double quotes)" if text.startswith("['") else ""
            raise DataError(path, row, "options", f"is not a JSON list: {e.msg}{hint}") from None
    if not isinstance(value, list):
        raise DataError(path, row, "options", f"is a JSON {type(value).__name__}, expected a list of option strings")
    if not value:
        raise DataError(path, row, "options", "is an empty list; a multiple-choice sample needs at least two options")
    if len(value) < 2:
        raise DataError(path, row, "options", "has a single option; a multiple-choice sample needs at least two")
    if not all(isinstance(o, (str, int, float)) and not isinstance(o, bool) for o in value):
        raise DataError(path, row, "options", "must hold strings (or numbers), not nested values")
    for i, o in enumerate(value):
        if isinstance(o, float) and math.isnan(o):
            # The official MMLU test.csv has one: pandas writes a missing value (or the option
            # text "None") as NaN. Kept as the text "nan", as pandas would show it.
            warnings.warn(f"{path}, row {row}, field 'options': option {i + 1} is NaN (a missing value); "
                          "kept as the text 'nan'", stacklevel=4)
        elif isinstance(o, float) and math.isinf(o):
            raise DataError(path, row, "options", f"option {i + 1} is {o!r}, not a finite number or a string")
        if isinstance(o, str) and not o.strip():
            raise DataError(path, row, "options", f"option {i + 1} is an empty string")
    if len(value) > len(LETTERS):
        raise DataError(path, row, "options", f"has {len(value)} options; at most {len(LETTERS)} (A-Z) are supported")
    return [str(o) for o in value]


def _field(record: dict, name: str, path, row, numbers: bool = True) -> str:
    """A text field: a non-empty string (or, with `numbers`, a finite number, e.g. a numeric
    short answer in JSON). Lists, objects, booleans, NaN and inf are errors, never str()-ed."""
    value = record.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip()):
        raise DataError(path, row, name, "is empty")
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise DataError(path, row, name, f"is {value!r}, not a finite number or a string")
        return str(value)
    raise DataError(path, row, name, f"is a JSON {_json_type(value)}, expected a string")


def _json_type(value) -> str:
    return {dict: "object", list: "list", bool: "boolean", int: "number", float: "number"}.get(type(value), type(value).__name__)


def _record_to_sample(record: dict, path, row: int, default_id: str, task: str, on_bad_answer: str) -> Sample:
    """One record (a CSV row or a JSON object) -> Sample, validating every field it uses."""
    question = _field(record, "question", path, row, numbers=False)
    answer = _field(record, "answer", path, row).strip()
    options: list[str] = []
    if task == MC:
        options = _parse_options(record.get("options"), path, row)
        try:
            index = letter_index(answer)
        except ValueError:
            raise DataError(path, row, "answer", f"{answer!r} is not an option letter (expected one of {''.join(letter(i) for i in range(len(options)))})") from None
        answer = letter(index)
        if index >= len(options):
            problem = f"letter {answer} is outside the {len(options)} options (A-{letter(len(options) - 1)})"
            if on_bad_answer == "raise":
                raise DataError(path, row, "answer", problem)
            warnings.warn(f"{path}, row {row}, field 'answer': {problem}; kept as given (it can never be correct)", stacklevel=3)
    elif record.get("options") not in (None, "", "[]", []):
        options = _parse_options(record["options"], path, row)
    sid = record.get("id")
    if isinstance(sid, (dict, list, bool)) or (isinstance(sid, float) and math.isinf(sid)):
        raise DataError(path, row, "id", f"is a JSON {_json_type(sid)}, expected a string or an integer")
    sid = default_id if sid is None or (isinstance(sid, float) and math.isnan(sid)) or str(sid).strip() == "" else str(sid)
    category = next((str(record[c]) for c in _CATEGORY_COLUMNS if record.get(c) not in (None, "")), None)
    # Instruction/chat fields are our own export's rendering of the sample; don't carry them twice.
    known = {"id", "question", "options", "answer", "clean_answer", "task", "instruction", "input", "output",
             "messages", *_CATEGORY_COLUMNS}
    extra = {k: v for k, v in record.items() if k not in known}
    clean = record.get("clean_answer")
    return Sample(id=sid, question=question, options=tuple(options), answer=answer, task=task,
                  category=category, clean_answer=None if clean in (None, "") else str(clean), extra=extra)


def _check_unique_ids(samples: Sequence[Sample], rows: Sequence[int], path) -> None:
    first: dict[str, int] = {}
    for s, row in zip(samples, rows):
        if s.id in first:
            raise DataError(path, row, "id", f"duplicate id {s.id!r} (first seen in row {first[s.id]})")
        first[s.id] = row


# --------------------------------------------------------------------------- readers


def _check_utf8(path: Path) -> None:
    """A DataError naming the line of the first byte that is not UTF-8 (the readers decode as
    UTF-8; a latin-1 or UTF-16 export would otherwise fail with no file or line)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(path, None, None, f"is not UTF-8 text: byte 0x{raw[e.start]:02x} on line {line}; "
                                          "save the file as UTF-8") from None


def _read_csv(path: Path) -> Iterable[tuple[int, dict]]:
    """(spreadsheet row, record) pairs. Rows with the wrong number of fields are errors."""
    _check_utf8(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(path, None, None, "is empty (no header row)") from None
        except csv.Error as e:
            raise DataError(path, 1, None, f"malformed CSV: {e}") from None
        repeated = sorted({c for c in header if header.count(c) > 1 and c not in _INDEX_COLUMNS})
        if repeated:
            raise DataError(path, 1, repeated[0], "column appears more than once in the header")
        missing = [c for c in ("question", "answer") if c not in header]
        if missing:
            raise DataError(path, 1, missing[0], f"column is missing (the header has {header})")
        records = []
        row = 1
        while True:
            row += 1
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise DataError(path, row, None, f"malformed CSV: {e}") from None
            if not values:  # blank line
                continue
            if len(values) != len(header):
                raise DataError(path, row, None, f"malformed CSV: {len(values)} fields, the header has {len(header)}")
            records.append((row, dict(zip(header, values))))
        return records


def _detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".json":
        _check_utf8(path)
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)
        return "alpaca" if '"instruction"' in head and '"output"' in head else "json"
    raise DataError(path, None, None, f"cannot tell the format from the extension {suffix!r}; name the file "
                                      "*.csv, *.json or *.jsonl (in Python: load_samples(..., format='csv'|'json'|'jsonl'|'alpaca'))")


def _json_records(path: Path, fmt: str) -> list[tuple[int, dict]]:
    _check_utf8(path)
    if fmt == "jsonl":
        out = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(path, n, None, f"malformed JSON line: {e.msg}") from None
                if not isinstance(rec, dict):
                    raise DataError(path, n, None, "each line must be a JSON object")
                out.append((n, rec))
        return out
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        # A JSON file's rows are its records; a syntax error can only be placed by line.
        raise DataError(path, None, None, f"malformed JSON on line {e.lineno}, column {e.colno}: {e.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(path, None, None, "expected a JSON list of objects")
    return [(n, r) for n, r in enumerate(data, start=1)]


def _from_instruction_record(rec: dict, path, row: int) -> dict:
    """Alpaca / chat records -> our field names. Files we exported carry the sample fields
    alongside, so they round-trip; foreign ones become short-answer samples."""
    if "question" in rec and "answer" in rec:
        return rec
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list):
            raise DataError(path, row, "messages", "must be a list of {role, content} objects")
        user = [_content(m, path, row) for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
        bot = [_content(m, path, row) for m in msgs if isinstance(m, dict) and m.get("role") == "assistant"]
        if not user or not bot:
            raise DataError(path, row, "messages", "needs a user and an assistant message")
        return {**rec, "question": user[-1], "answer": bot[-1], "task": SHORT}
    if "instruction" in rec:
        if "output" not in rec:
            raise DataError(path, row, "output", "is missing (an Alpaca record needs instruction and output)")
        instruction = _field(rec, "instruction", path, row, numbers=False)
        extra = rec.get("input")
        if extra not in (None, "") and not isinstance(extra, str):
            raise DataError(path, row, "input", f"is a JSON {_json_type(extra)}, expected a string")
        question = instruction + (f"\n\n{extra}" if extra else "")
        return {**rec, "question": question, "answer": rec["output"], "task": SHORT}
    missing = "question" if "question" not in rec else "answer"
    raise DataError(path, row, missing, "is missing")


def _content(message: dict, path, row: int) -> str | None:
    """A chat message's text: a string, or OpenAI-style content parts whose text parts are joined."""
    content = message.get("content")
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
            raise DataError(path, row, "messages", "content parts must all be {'type': 'text', 'text': ...} objects")
        return "".join(texts)
    if content is not None and not isinstance(content, str):
        raise DataError(path, row, "messages", f"a message's content is a JSON {_json_type(content)}, expected a string")
    return content


def load_samples(path, format: str | None = None, task: str | None = None, on_bad_answer: str = "raise") -> list[Sample]:
    """Read samples from an official RobustFT CSV, a JSON/JSONL file or an Alpaca file.

    Args:
        path: the file.
        format: "csv", "json", "jsonl" or "alpaca"; detected from the file when None.
        task: "mc" or "short"; None reads a record's own ``task`` field, else "mc".
        on_bad_answer: what to do with an answer letter outside the options: "raise" (default,
            a DataError), or "keep" (warn and keep the sample; it can never be judged correct —
            the official noisy ARC files contain one such row).

    Raises:
        DataError: naming the file, the row and the field, for a malformed file, a missing
            column, options that are not a non-empty JSON list, a bad answer or a duplicate id.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if task not in (None, *TASK_TYPES):
        raise ValueError(f"task must be one of {TASK_TYPES}, got {task!r}")
    if on_bad_answer not in ("raise", "keep"):
        raise ValueError("on_bad_answer must be 'raise' or 'keep'")
    fmt = format or _detect_format(path)
    if fmt == "csv":
        records = _read_csv(path)
        if records and (task or MC) == MC and "options" not in records[0][1]:
            raise DataError(path, 1, "options", "column is missing (pass task='short' for short-answer data)")
    elif fmt in ("json", "jsonl", "alpaca"):
        records = [(n, _from_instruction_record(r, path, n)) for n, r in _json_records(path, "jsonl" if fmt == "jsonl" else "json")]
    else:
        raise ValueError(f"unknown format {format!r}; use 'csv', 'json', 'jsonl' or 'alpaca'")

    samples, rows = [], []
    for n, (row, rec) in enumerate(records):
        rec_task = task or rec.get("task") or MC
        if rec_task not in TASK_TYPES:
            raise DataError(path, row, "task", f"{rec_task!r} is not one of {TASK_TYPES}")
        if rec_task == MC and "options" not in rec:
            raise DataError(path, row, "options", "is missing")
        # Ids default to the data row number, so they stay stable when a file is re-read.
        samples.append(_record_to_sample(rec, path, row, str(n), rec_task, on_bad_answer))
        rows.append(row)
    _check_unique_ids(samples, rows, path)
    return samples


# --------------------------------------------------------------------------- official folders


@dataclass
class OfficialData:
    """One dataset in the official RobustFT layout.

    Attributes:
        train: the noisy training samples (``noisy/noisyNN.csv``; ``labeled.csv`` when
            noise=0), with ``clean_answer`` set from ``labeled.csv`` when that file is there.
        test: ``test.csv``.
        labeled: the clean training samples, or None.
    """

    name: str
    noise: int
    train: list[Sample]
    test: list[Sample]
    labeled: list[Sample] | None

    @property
    def noisy_rows(self) -> list[int] | None:
        """0-based indices of the training rows whose label differs from the clean one."""
        if self.labeled is None:
            return None
        return [i for i, s in enumerate(self.train) if s.is_noisy]

    @property
    def noise_rate(self) -> float | None:
        """The measured fraction of noisy training labels (None when no clean labels)."""
        rows = self.noisy_rows
        return None if rows is None or not self.train else len(rows) / len(self.train)

    def __repr__(self) -> str:
        rate = "unknown" if self.noise_rate is None else f"{self.noise_rate:.3f}"
        return f"OfficialData({self.name!r}, noise={self.noise}, train={len(self.train)}, test={len(self.test)}, measured noise rate={rate})"


def load_official(folder, noise: int = 30) -> OfficialData:
    """Read an official RobustFT dataset folder (``labeled.csv``, ``noisy/noisyNN.csv``, ``test.csv``).

    When ``labeled.csv`` is present the clean answer of every training row is attached, so
    ``data.noise_rate`` and ``data.noisy_rows`` say which labels are truly wrong. The noisy
    file must list the same rows in the same order as ``labeled.csv`` (checked by id/question).
    Answer letters outside a row's options, which the official noisy ARC files contain, are
    kept with a warning: such a label is noisy and never judged correct.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    labeled_path, test_path = folder / "labeled.csv", folder / "test.csv"
    labeled = load_samples(labeled_path) if labeled_path.exists() else None
    test = load_samples(test_path) if test_path.exists() else []
    if noise == 0:
        train = [dataclasses.replace(s, clean_answer=s.answer) for s in labeled] if labeled else []
    else:
        noisy_path = folder / "noisy" / f"noisy{noise}.csv"
        if not noisy_path.exists():
            have = sorted(p.name for p in (folder / "noisy").glob("noisy*.csv")) if (folder / "noisy").is_dir() else []
            if labeled is None and test:
                train = []  # e.g. MMLU: the official snapshot has a test split only
                return OfficialData(folder.name, noise, train, test, labeled)
            raise FileNotFoundError(f"{noisy_path}: no such file (found: {have or 'none'})")
        train = load_samples(noisy_path, on_bad_answer="keep")
        if labeled is not None:
            if len(labeled) != len(train):
                raise DataError(noisy_path, None, None, f"has {len(train)} rows but labeled.csv has {len(labeled)}")
            for i, (noisy, clean) in enumerate(zip(train, labeled)):
                if noisy.id != clean.id or noisy.question != clean.question:
                    raise DataError(noisy_path, i + 2, "question", f"does not match row {i + 2} of labeled.csv; the files must list the same rows in order")
            train = [dataclasses.replace(n, clean_answer=c.answer) for n, c in zip(train, labeled)]
    return OfficialData(folder.name, noise, train, test, labeled)


# --------------------------------------------------------------------------- noise injection


def inject_noise(samples: Sequence[Sample], rate: float, seed: int = 0) -> tuple[list[Sample], list[int]]:
    """Replace exactly round(rate·N) labels by wrong ones, uniformly at random.

    Multiple choice: the new letter is drawn uniformly from the sample's *other* options.
    Short answer: the new answer is drawn uniformly from the answers of other samples that
    differ from this one's. ``clean_answer`` is set to the original label (unless it was
    already known). Rounding is half-up (0.5 -> 1). Deterministic for a seed.

    Returns:
        (noisy samples in the same order, sorted 0-based indices of the rows that changed)
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    samples = list(samples)
    n_noisy = math.floor(rate * len(samples) + 0.5 + 1e-9)
    pool = sorted({s.answer for s in samples if s.task != MC})

    def can_flip(s: Sample) -> bool:
        return len(s.options) >= 2 if s.task == MC else any(a != s.answer for a in pool)

    eligible = [i for i, s in enumerate(samples) if can_flip(s)]
    if n_noisy > len(eligible):
        raise ValueError(f"cannot corrupt {n_noisy} of {len(samples)} samples: only {len(eligible)} have a wrong answer to switch to")
    rng = random.Random(seed)
    changed = sorted(rng.sample(eligible, n_noisy))
    out = [dataclasses.replace(s, clean_answer=s.clean_answer if s.clean_answer is not None else s.answer) for s in samples]
    for i in changed:
        s = out[i]
        if s.task == MC:
            wrong = [l for l in s.letters if l != s.answer]
        else:
            wrong = [a for a in pool if a != s.answer]
        out[i] = s.with_answer(rng.choice(wrong))
    return out, changed


# --------------------------------------------------------------------------- export


def _sample_fields(s: Sample) -> dict:
    """The sample's own fields, carried inside Alpaca/chat exports so they read back losslessly."""
    d = {"id": s.id, "question": s.question, "options": list(s.options), "answer": s.answer, "task": s.task}
    if s.category is not None:
        d["category"] = s.category
    return d


def to_alpaca(samples: Iterable[Sample], path, by: str = "letter") -> Path:
    """Write Alpaca JSON (instruction / input / output), the prompt identical to inference's."""
    records = [{"instruction": prompts.DIRECT_INSTRUCTION, "input": prompts.format_question(s),
                "output": prompts.answer_line(s, by=by), **_sample_fields(s)} for s in samples]
    return write_json(path, records)


def to_messages(samples: Iterable[Sample], path, by: str = "letter") -> Path:
    """Write chat-messages JSONL ({"messages": [user, assistant]}) for TRL / LLaMA-Factory."""
    return write_jsonl(path, ({"messages": [{"role": "user", "content": prompts.direct_prompt(s)},
                                            {"role": "assistant", "content": prompts.answer_line(s, by=by)}],
                               **_sample_fields(s)} for s in samples))


def to_official_csv(samples: Sequence[Sample], path) -> Path:
    """Write the official ``denoiseNN.csv`` shape: id, question, answer, options (JSON), extras."""
    samples = list(samples)
    extras = [k for k in dict.fromkeys(k for s in samples for k in s.extra) if k not in _INDEX_COLUMNS]
    has_category = any(s.category is not None for s in samples)
    header = ["id", "question", "answer", "options"] + (["Subject"] if has_category else []) + extras
    with atomic_open(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for s in samples:
            row = [s.id, s.question, s.answer, json.dumps(list(s.options), ensure_ascii=False)]
            row += [s.category or ""] if has_category else []
            row += [s.extra.get(k, "") for k in extras]
            w.writerow(row)
    return Path(path)
