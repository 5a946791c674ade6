"""RobustFT: noise-robust supervised fine-tuning of LLMs (Luo et al., arXiv 2412.14922).

The public API in one namespace. The function names `finetune`, `evaluate` and `denoise` are
also the names of their modules, so they are imported eagerly here: a lazy attribute would be
replaced by the submodule as soon as anything imported it.
"""
from .data import DataError, OfficialData, inject_noise, load_official, load_samples, to_alpaca, to_messages, to_official_csv
from .denoise import DenoiseConfig, DenoiseResult, denoise, detection_report
from .detect import detect_noise
from .evaluate import evaluate, perplexity
from .finetune import SFT, finetune, score_responses
from .hub import load_hub
from .inference import Generation, generate, predict_letters, score_options
from .kernels import OptionScores
from .metrics import EvalResult, accuracy_report
from .model import LanguageModel, load_model, register_model
from .relabel import nearest_clean, relabel
from .selection import response_entropy, select_by_entropy
from .runlog import RunLog
from .sample import LETTERS, MC, SHORT, Sample, letter, letter_index

__version__ = "0.1.0"

__all__ = ["DataError", "OfficialData", "Sample", "LETTERS", "MC", "SHORT", "letter", "letter_index", "load_samples",
           "load_official", "load_hub", "inject_noise", "to_alpaca", "to_messages", "to_official_csv",
           "load_model", "register_model", "LanguageModel", "score_options", "OptionScores", "predict_letters",
           "generate", "Generation", "finetune", "SFT", "score_responses", "evaluate", "perplexity", "EvalResult", "accuracy_report", "RunLog",
           "denoise", "DenoiseConfig", "DenoiseResult", "detection_report", "detect_noise", "relabel",
           "nearest_clean", "select_by_entropy", "response_entropy"]
