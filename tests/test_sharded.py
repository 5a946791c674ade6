"""Sharded expert passes (`robustft.shards`): two shards give the outputs of one process.

Three ways to run the shards are checked against one run in one process, on the toy model and
a small noisy file: two processes under torchrun (they wait for each other at the end of every
pass), `--shard 0/2 --wait` and `--shard 1/2 --wait` in two processes at once, and
`--shard 0/2` / `--shard 1/2` runs one after the other (each stops at the first pass the other
has not finished, exit status 4, and gets one pass further per run). Then a run in one process
recomputes nothing, and `robustft merge` leaves every batch stored once.
"""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import robustft
from robustft import cli
from robustft.experts import PassStore
from robustft.offline import make_benchmark
from robustft.runlog import TailReader
from robustft.shards import Shard, ShardPending, merge_shards, shard_files

ROOT = Path(__file__).resolve().parents[1]
N, BATCH = 12, 3  # 4 batches per detection pass: 2 for each shard
OUTPUTS = ("denoise50.csv", "denoise50.alpaca.json", "denoise50.messages.jsonl", "provenance.jsonl", "config.json",
           "run.json")
TIMINGS = ("seconds", "expert_seconds")  # summary.json's only fields that differ between runs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every run here computes on one thread, as the torchrun processes do (OMP_NUM_THREADS=1):
    float32 sums split over a different number of threads differ in their last bits (an
    entropy moved by 1e-6 here), in one process as in several."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def noisy_file(tmp_path_factory):
    """noisy/noisy50.csv in the official layout (its labeled.csv gives the detection report)."""
    folder = tmp_path_factory.mktemp("official")
    clean = make_benchmark(seed=0).train[:N]
    noisy, _ = robustft.inject_noise(clean, 0.5, seed=0)
    robustft.to_official_csv(clean, folder / "labeled.csv")
    robustft.to_official_csv(noisy, folder / "noisy" / "noisy50.csv")
    return folder / "noisy" / "noisy50.csv"


def denoise_args(data, out, *extra):
    return ["denoise", "--data", str(data), "--model", "toy", "--out", str(out), "--no-progress",
            "--batch-size", str(BATCH), "--max-new-tokens", "16", "--embedder", "tfidf", *extra]


