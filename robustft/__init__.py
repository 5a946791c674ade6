"""RobustFT: noise-robust supervised fine-tuning of LLMs (Luo et al., arXiv 2412.14922).

The data layer is imported eagerly (it needs no torch); the model layer, fine-tuning and
evaluation are loaded on first use so that `import robustft` stays fast.
"""
from .data import DataError, OfficialData, inject_noise, load_official, load_samples, to_alpaca, to_messages, to_official_csv
from .hub import load_hub
from .sample import LETTERS, MC, SHORT, Sample, letter, letter_index

__version__ = "0.1.0"

# name -> module that defines it; resolved lazily by __getattr__ below.
_LAZY = {
    "load_model": "model",
    "LanguageModel": "model",
    "score_options": "inference",
    "ScoredOptions": "inference",
    "predict_letters": "inference",
    "generate": "inference",
    "Generation": "inference",
    "accuracy_report": "metrics",
    "EvalResult": "metrics",
    "response_nll": "finetune",
    "finetune": "finetune",
    "evaluate": "evaluate",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'robustft' has no attribute {name!r}")


__all__ = ["DataError", "OfficialData", "Sample", "LETTERS", "MC", "SHORT", "letter", "letter_index", "load_samples",
           "load_official", "load_hub", "inject_noise", "to_alpaca", "to_messages", "to_official_csv", *_LAZY]
