"""`robustft.experiments.Experiment`: a denoising method that keeps nothing gives a row (the
base model's, with a warning that names why), not a crash in the middle of a comparison."""
import dataclasses

import pytest

from robustft import experiments
from robustft.denoise import DenoiseResult
from robustft.diagnose import DegenerateRunWarning
from robustft.runlog import RunLog
from tiny_lm import make_lm, make_samples


def test_a_method_that_keeps_nothing_scores_the_base_model_and_warns(tmp_path, monkeypatch):
    lm, train, test = make_lm(), make_samples(12, seed=1), make_samples(8, seed=2)

    def drop_everything(samples, lm, config, out=None, progress=False):
        return DenoiseResult(samples=[], provenance=[{"id": s.id} for s in samples], config=config,
                             report=None, stats={"warnings": [{"check": "few_clean", "message": "m"}]})

    monkeypatch.setattr(experiments, "denoiser", lambda method: drop_everything)
    exp = experiments.Experiment(lm=lm, test=test, train_at=lambda noise, seed: train,
                                 passes_at=lambda noise: tmp_path / f"p{noise}", sft=dict(epochs=1, batch_size=4),
                                 data={"set": "tiny"}, runlog=RunLog(tmp_path / "rows.jsonl", experiments.RUNLOG_KEY),
                                 log=lambda *a: None)
    with pytest.warns(DegenerateRunWarning, match="kept none of the 12 training samples"):
        row = exp.row("robustft", 30, 0)
    base = exp.row("vanilla", None, 0)
    assert row["kept"] == 0 and row["trainable"] == 0
    assert row["accuracy"] == pytest.approx(base["accuracy"], abs=1e-12)
    assert [w["check"] for w in row["warnings"]] == ["few_clean", "nothing_kept"]


def test_a_chain_that_keeps_the_labels_as_given_shares_sfts_fine_tune(tmp_path, monkeypatch):
    lm, train, test = make_lm(), make_samples(12, seed=1), make_samples(8, seed=2)
    calls = []
    real_finetune = experiments.finetune

    def counting_finetune(*a, **k):
        calls.append(len(a[1]))
        return real_finetune(*a, **k)

    def keep(samples, lm, config, out=None, progress=False):
        return DenoiseResult(samples=list(samples), provenance=[{"id": s.id} for s in samples],
                             config=config, report=None, stats={"warnings": [], "parse_rate": {}})

    def relabel_first(samples, lm, config, out=None, progress=False):
        first = dataclasses.replace(samples[0], answer="A" if samples[0].answer != "A" else "B")
        return keep([first, *samples[1:]], lm, config)

    monkeypatch.setattr(experiments, "finetune", counting_finetune)
    monkeypatch.setattr(experiments, "denoiser",
                        lambda method: keep if method == "robustft_noise_aware" else relabel_first)
    exp = experiments.Experiment(lm=lm, test=test, train_at=lambda noise, seed: train,
                                 passes_at=lambda noise: tmp_path / f"p{noise}",
                                 sft=dict(epochs=1, batch_size=4), data={"set": "tiny"},
                                 runlog=RunLog(tmp_path / "rows.jsonl", experiments.RUNLOG_KEY),
                                 perplexity=False, log=lambda *a: None)
    shared = exp.row("robustft_noise_aware", 30, 0)
    assert calls == [12]  # SFT's fine-tune, once: the noise-aware row reused it
    sft = exp.row("sft", 30, 0)  # read back, not trained again
    assert calls == [12]
    assert shared["finetune_shared_with"] == "sft" and shared["kept"] == 12
    assert shared["accuracy"] == sft["accuracy"] and shared["trainable"] == sft["trainable"] > 0
    # what it stands for: a fine-tune of the same set, run again, scores the same
    again = exp._scored(real_finetune(lm, train, seed=0, progress=False, epochs=1, batch_size=4))
    assert again["accuracy"] == pytest.approx(shared["accuracy"], abs=1e-12)
    # one label changed: the chain's own fine-tune runs
    own = exp.row("robustft", 30, 0)
    assert calls == [12, 12] and "finetune_shared_with" not in own
