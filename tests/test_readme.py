"""The README's library example runs as written, with the two substitutions a CPU without
downloads needs: the model id becomes "toy" and the data folder the offline benchmark, written
in the official RobustFT layout.

Not the official ARC files: the toy model's tokenizer knows only its domain's words, so ARC's
English becomes byte tokens and some questions exceed its 512-token context (load_model and
evaluate then stop with a clear error naming the sample). The offline benchmark is what the
toy model can read.
"""
import re
import runpy
from pathlib import Path

import numpy as np

import robustft
from robustft.offline import make_benchmark

README = Path(__file__).resolve().parents[1] / "README.md"


def library_example() -> str:
    """The python block under the README's "The library in five lines" heading."""
    section = README.read_text().split("## The library in five lines", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return block


def offline_benchmark_folder(folder: Path, noise: int = 30) -> Path:
    """The offline benchmark (seed 0) as an official dataset folder: labeled.csv,
    noisy/noisy<noise>.csv, test.csv."""
    bench = make_benchmark(seed=0)
    robustft.to_official_csv(bench.train, folder / "labeled.csv")
    noisy, _ = robustft.inject_noise(bench.train, noise / 100, seed=0)
    robustft.to_official_csv(noisy, folder / "noisy" / f"noisy{noise}.csv")
    robustft.to_official_csv(bench.test, folder / "test.csv")
    return folder


def test_readme_example_runs_on_cpu_with_the_toy_model(tmp_path, monkeypatch, capsys):
    code = library_example()
    assert len(code.strip().splitlines()) == 5
    # The two substitutions, each of which must find what it replaces.
    (model_id,) = re.findall(r'load_model\("([^"]+)"', code)
    (data_dir,) = re.findall(r'load_official\("([^"]+)"', code)
    assert "/" in model_id  # a real Hugging Face id
    folder = offline_benchmark_folder(tmp_path / "offline")
    code = code.replace(f'"{model_id}"', '"toy"').replace(f'"{data_dir}"', repr(str(folder)))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the example writes runs/sft
    script = work / "example.py"
    script.write_text(code)
    ns = runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out
    data, lm, lm_sft = ns["data"], ns["lm"], ns["lm_sft"]
    assert len(data.train) == len(data.test) == 360 and abs(data.noise_rate - 0.30) < 0.01
    accuracy = robustft.evaluate(lm, data.test, progress=False).accuracy
    assert f"{accuracy:.3f}"[:4] in printed  # the example printed the base model's accuracy
    assert lm.name == "toy" and not lm.is_quantized and lm_sft.name == "toy+lora"
    assert (work / "runs" / "sft" / "adapter_model.safetensors").is_file()
    losses = lm_sft.info["train_loss"]
    assert len(losses) == 68 and np.isfinite(losses).all()  # 3 epochs of 360 in batches of 16
    # LoRA's B matrices start at zero: non-zero ones show the adapter was trained.
    lora_b = [p for n, p in lm_sft.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)
    assert not hasattr(lm.model, "peft_config")  # finetune trained a copy
