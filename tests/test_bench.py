"""`robustft bench` on a small official-layout folder made from the offline benchmark: every
method's row, standard errors, the labels before and after, the targets, and resuming."""
import json

import pytest

import robustft
from robustft import bench, cli
from robustft.offline import make_benchmark


@pytest.fixture(scope="module")
def official_root(tmp_path_factory):
    """<root>/toyset in the official layout: labeled.csv, noisy/noisy{30,50,70}.csv (the same
    rows in the same order), test.csv."""
    b = make_benchmark(seed=0)
    root = tmp_path_factory.mktemp("official")
    folder = root / "toyset"
    clean = b.train[:40]
    robustft.to_official_csv(clean, folder / "labeled.csv")
    for noise in (30, 50, 70):
        robustft.to_official_csv(robustft.inject_noise(clean, noise / 100, seed=0)[0], folder / "noisy" / f"noisy{noise}.csv")
    robustft.to_official_csv(b.test[:40], folder / "test.csv")
    return root


def test_subset_is_fixed_sorted_and_whole_when_asked_for_more():
    assert bench.subset(10, 20) == list(range(10))
    a = bench.subset(100, 7)
    assert a == sorted(a) and len(set(a)) == 7 and a == bench.subset(100, 7)


def test_bench_rows_summary_targets_and_resume(official_root, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "--model", "toy", "--data", str(official_root), "--datasets", "toyset", "--out", str(out),
            "--noise", "30", "50", "--train", "24", "--test", "32", "--no-progress", "--batch-size", "16"]
    assert cli.main(argv) == 0
    summary = json.loads((out / "bench.json").read_text())
    cells = summary["datasets"]["toyset"]
    assert sorted(cells) == ["30", "50"]
    for noise, cell in cells.items():
        assert sorted(cell) == sorted(bench.METHODS)
        assert cell["vanilla"]["accuracy"] == cells["30"]["vanilla"]["accuracy"]  # measured once
        for m, e in cell.items():
            p = e["accuracy"]
            assert e["n_test"] == 32 and e["se"] == pytest.approx((p * (1 - p) / 32) ** 0.5)
        for m in bench.DENOISING:
            e = cell[m]
            assert e["n_train"] == 24 and 0 <= e["labels_after"] <= 1 and e["parse_rate"] == 1.0
            # The input's label accuracy is the subset's share of right labels in noisyNN.csv.
            assert e["labels_before"] == pytest.approx(1 - round(24 * int(noise) / 100) / 24, abs=0.15)
    t = summary["targets"]
    assert set(t) == {"noise_aware_labels", "faithful_no_harm", "parse_rate"}
    assert len(t["noise_aware_labels"]["cases"]) == 2 and t["parse_rate"]["held"]
    md = (out / "bench.md").read_text()
    assert "RobustFT (paper's choices)" in md and "Targets:" in md
    assert summary["setup"]["model"] == "toy" and summary["setup"]["rows"] == {"toyset": {"n_train": 24, "n_test": 32}}
    assert "training/test rows: toyset 24/32" in md
    # The bench's cost: each stored row's own time once (vanilla is one row for both rates).
    stored = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(stored) == 1 + 2 * 4 and summary["row_seconds"] > 0
    assert summary["row_seconds"] == pytest.approx(sum(r["seconds"] for r in stored), abs=0.2)
    # A second run reads every row back.
    capsys.readouterr()
    assert cli.main(argv) == 0
    log = capsys.readouterr().out
    again = json.loads((out / "bench.json").read_text())
    assert log.count("read back") == 2 * 4 + 1 and again["datasets"] == summary["datasets"]
    assert again["row_seconds"] == summary["row_seconds"] and again["seconds"] < summary["seconds"]
    # --report writes the same tables from the stored rows, with no model and no data.
    (out / "bench.md").unlink()
    assert cli.main(["bench", "--report", "--out", str(out)]) == 0
    reported = json.loads((out / "bench.json").read_text())
    assert reported["datasets"] == summary["datasets"] and reported["targets"] == summary["targets"]
    assert reported["row_seconds"] == summary["row_seconds"] and reported["setup"]["model"] == "toy"
    assert "RobustFT (paper's choices)" in (out / "bench.md").read_text()


def test_bench_arguments_fail_early(official_root, tmp_path, capsys):
    code = cli.main(["bench", "--model", "toy", "--data", str(official_root), "--out", str(tmp_path / "b")])
    assert code == 2 and "no official dataset folder 'arc'" in capsys.readouterr().err
    code = cli.main(["bench", "--model", "toy", "--data", str(official_root / "toyset"), "--noise", "40",
                     "--out", str(tmp_path / "b")])
    assert code == 2 and "--noise 40" in capsys.readouterr().err
    assert cli.main(["bench", "--data", str(official_root), "--out", str(tmp_path / "b")]) == 2
    assert "--model is needed" in capsys.readouterr().err
    assert cli.main(["bench", "--report", "--out", str(tmp_path / "b")]) == 2
    assert "runs.jsonl: no finished bench rows" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
