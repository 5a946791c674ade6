"""The `robustft` command: outputs in the official shapes, resuming, and clear errors (exit 2)."""
import json
import subprocess
import sys

import pytest

import robustft
from robustft import cli
from robustft.offline import make_benchmark

N = 40


@pytest.fixture(scope="module")
def official_folder(tmp_path_factory):
    """A folder in the official layout (labeled.csv, noisy/noisy50.csv, test.csv) made from
    the offline benchmark (seed 0, whose toy model `--model toy` loads)."""
    bench = make_benchmark(seed=0)
    folder = tmp_path_factory.mktemp("official")
    clean = bench.train[:N]
    noisy, _ = robustft.inject_noise(clean, 0.5, seed=0)
    robustft.to_official_csv(clean, folder / "labeled.csv")
    robustft.to_official_csv(noisy, folder / "noisy" / "noisy50.csv")
    robustft.to_official_csv(bench.test[:N], folder / "test.csv")
    return folder


def run_cli(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def denoised(official_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "arc50"
    code = cli.main(["denoise", "--data", str(official_folder / "noisy" / "noisy50.csv"), "--model", "toy",
                     "--out", str(out), "--no-progress", "--batch-size", "16"])
    return code, out


def test_denoise_writes_the_official_csv_alpaca_chat_and_provenance(denoised, official_folder):
    code, out = denoised
    assert code == 0
    prov = [json.loads(line) for line in (out / "provenance.jsonl").read_text().splitlines()]
    assert len(prov) == N
    kept = [p for p in prov if p["stage"] != "dropped"]
    # The official denoise CSV reads back through the data layer with the new labels.
    back = robustft.load_samples(out / "denoise50.csv")
    assert [s.id for s in back] == [p["id"] for p in kept]
    assert [s.answer for s in back] == [p["label"] for p in kept]
    alpaca = json.loads((out / "denoise50.alpaca.json").read_text())
    assert len(alpaca) == len(kept) and all(r["output"] == f"Answer: {p['label']}" for r, p in zip(alpaca, kept))
    chat = (out / "denoise50.messages.jsonl").read_text().splitlines()
    assert len(chat) == len(kept)
    # noisy50.csv sits in an official folder: its labeled.csv gives the detection report.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["report"]["n"] == N and summary["report"]["noisy"] == N // 2
    assert summary["report"]["flagged"] == sum(p["noisy"] for p in prov)
    assert summary["report"]["kept"] == summary["kept"] == len(back)
    # The default review is a rule over the two experts: no review-agent pass ran.
    assert set(summary["expert_seconds"]) == {"direct", "reasoning", "context"}


def test_a_second_run_resumes_from_the_run_folder(denoised, official_folder, capsys):
    _, out = denoised
    before = (out / "experts.jsonl").read_text()
    code, stdout, _ = run_cli(capsys, "denoise", "--data", official_folder / "noisy" / "noisy50.csv",
                              "--model", "toy", "--out", out, "--no-progress", "--batch-size", "16")
    assert code == 0 and (out / "experts.jsonl").read_text() == before  # nothing recomputed
    assert "kept" in stdout


def test_bad_input_exits_2_naming_the_file_row_and_field(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text('id,question,answer,options\n1,What?,E,"[""a"", ""b""]"\n')
    code, _, err = run_cli(capsys, "denoise", "--data", bad, "--model", "toy", "--out", tmp_path / "o")
    assert code == 2 and "Traceback" not in err
    assert str(bad) in err and "row 2" in err and "answer" in err
    missing = tmp_path / "missing.csv"
    missing.write_text("id,question,answer\n1,What?,A\n")
    code, _, err = run_cli(capsys, "denoise", "--data", missing, "--model", "toy", "--out", tmp_path / "o")
    assert code == 2 and "options" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "denoise", "--data", tmp_path / "nowhere.csv", "--model", "toy",
                           "--out", tmp_path / "o")
    assert code == 2 and "no such file" in err


def test_settings_out_of_range_exit_2(official_folder, tmp_path, capsys):
    code, _, err = run_cli(capsys, "denoise", "--data", official_folder, "--noise", "50", "--model", "toy",
                           "--out", tmp_path / "o", "--beta", "1.5")
    assert code == 2 and "beta" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "denoise", "--data", official_folder / "noisy" / "noisy50.csv", "--noise", "30",
                           "--model", "toy", "--out", tmp_path / "o")
    assert code == 2 and "--noise 30 contradicts the file name noisy50.csv" in err and not (tmp_path / "o").exists()
    for flag, value in (("--paths", "0"), ("--temperature", "0")):
        code, _, err = run_cli(capsys, "denoise", "--data", official_folder, "--noise", "50", "--model", "toy",
                               "--out", tmp_path / "o", flag, value)
        assert code == 2 and flag.strip("-") in err and "Traceback" not in err, err


def test_a_foreign_out_folder_is_never_overwritten_without_force(official_folder, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    code, _, err = run_cli(capsys, "denoise", "--data", official_folder / "noisy" / "noisy50.csv",
                           "--model", "toy", "--out", out)
    assert code == 2 and "--force" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "my notes"


def test_finetune_then_evaluate_through_the_command(official_folder, tmp_path, capsys):
    code, stdout, _ = run_cli(capsys, "finetune", "--data", official_folder / "labeled.csv", "--model", "toy",
                              "--out", tmp_path / "lora", "--epochs", "2", "--lr", "4e-3", "--no-progress")
    assert code == 0 and (tmp_path / "lora" / "adapter_model.safetensors").exists()
    code, stdout, _ = run_cli(capsys, "evaluate", "--data", official_folder / "labeled.csv", "--model", "toy",
                              "--adapter", tmp_path / "lora", "--json", tmp_path / "eval.json", "--no-progress")
    tuned = json.loads((tmp_path / "eval.json").read_text())
    code0, _, _ = run_cli(capsys, "evaluate", "--data", official_folder / "labeled.csv", "--model", "toy",
                          "--json", tmp_path / "base.json", "--no-progress")
    base = json.loads((tmp_path / "base.json").read_text())
    assert code == code0 == 0 and f"{tuned['accuracy']:.4f}" in stdout
    # Trained on these very labels, the adapter answers more of them than the base model.
    assert tuned["accuracy"] > base["accuracy"]


def test_every_command_has_help():
    for command in ("denoise", "finetune", "evaluate", "demo", "compare"):
        p = subprocess.run([sys.executable, "-m", "robustft.cli", command, "--help"], capture_output=True, text=True)
        assert p.returncode == 0 and f"usage: robustft {command}" in p.stdout and "--no-progress" in p.stdout
    p = subprocess.run([sys.executable, "-m", "robustft.cli", "denoise"], capture_output=True, text=True)
    assert p.returncode == 2 and "--data" in p.stderr and "Traceback" not in p.stderr


def test_evaluate_never_overwrites_an_input_or_an_existing_result(official_folder, tmp_path, capsys):
    data = tmp_path / "test.csv"
    data.write_bytes((official_folder / "test.csv").read_bytes())
    before = data.read_bytes()
    code, _, err = run_cli(capsys, "evaluate", "--data", data, "--model", "toy", "--json", data, "--no-progress")
    assert code == 2 and "input" in err and "Traceback" not in err and data.read_bytes() == before
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    code, _, err = run_cli(capsys, "evaluate", "--data", data, "--model", "toy", "--json", mine, "--no-progress")
    assert code == 2 and "--force" in err and mine.read_text() == "{}"
    code, _, err = run_cli(capsys, "evaluate", "--data", data, "--model", "toy", "--json", tmp_path / "no" / "r.json")
    assert code == 2 and "no such folder" in err


def test_evaluate_reads_only_the_test_file_of_an_official_folder(official_folder, tmp_path, capsys):
    folder = tmp_path / "only-test"
    folder.mkdir()
    (folder / "test.csv").write_bytes((official_folder / "test.csv").read_bytes())
    code, out, _ = run_cli(capsys, "evaluate", "--data", folder, "--model", "toy", "--no-progress")
    assert code == 0 and f"on {N} samples" in out
    for adapter, expected in ((tmp_path / "no-adapter", "no such folder"), (folder, "not a LoRA adapter folder")):
        code, _, err = run_cli(capsys, "evaluate", "--data", folder, "--model", "toy", "--adapter", adapter)
        assert code == 2 and expected in err and "Traceback" not in err
    (folder / "test.csv").write_text("id,question,answer,options\n")
    code, _, err = run_cli(capsys, "evaluate", "--data", folder / "test.csv", "--model", "toy")
    assert code == 2 and "no samples" in err


def test_bad_model_embedder_and_finetune_settings_exit_2_before_writing(official_folder, tmp_path, capsys):
    data = official_folder / "labeled.csv"
    cases = [
        (("denoise", "--model", "toy:abc"), "toy:SEED"),
        (("denoise", "--model", "./no-such-model"), "no such model folder"),
        (("denoise", "--model", "toy", "--embedder", "./no-such-embedder"), "--embedder"),
        (("finetune", "--model", "toy", "--epochs", "0"), "--epochs 0"),
        (("finetune", "--model", "toy", "--epochs", "inf"), "--epochs inf"),
        (("finetune", "--model", "toy", "--batch-size", "0"), "--batch-size 0"),
        (("finetune", "--model", "toy", "--lora-r", "0"), "--lora-r 0"),
    ]
    for i, (args, expected) in enumerate(cases):
        out = tmp_path / f"o{i}"
        code, _, err = run_cli(capsys, args[0], "--data", data, "--out", out, *args[1:])
        assert code == 2 and expected in err and "Traceback" not in err, (args, err)
        assert not out.exists(), args  # checked before anything is written


def test_outputs_that_cannot_be_written_exit_2_and_folders_are_not_shared_between_commands(
        denoised, official_folder, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "finetune", "--data", official_folder / "labeled.csv", "--model", "toy",
                           "--out", blocker / "lora", "--epochs", "1")
    assert code == 2 and str(blocker) in err and "Traceback" not in err
    _, run_folder = denoised
    marker = (run_folder / "run.json").read_text()
    code, _, err = run_cli(capsys, "finetune", "--data", official_folder / "labeled.csv", "--model", "toy",
                           "--out", run_folder, "--epochs", "1")
    assert code == 2 and "robustft denoise" in err and (run_folder / "run.json").read_text() == marker


def test_demo_checks_its_arguments_and_its_folder_first(tmp_path, capsys):
    code, _, err = run_cli(capsys, "demo", "--out", tmp_path / "d", "--noise", "200")
    assert code == 2 and "--noise 200" in err and not (tmp_path / "d").exists()
    code, _, err = run_cli(capsys, "demo", "--out", tmp_path / "d", "--seeds", "-1")
    assert code == 2 and "seeds" in err and not (tmp_path / "d").exists()
    code, _, err = run_cli(capsys, "demo", "--out", tmp_path / "d", "--paths", "0")
    assert code == 2 and "--paths 0" in err and not (tmp_path / "d").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("my numbers")
    code, _, err = run_cli(capsys, "demo", "--out", mine, "--noise", "30")
    assert code == 2 and "did not write" in err and "--force" not in err
    assert [p.name for p in mine.iterdir()] == ["results.csv"]


def test_denoise_has_a_flag_for_every_config_field(capsys):
    """The CLI comes from the config: each `DenoiseConfig` field is a flag named after it, and
    the flags give back exactly the config they describe."""
    import dataclasses
    import re

    from robustft.denoise import DenoiseConfig

    with pytest.raises(SystemExit):
        cli.main(["denoise", "--help"])
    text = capsys.readouterr().out
    fields = [f.name for f in dataclasses.fields(DenoiseConfig)]
    missing = [n for n in fields if not re.search(rf"--{n.replace('_', '-')}\b", text)]
    assert len(fields) == 14 and not missing, missing
    argv = ["denoise", "--data", "d.csv", "--out", "o", "--model", "toy", "--checker", "llm", "--k", "5",
            "--embedder", "tfidf", "--review", "agent", "--beta", "0.25", "--entropy", "options",
            "--entropy-from", "context", "--reasoning-paths", "3", "--temperature", "0.5",
            "--max-new-tokens", "32", "--batch-size", "8", "--skip-long", "--strategy", "noise_aware", "--no-cer"]
    want = DenoiseConfig(checker="llm", k=5, embedder="tfidf", review="agent", beta=0.25, entropy="options",
                         entropy_from="context", reasoning_paths=3, temperature=0.5, max_new_tokens=32,
                         batch_size=8, skip_long=True, strategy="noise_aware", cer=False)
    assert DenoiseConfig.from_args(cli.build_parser().parse_args(argv)) == want
    assert want != DenoiseConfig()  # every value above differs from its default
    assert all(getattr(want, n) != getattr(DenoiseConfig(), n) for n in fields)
    # The short alias of a field names the same setting.
    assert DenoiseConfig.from_args(cli.build_parser().parse_args(argv[:7] + ["--paths", "4"])).reasoning_paths == 4


def test_a_model_that_fails_to_load_is_one_line_and_exit_2(official_folder, tmp_path, capsys):
    """A .gguf file that is not one (random bytes), a missing one, a missing folder: exit 2
    with one line on stderr, and a failed conversion leaves nothing in the cache."""
    from robustft.files import cache_dir
    from robustft.gguf import file_sha256

    bad = tmp_path / "x.gguf"
    bad.write_bytes(bytes(range(7, 71)))
    data = official_folder / "test.csv"
    for model, expected in ((bad, f"--model {bad}: cannot read it as a GGUF model"),
                            (tmp_path / "nowhere.gguf", "no such GGUF file"),
                            (tmp_path / "no-folder", "no such model folder")):
        code, out, err = run_cli(capsys, "evaluate", "--data", data, "--model", model, "--no-progress")
        assert code == 2 and out == "" and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and expected in err, err
    converted = cache_dir() / "gguf"
    assert not (converted / file_sha256(bad)).exists()
    assert not converted.exists() or not any(p.name.startswith(".") for p in converted.iterdir())  # no temp folder
