"""The offline demo (`make demo`): its numbers, its results file, and resuming after a stop."""
import json

import pytest

from robustft import demo
from robustft.offline import VANILLA_BAND


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rows = demo.run(seed=0, noise_levels=(70,), out=out, progress=False)
    return out, rows


def test_demo_measures_vanilla_and_noisy_sft(first_run):
    out, rows = first_run
    assert [r["run"] for r in rows] == ["vanilla", "sft-noise70"]
    vanilla, sft70 = (r["accuracy"] for r in rows)
    assert VANILLA_BAND[0] <= vanilla <= VANILLA_BAND[1]  # the toy model knows part of the domain
    assert sft70 < vanilla  # 70 % wrong labels leave the model worse than it started
    assert _lines(out / "results.jsonl") == rows
    table = demo.report(rows, out)
    assert table.count("\n") == 3 and f"{sft70:.3f}" in table
    assert (out / "results.md").read_text().strip() == table
    assert (out / "demo.png").stat().st_size > 10_000


def test_demo_resumes_without_redoing_finished_runs(first_run, tmp_path):
    out, rows = first_run
    results = tmp_path / "results.jsonl"
    # Interrupted after Vanilla: only its row was written.
    results.write_text(json.dumps(rows[0]) + "\n")
    again = demo.run(seed=0, noise_levels=(70,), out=tmp_path, progress=False)
    lines = _lines(results)
    assert len(lines) == 2 and lines[0] == rows[0]  # Vanilla read back, not appended again
    assert again[1]["accuracy"] == rows[1]["accuracy"]  # the rerun SFT is the same (seeded)
    # Everything finished: a third run only reads.
    demo.run(seed=0, noise_levels=(70,), out=tmp_path, progress=False)
    assert len(_lines(results)) == 2


def test_demo_does_not_reuse_rows_from_other_sft_settings(first_run, tmp_path):
    out, rows = first_run
    stale = dict(rows[0], sft={"epochs": 1}, accuracy=0.0)
    (tmp_path / "results.jsonl").write_text(json.dumps(stale) + "\n")
    again = demo.run(seed=0, noise_levels=(), out=tmp_path, progress=False)
    assert again[0]["accuracy"] == rows[0]["accuracy"] != 0.0
    assert len(_lines(tmp_path / "results.jsonl")) == 2
