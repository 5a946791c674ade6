"""`robustft.experiments.Experiment`: a denoising method that keeps nothing gives a row (the
base model's, with a warning that names why), not a crash in the middle of a comparison."""
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
