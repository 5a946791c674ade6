"""The chapters' modes: "real" runs the Colab ("gpu") branch's code on a CPU, so the two
differ only in the model, its quantization and the sizes; and `setup` gives each mode's
model and data through one call."""
import pytest

from robustft.notebook import MODES, setup

SIZES = {"n_train", "n_test", "sft"}


def test_real_and_gpu_differ_only_in_model_quantization_and_sizes():
    real, gpu = MODES["real"], MODES["gpu"]
    assert set(real) == set(gpu) == set(MODES["offline"])
    differ = {k for k in real if real[k] != gpu[k]}
    assert differ <= {"model", "quantize"} | SIZES, differ
    assert real["quantize"] is None and gpu["quantize"] == "4bit"  # no bitsandbytes on a CPU
    # The sizes are sizes: the fine-tuning settings differ in epochs and batch only.
    assert set(real["sft"]) | set(gpu["sft"]) <= {"epochs", "batch_size"}


def test_offline_setup_is_the_toy_of_its_seed(tmp_path):
    s = setup("offline", seed=1, runs=tmp_path)
    assert s.mode == "offline" and s.lm.name == "toy" and len(s.test) == 360
    train = s.train(30)
    assert len(train) == 360 and sum(x.is_noisy for x in train) == 108  # 30 % injected
    assert s.experiment.passes_at(30) == tmp_path / "denoise" / "seed1-noise30"
    with pytest.raises(ValueError, match="mode must be one of"):
        setup("tpu", runs=tmp_path)


def test_real_setup_reads_the_official_folder(official, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTFT_DATA", str(official / "arc"))
    s = setup("real", runs=tmp_path, n_train=16, n_test=8)
    assert s.lm.name == "smollm2" and s.lm.chat and len(s.test) == 8
    train = s.train(50)
    assert len(train) == 16 and all(x.clean_answer is not None for x in train)
    assert s.experiment.sft["epochs"] == MODES["real"]["sft"]["epochs"]
