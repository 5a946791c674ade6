"""The offline demo (`make demo` = `robustft demo`): its numbers, its files, and resuming."""
import csv
import json

import pytest

from robustft import demo
from robustft.offline import VANILLA_BAND


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rows = demo.run(seeds=(0,), noise_levels=(70,), out=out, progress=False, log=lambda *a: None)
    return out, rows


def test_demo_measures_vanilla_sft_and_robustft(first_run):
    out, rows = first_run
    assert [(r["method"], r["noise"]) for r in rows] == [("vanilla", None), ("sft", 70), ("robustft", 70)]
    vanilla, sft70, robust70 = (r["accuracy"] for r in rows)
    assert VANILLA_BAND[0] <= vanilla <= VANILLA_BAND[1]  # the toy model knows part of the domain
    assert sft70 < vanilla  # 70 % wrong labels leave plain SFT worse than the base model
    assert robust70 >= sft70 + 0.05  # denoising first wins that back (seed 0 measured: +0.11)
    d = rows[2]["detection"]
    assert d["recall"] >= 0.9 and d["label_accuracy"] > 0.3 + 0.3  # 30 % of the given labels were right
    assert _lines(out / "runs.jsonl") == [{k: v for k, v in r.items() if k != "study"} for r in rows]


def test_demo_writes_results_json_csv_and_png(first_run):
    out, rows = first_run
    summary = demo.summarize(rows, [0], [70], seconds=12.5)
    paths = demo.write_outputs(rows, summary, out)
    result = json.loads((out / "results.json").read_text())
    assert result["table"]["70"] == {"vanilla": rows[0]["accuracy"], "sft": rows[1]["accuracy"],
                                     "robustft": rows[2]["accuracy"]}
    assert set(result["detection"]["70"]) >= {"precision", "recall", "f1", "label_accuracy"}
    assert result["seeds"] == [0] and result["seconds"] == 12.5
    table = list(csv.DictReader(open(out / "results.csv")))
    assert [t["method"] for t in table] == ["vanilla", "sft", "robustft"]
    assert float(table[2]["accuracy"]) == pytest.approx(rows[2]["accuracy"], abs=1e-4)
    assert (out / "results.png").stat().st_size > 10_000 and len(paths) == 3
    text = demo.table_text(summary)
    assert f"| 70 % | {rows[0]['accuracy']:.3f} | {rows[1]['accuracy']:.3f} | {rows[2]['accuracy']:.3f} |" in text


def test_several_seeds_give_mean_and_std():
    rows = [{"method": "vanilla", "noise": None, "accuracy": a} for a in (0.5, 0.7)]
    rows += [{"method": m, "noise": 30, "accuracy": a, "detection": {k: a for k in demo.DETECTION}}
             for m in ("sft", "robustft") for a in (0.6, 0.8)]
    s = demo.summarize(rows, [0, 1], [30])
    assert s["table"]["30"]["vanilla"] == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1414, abs=1e-4)}
    assert s["detection"]["30"]["f1"]["mean"] == pytest.approx(0.7)


def test_demo_resumes_without_redoing_finished_runs(first_run, tmp_path):
    out, rows = first_run
    # Interrupted after Vanilla: only its row was written.
    vanilla = {k: v for k, v in rows[0].items() if k != "study"}
    (tmp_path / "runs.jsonl").write_text(json.dumps(vanilla) + "\n")
    again = demo.run(seeds=(0,), noise_levels=(70,), out=tmp_path, progress=False, log=lambda *a: None)
    lines = _lines(tmp_path / "runs.jsonl")
    assert len(lines) == 3 and lines[0] == vanilla  # Vanilla read back, not appended again
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]  # seeded: the same numbers
    demo.run(seeds=(0,), noise_levels=(70,), out=tmp_path, progress=False, log=lambda *a: None)
    assert len(_lines(tmp_path / "runs.jsonl")) == 3  # everything finished: a third run only reads


def test_demo_does_not_reuse_rows_from_other_settings(first_run, tmp_path):
    out, rows = first_run
    stale = {k: v for k, v in dict(rows[1], settings={"sft": {"epochs": 1}}, accuracy=0.0).items() if k != "study"}
    (tmp_path / "runs.jsonl").write_text(json.dumps(stale) + "\n")
    again = demo.run(seeds=(0,), noise_levels=(70,), out=tmp_path, progress=False, log=lambda *a: None)
    assert again[1]["accuracy"] == rows[1]["accuracy"] != 0.0
    assert len(_lines(tmp_path / "runs.jsonl")) == 4
