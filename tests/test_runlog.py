"""RunLog: rows written as they finish, read back on restart, partial writes survived."""
import json

import pytest

from robustft import RunLog


def test_rows_are_read_back_by_key(tmp_path):
    path = tmp_path / "sub" / "log.jsonl"
    log = RunLog(path, key=("model", "noise", "settings"))
    row = log.add({"model": "m", "noise": 30, "settings": {"lr": 2e-3, "targets": ("a", "b")}, "acc": 0.5})
    assert row["settings"]["targets"] == ["a", "b"]  # as it reads back from JSON
    log.add({"model": "m", "noise": 50, "settings": {"lr": 2e-3, "targets": ("a", "b")}, "acc": 0.25})
    again = RunLog(path, key=("model", "noise", "settings"))
    assert len(again) == 2
    # Tuples and lists, and dict key order, do not change the key.
    assert again.get(model="m", noise=30, settings={"targets": ["a", "b"], "lr": 2e-3})["acc"] == 0.5
    assert again.get(model="m", noise=30, settings={"lr": 1e-3, "targets": ("a", "b")}) is None
    assert {"model": "m", "noise": 50, "settings": {"lr": 2e-3, "targets": ["a", "b"]}} in again
    assert len(path.read_text().splitlines()) == 2


def test_partial_last_line_is_dropped_and_cut_off(tmp_path):
    path = tmp_path / "log.jsonl"
    log = RunLog(path, key=("i",))
    for i in range(3):
        log.add({"i": i, "name": "é" * i})  # non-ASCII: the cut is in bytes, not characters
    path.write_bytes(path.read_bytes() + b'{"i": 3, "na')  # killed mid-write
    with pytest.warns(UserWarning, match=r"line 4: partial row"):
        resumed = RunLog(path, key=("i",))
    assert len(resumed) == 3 and resumed.get(i=3) is None
    resumed.add({"i": 3, "name": "x"})
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["i"] for r in rows] == [0, 1, 2, 3] and rows[2]["name"] == "éé"


def test_broken_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"i": 0}\nnot json\n{"i": 2}\n')
    with pytest.raises(ValueError, match=r"log.jsonl, line 2: not JSON"):
        RunLog(path, key=("i",))


def test_row_without_a_key_field_names_the_field(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"i": 0}\n{"j": 1}\n')
    with pytest.raises(ValueError, match=r"line 2: row has no field 'i'"):
        RunLog(path, key=("i",))
    log = RunLog(tmp_path / "new.jsonl", key=("i", "k"))
    with pytest.raises(ValueError, match="no field 'k'"):
        log.add({"i": 1})
    assert not (tmp_path / "new.jsonl").exists() or (tmp_path / "new.jsonl").read_text() == ""