@pytest.fixture(scope="module")
def one_process(noisy_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    assert cli.main(denoise_args(noisy_file, out)) == 0
    return out


def keys(path: Path) -> list[str]:
    return [json.loads(line)["batch"] for line in path.read_text().splitlines()]


def assert_same_outputs(run: Path, reference: Path):
    for name in OUTPUTS:
        assert (run / name).read_bytes() == (reference / name).read_bytes(), name
    summary, ref = (json.loads((f / "summary.json").read_text()) for f in (run, reference))
    for s in (summary, ref):
        for k in TIMINGS:
            s.pop(k)
    assert summary == ref
    assert ref["report"]["n"] == N and ref["report"]["flagged"] > BATCH  # the relabeling passes have 2+ batches


def assert_shards_split_the_batches(run: Path, reference: Path):
    """Each shard stored its own batches only, and together every batch of the one-process
    run, once."""
    files = shard_files(run)
    assert [f.name for f in files] == ["experts.rank-0-of-2.jsonl", "experts.rank-1-of-2.jsonl"]
    mine, theirs = (keys(f) for f in files)
    assert mine and theirs and not set(mine) & set(theirs)
    assert len(set(mine)) == len(mine) and len(set(theirs)) == len(theirs)
    assert sorted(mine + theirs) == sorted(keys(reference / "experts.jsonl"))
    assert not (run / "experts.jsonl").exists()


def assert_a_rerun_computes_nothing_and_merge_stores_each_batch_once(run: Path, reference: Path, noisy_file):
    assert cli.main(denoise_args(noisy_file, run)) == 0  # one process, reading the shard files
    assert not (run / "experts.jsonl").exists()  # it computed (and so stored) nothing
    assert_same_outputs(run, reference)
    assert cli.main(["merge", str(run)]) == 0
    assert shard_files(run) == []
    stored = keys(run / "experts.jsonl")
    assert len(stored) == len(set(stored))
    assert sorted(stored) == sorted(keys(reference / "experts.jsonl"))
    before = (run / "experts.jsonl").read_bytes()
    assert cli.main(denoise_args(noisy_file, run)) == 0  # one process, after the merge
    assert (run / "experts.jsonl").read_bytes() == before  # nothing recomputed, nothing appended
    assert_same_outputs(run, reference)
    assert merge_shards(run) == {"files": 0, "merged": 0, "duplicates": 0, "batches": len(stored)}


def test_two_processes_under_torchrun_give_the_one_process_outputs(noisy_file, one_process, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(var, None)
    # cwd: the children run this checkout's robustft (`-m`); --standalone: a local rendezvous.
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "robustft.cli", *denoise_args(noisy_file, out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "shard 1/2: every expert pass is complete" in done.stdout
    assert_shards_split_the_batches(out, one_process)
    assert_same_outputs(out, one_process)
    assert_a_rerun_computes_nothing_and_merge_stores_each_batch_once(out, one_process, noisy_file)


def test_shards_given_by_hand_with_wait_run_together(noisy_file, one_process, tmp_path, monkeypatch):
    """`--shard 1/2 --wait` in a second process and `--shard 0/2 --wait` in this one, at once."""
    out = tmp_path / "run"
    parse = Shard.parse  # this process's shard gives up after 120 s if the other one failed
    monkeypatch.setattr(Shard, "parse", lambda text, wait=False: dataclasses.replace(parse(text, wait), timeout=120))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    other = subprocess.Popen([sys.executable, "-m", "robustft.cli", *denoise_args(noisy_file, out, "--shard", "1/2",
                                                                                  "--wait")],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert cli.main(denoise_args(noisy_file, out, "--shard", "0/2", "--wait")) == 0
        stdout, stderr = other.communicate(timeout=120)
    finally:
        other.kill()
    assert other.returncode == 0, stderr[-3000:]
    assert "shard 1/2: every expert pass is complete" in stdout
    assert_shards_split_the_batches(out, one_process)
    assert_same_outputs(out, one_process)


def test_shards_run_one_after_the_other_get_one_pass_further_per_run(noisy_file, one_process, tmp_path, capsys):
    out = tmp_path / "run"
    codes = []
    for _ in range(8):  # direct, reasoning, context: each needs both shards' batches
        codes.append([cli.main(denoise_args(noisy_file, out, "--shard", f"{i}/2")) for i in (0, 1)])
        if codes[-1] == [0, 0]:
            break
    err = capsys.readouterr().err
    assert codes[0] == [4, 4] and codes[-1] == [0, 0], codes
    # Shard 0 stopped first at the direct pass, having stored 2 of its 4 batches.
    assert "shard 0/2 stored its share of the pass, and the 'direct' pass still misses 2 batches" in err
    assert_shards_split_the_batches(out, one_process)
    assert_same_outputs(out, one_process)
    assert_a_rerun_computes_nothing_and_merge_stores_each_batch_once(out, one_process, noisy_file)


def test_a_store_reads_every_shard_file_and_writes_only_its_own(tmp_path):
    first = PassStore(tmp_path, shard=Shard(0, 2, wait=False))
    second = PassStore(tmp_path, shard=Shard(1, 2, wait=False))
    first.add("a", "direct", [{"answer": "A"}])
    second.add("b", "direct", [{"answer": "B"}])
    assert [first.mine(b) for b in range(4)] == [True, False, True, False]
    # The first shard's pass needs batch b: it reads it from the second shard's file.
    assert first.gather("direct", [[{"answer": "A"}], "b"]) == [[{"answer": "A"}], [{"answer": "B"}]]
    with pytest.raises(ShardPending, match=r"shard 0/2 .* 'direct' pass still misses 1 batch of"):
        first.gather("direct", ["c"])
    waiting = PassStore(tmp_path, shard=Shard(0, 2, poll=0.01, timeout=0.05))
    with pytest.raises(ShardPending, match="waited 0 s"):
        waiting.gather("direct", ["c"])
    assert keys(tmp_path / "experts.rank-0-of-2.jsonl") == ["a"]
    assert keys(tmp_path / "experts.rank-1-of-2.jsonl") == ["b"]
    # A store in one process (no launcher here) reads both and writes experts.jsonl.
    single = PassStore(tmp_path)
    assert single.shard is None and single.get("a") and single.get("b") and single.get("c") is None
    with pytest.raises(ValueError, match="shards would remove each other's"):
        PassStore(tmp_path, force=True, shard=Shard(1, 2))


def test_a_tail_reader_reads_complete_lines_only_and_never_writes(tmp_path):
    path = tmp_path / "x.jsonl"
    reader = TailReader(path)
    assert reader.read() == []  # no file yet
    path.write_text('{"batch": "a"}\n{"batch": "b"')  # b is still being written
    assert reader.read() == [{"batch": "a"}]
    assert path.read_text().endswith('"b"')  # the partial line is not cut off
    with open(path, "a") as f:
        f.write('}\nnot json\n')
    with pytest.raises(ValueError, match=r"x.jsonl, line 3: not JSON"):
        reader.read()


def test_shards_from_the_launcher_and_the_flag(tmp_path, capsys):
    assert Shard.from_env({}) is None
    assert Shard.from_env({"RANK": "1", "WORLD_SIZE": "2"}) == Shard(1, 2, wait=True)
    assert Shard.from_env({"LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}) is None  # one process
    with pytest.raises(ValueError, match="sets LOCAL_RANK but not LOCAL_WORLD_SIZE"):
        Shard.from_env({"LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="RANK=2 and WORLD_SIZE=2 are not a shard"):
        Shard.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    assert Shard.parse("1/3") == Shard(1, 3, wait=False)
    for bad in ("3/3", "1", "-1/2", "a/b"):
        with pytest.raises(ValueError):
            Shard.parse(bad)
    data = tmp_path / "d.csv"
    data.write_text("id,question,answer,options\n")
    for extra, message in ((["--shard", "2/2"], "--shard 2/2: need I/N with 0 <= I < N"),
                           (["--shard", "0/2", "--force"], "--force with shard 0/2"),
                           (["--wait"], "--wait goes with --shard")):
        code = cli.main(["denoise", "--data", str(data), "--model", "toy", "--out", str(tmp_path / "o"), *extra])
        assert code == 2 and message in capsys.readouterr().err
    assert cli.main(["merge", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["merge", str(tmp_path)]) == 2 and "no expert store here" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["merge", "--help"])
    assert "usage: robustft merge" in capsys.readouterr().out
