"""The backend seam: what every stage asks a model for, and what a backend can give.

A *backend* runs the model for the stages. It scores multiple-choice options after
``Answer:``, generates responses with per-token log-probs, scores a given continuation
(teacher-forced log-probs), counts tokens against its context length, and names its outputs
by a `fingerprint` (the key of stored expert batches). The stages (`robustft.detect`,
`robustft.relabel`, `robustft.denoise`, `robustft.baselines`) only call these methods; none
of them touches a model's weights or tokenizer.

Backends:

- `robustft.LanguageModel`, the in-process transformers model (every capability);
- `robustft.backends.server.ServerBackend`, an OpenAI-compatible server (vLLM, SGLang,
  llama.cpp) through the ``openai`` client (``pip install 'robustft[server]'``).

A backend declares what it can do in ``capabilities`` (a subset of `CAPABILITIES`); a stage
calls `require` for what it needs before it does any work, so a run that cannot finish on a
backend stops at once with a message that says what is missing, not mid-way.

Prompts are plain user-turn texts: the backend applies its chat template (or none) and
scores ``render(prompt) + "Answer:" + continuation`` exactly as
`robustft.inference.score_options` does (`robustft.inference.option_continuations`).
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

# What each capability means (the messages of `require` quote these).
CAPABILITY_HELP = {
    "score_options": "OptionScores for multiple-choice options after 'Answer:'",
    "exact_option_scores": "option scores from each option's full continuation log-probs (without it: "
                           "the top-k next-token log-probs of each option's first token, an approximation)",
    "generate": "generation with per-token log-probs",
    "token_entropy": "the exact Shannon entropy of each generated or scored token's distribution",
    "score_continuation": "teacher-forced log-probs of a given continuation",
    "count_tokens": "token counts against the context length (prompt_tokens, fits, answer_room)",
    "hidden_states": "the model's last hidden states (the 'llm' retrieval embedder)",
}
CAPABILITIES = frozenset(CAPABILITY_HELP)


@runtime_checkable
class Backend(Protocol):
    """What the stages need from a model (see the module docstring).

    Attributes:
        name: where the model comes from (shown in messages).
        answer_by: "letter" or "text", the default way a multiple-choice answer is scored.
        capabilities: the subset of `CAPABILITIES` this backend provides.
    """

    name: str
    answer_by: str
    capabilities: frozenset

    @property
    def fingerprint(self) -> str:
        """16 hex digits naming this backend's outputs: the keys of stored expert batches."""

    @property
    def max_length(self) -> int:
        """Longest sequence (prompt + response tokens) the model accepts."""

    def prompt_tokens(self, prompts: Sequence[str]) -> list[int]:
        """Tokens of each rendered prompt."""

    def answer_room(self, samples, budget: int) -> list[int]:
        """Tokens each sample's answer needs after its prompt (longest option, or `budget`)."""

    def fits(self, prompts: Sequence[str], room) -> np.ndarray:
        """[n] bool: each rendered prompt plus `room` tokens fits in `max_length`."""

    def score_options(self, samples, prompts, *, by=None, responses=None, batch_size: int = 64):
        """`robustft.kernels.OptionScores` of the samples' options, numpy [n, K]."""

    def generate(self, prompts, *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
                 batch_size: int = 16, ids=None) -> list:
        """One `robustft.inference.Generation` per prompt."""

    def score_continuations(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[np.ndarray]:
        """Per continuation, [L_i] float64 log p(token | rendered prompt, previous tokens)."""


class CapabilityError(ValueError):
    """A stage asked a backend for something it cannot do (raised before any work).

    Attributes:
        missing: the capabilities the stage needs and the backend lacks.
    """

    def __init__(self, message: str, missing: Sequence[str] = ()):
        super().__init__(message)
        self.missing = tuple(missing)


def capabilities_of(backend) -> frozenset:
    """The capabilities `backend` declares (an object without ``capabilities`` declares none)."""
    return frozenset(getattr(backend, "capabilities", ()) or ())


def require(backend, *capabilities: str, stage: str) -> None:
    """Stop with a `CapabilityError` (a ValueError) naming the stage, the backend and what it
    lacks, when `backend` does not provide every one of `capabilities`. Stages call it before
    any work, so nothing is computed (or sent to a server) for a run that cannot finish."""
    unknown = sorted(set(capabilities) - CAPABILITIES)
    if unknown:
        raise ValueError(f"{stage}: unknown backend capabilities {unknown}; the known ones are "
                         f"{sorted(CAPABILITIES)}")
    missing = [c for c in dict.fromkeys(capabilities) if c not in capabilities_of(backend)]
    if not missing:
        return
    name = getattr(backend, "name", "") or type(backend).__name__
    what = "; ".join(f"{c} ({CAPABILITY_HELP[c]})" for c in missing)
    hint = getattr(backend, "capability_hint", None)
    raise CapabilityError(f"{stage} needs what the backend {name!r} ({type(backend).__name__}) cannot give: {what}"
                          + (f". {hint(missing)}" if callable(hint) else ""), missing)


def backend_warnings(backend) -> list[dict]:
    """Warnings about a run's backend, as `robustft.diagnose` makes them (``{"check",
    "message"}``): ``approximate_scores`` when it scores options but not exactly (top-k
    next-token log-probs of each option's first token, e.g. a server that refuses ``echo``)."""
    caps = capabilities_of(backend)
    if "score_options" in caps and "exact_option_scores" not in caps:
        name = getattr(backend, "name", "") or type(backend).__name__
        why = getattr(backend, "approximation", None) or "it gives no log-probs of a whole continuation"
        return [{"check": "approximate_scores",
                 "message": f"the backend {name!r} scores multiple-choice options approximately ({why}): each "
                            "option's score is the top-k next-token log-prob of its first token after 'Answer:' "
                            "(the k-th log-prob, the most it can have, outside the top k), not its full continuation's; "
                            "serve the model with vLLM or "
                            "SGLang (echo + logprobs) for exact scores"}]
    return []


__all__ = ["Backend", "CAPABILITIES", "CAPABILITY_HELP", "CapabilityError", "backend_warnings", "capabilities_of",
           "require"]
