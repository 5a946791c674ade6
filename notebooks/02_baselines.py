# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The model and the baselines
#
# Every RobustFT stage asks a model questions, and every experiment ends in a fine-tune and an
# evaluation. This chapter introduces the model layer and measures the two baselines that the
# rest of the book has to beat:
#
# 1. **Vanilla**: the base model, asked directly, with no fine-tuning;
# 2. **SFT**: LoRA fine-tuning on the noisy labels as they are, at 0, 30, 50 and 70 % noise —
#    the paper's Figure 1, in which plain SFT falls as the noise rises and at 70 % ends below
#    the model it started from.
#
# On the way it shows the two ways a model answers: by *scoring* the options (one forward
# pass, no generation) and by *generating* step-by-step reasoning that ends in `Answer: X`.
#
# Offline, the model is the built-in toy: a 2-layer Llama pre-trained on text about the
# benchmark's world. Its weights ship with the package (checked by their hash on loading), so
# every machine runs the same model: CPU pre-training is not bit-reproducible across processors
# and thread counts, and a model pre-trained elsewhere would give other numbers than this book.
# `load_model("toy", source="pretrain")` pre-trains it on your machine instead (a few minutes).
# With `MODE = "real"` the same cells run SmolLM2-135M-Instruct on a laptop CPU on a subset
# of the paper's ARC files; with `MODE = "gpu"` they run Qwen2.5-1.5B-Instruct in 4 bits, which
# fits Colab's 16 GB T4 with room for LoRA training (a 7B/8B model in 4 bits fits for
# inference and QLoRA with small batches).
#
# The chapter's claims are stated as `assert` cells with tolerance bands, so running it on any
# machine checks them; the numbers in the stored outputs are those of the shipped model.

# %% tags=["hide-input"]
# On Colab: this copy of the book names no repository to install robustft from,
# so this cell installs nothing and says how to. Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    print("This copy of the book names no repository to install robustft from.\n"
          "Clone or upload your copy of the robustft repository into this session,\n"
          'then run in a cell:  %pip install "./robustft[gpu,embed,compare]"')

# %% tags=["parameters"]
MODE = None  # None: $ROBUSTFT_MODE or "offline"; "real" (SmolLM2, CPU); "gpu" (Colab)
SEED = 0
NOISE_LEVELS = [0, 30, 50, 70]  # percent of wrong training labels: clean, paper's rates

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import robustft
from robustft import prompts
from robustft.notebook import glue, setup
from robustft.offline import MENTOR, VANILLA_BAND

# %% [markdown]
# ## One interface for every model
#
# `robustft.load_model` takes a Hugging Face id, a local folder or `"toy"`, and returns a
# `LanguageModel`: the `transformers` model, its tokenizer, and two choices every later stage
# reads from it — whether prompts go through the chat template, and whether an answer is
# written as its option *letter* (`Answer: B`, what instruct models do) or as its option
# *text* (`Answer: Linsa`, what evaluation harnesses score for base models). The toy model is
# a base model: it answers by text. `setup` loads the model of the mode with it, together
# with the test set and the noisy training sets.

# %%
S = setup(MODE, seed=SEED)  # the mode's model, test set and noisy training sets
print(S)
lm, test = S.lm, S.test

# %%
n_params = sum(p.numel() for p in lm.model.parameters())
print(f"{lm.name}: {n_params / 1e6:.2f} M parameters, answers by {lm.answer_by}, "
      f"chat template: {lm.chat}, device: {lm.device}")
print(f"{len(test)} test questions")

# %% [markdown]
# ## Answering without generating: option scoring
#
# The direct expert does not need to write anything. For each option we append its answer
# line to the prompt and read, in one batched forward pass, the log-probability the model
# gives to that continuation; the model's answer is the most likely option. The
# log-probabilities come from `robustft.kernels`, which reads each logit once (a Triton kernel
# on a GPU, a chunked PyTorch path on a CPU).

# %% tags=["nbval-ignore-output"]
q = test[0]
scores = robustft.score_options(lm, [q], progress=False)
print(prompts.direct_prompt(q) + prompts.ANSWER_PREFIX + " ...")
pd.DataFrame(
    {"option": q.options,
     "log p(answer line)": scores.logprobs[0].round(3),
     "probability among options": scores.probs[0].round(3),
     "tokens": scores.n_tokens[0]},
    index=list(robustft.LETTERS[: len(q.options)]),
).rename_axis("letter")

# %% [markdown]
# The probabilities are renormalised over the options; the most likely option is the model's
# answer. The same numbers give the *response entropy* that RobustFT uses later to keep only
# confident relabels: the mean negative log-probability per token of the chosen answer
# (`scores.response_entropy`, one per option). Lower means surer.

# %% tags=["nbval-ignore-output"]
prediction = robustft.predict_letters(scores)[0]
pred = robustft.letter_index(prediction)
nll = float(scores.response_entropy[0][pred])  # the response entropy of the prediction
print(f"prediction: {prediction}, label: {q.answer}, "
      f"response entropy of the prediction: {nll:.3f} nats/token")
p_line = float(np.exp(scores.logprobs[0][pred]))  # over the whole vocabulary
p_option = float(scores.probs[0][pred])  # renormalised over the options
glue("showcase_nll", nll)
glue("showcase_p_line", p_line)
glue("showcase_p_option", p_option)
glue("showcase_options_mass", float(np.exp(scores.logprobs[0]).sum()))
print(f"p(answer line) = {p_line:.3f} of the whole vocabulary's mass; "
      f"{p_option:.3f} among the options")

# %%
if S.offline:  # the shipped toy model of seed 0: sure of a wrong option here
    assert prediction != q.answer and p_option > 0.5, (prediction, q.answer, p_option)
# The same number, renormalised over the options:
assert abs(p_option - p_line / np.exp(scores.logprobs[0]).sum()) < 1e-4
print("the option probability is the answer line's probability over the options' "
      "total mass: checked")

# %% [markdown]
# Offline, this question (the toy's, so the check above is offline-only) shows two things. First, the two numbers measure different totals. The
# response entropy, {glue:text}`showcase_nll:.3f` nats per token, is a negative
# log-probability over the *whole vocabulary*: the model gives the answer line
# {glue:text}`showcase_p_line:.3f` of its mass, and the rest to tokens that begin no option
# at all (the four options together get {glue:text}`showcase_options_mass:.3f`).
# The {glue:text}`showcase_p_option:.3f` in the table is the same probability *renormalised
# over the options*. Second, being sure is not being right: the model puts most of the
# options' mass on one option, and here that option is not the test label. A low entropy over the
# options says the model has made up its mind, not that its mind is right; RobustFT's selection
# stage has to live with that.

# %% [markdown]
# ## Vanilla: what the base model knows
#
# `robustft.evaluate` scores every test question this way and reports the accuracy overall and
# per category. Chance is 25 % with four options.

# %% tags=["nbval-ignore-output"]
vanilla = robustft.evaluate(lm, test, progress=False)
print(f"Vanilla accuracy: {vanilla.accuracy:.3f} on {len(test)} questions")
pd.DataFrame({"accuracy": vanilla.by_category, "questions": vanilla.counts}).round(3)

# %% [markdown]
# Offline we also know *why* the model is right or wrong: the world records which facts the
# pre-training text stated. The model answers almost every question about a fact it has read
# and is near chance on the rest. This **partial knowledge** is what RobustFT's noise detector
# relies on: where the model knows the answer, its disagreement with a label is evidence that
# the label is wrong. (Nobody recorded what a real model has read: with the paper's files the
# table below is empty.)

# %% tags=["nbval-ignore-output"]
one_hop = [(s, c) for s, c in zip(test, vanilla.correct)
           if "known" in s.extra and s.category != MENTOR]
known = pd.DataFrame(
    {"fact in pre-training text": [
        "seen" if s.extra["known"] else "never seen" for s, _ in one_hop],
     "correct": [bool(c) for _, c in one_hop]},
    columns=["fact in pre-training text", "correct"],
)
by_known = known.groupby("fact in pre-training text")["correct"].agg(["mean", "size"])
by_known.columns = ["accuracy", "questions"]
by_known.round(3)

# %% [markdown]
# The claims so far, as checks that hold for the toy model on any machine: Vanilla lies in the
# band the benchmark was built for, well above chance and below the ceiling, because the model
# answers the facts it has read and guesses the rest. They are offline-only: the band is the
# toy's, and only the offline world knows which facts were read.

# %%
if S.offline:
    seen = by_known.loc["seen", "accuracy"]
    unseen = by_known.loc["never seen", "accuracy"]
    low, high = VANILLA_BAND
    assert low <= vanilla.accuracy <= high, (vanilla.accuracy, VANILLA_BAND)
    # Memory against a guess among four options:
    assert seen >= 0.9 and unseen <= 0.4, (seen, unseen)
    print(f"Vanilla in {VANILLA_BAND}; seen facts well above unseen ones: checked")

# %% [markdown]
# ## Answering by reasoning: generation
#
# The reasoning expert asks the model to think step by step and end with `Answer: X`.
# `robustft.generate` runs batched greedy (or sampled) generation with a key-value cache and
# returns, for every generated token, its log-probability and the entropy of the distribution
# it was drawn from. `extract_answer` reads the final answer as the official code does.
#
# Offline, the questions built for this are *two-hop*: "where does the mentor of X live?".
# The model has read who X's mentor is and where the mentor lives, but never the answer in one
# sentence, so asked directly it mostly guesses; writing the first hop down lets it recall the
# second. The paper's files have no two-hop category: there the cell takes the first 64 test
# questions.

# %% tags=["nbval-ignore-output"]
two_hop = [s for s in test if s.category == MENTOR] or test[:64]
reasoning = [prompts.reasoning_prompt(s) for s in two_hop]
gens = robustft.generate(lm, reasoning, max_new_tokens=64, progress=False)
print(prompts.reasoning_prompt(two_hop[0]) + gens[0].text)

# %% [markdown]
# Each generated token comes with its log-probability and the entropy of the model's
# next-token distribution (in nats). The model is sure of the words the reasoning template
# fixes; its uncertainty sits on the names it has to copy from the question or recall. A
# wrong step starts at such a token, which is why RobustFT measures the entropy of a whole
# response before trusting it.

# %% tags=["nbval-ignore-output"]
g = gens[0]
pd.DataFrame({"token": [lm.tokenizer.decode([t]) for t in g.token_ids],
              "log p": g.logprobs.round(3), "entropy (nats)": g.entropy.round(3)})

# %% tags=["nbval-ignore-output"]
step = np.mean(
    [prompts.extract_answer(g.text, s) == s.answer for g, s in zip(gens, two_hop)]
)
direct = robustft.evaluate(lm, two_hop, progress=False).accuracy
print(f"{len(two_hop)} questions: direct {direct:.3f}, step by step {step:.3f} "
      f"({(step - direct) * 100:+.1f} points)")

# %%
# Offline only (the toy's two-hop questions): writing the first hop down answers what the
# direct prompt guesses.
if S.offline:
    assert step >= direct + 0.10, (step, direct)
    print("step by step beats the direct prompt on two-hop questions by at least "
          "10 points: checked")

# %% [markdown]
# ## SFT on noisy labels
#
# `robustft.finetune` adds LoRA adapters to a copy of the model and trains them on the given
# labels, with the loss on the answer tokens only and the very prompt used at inference.
# We train once per noise level on the same questions, with the same seed, and evaluate each
# model on the clean test set. `S.row("sft", noise)` does all three and stores the row (keyed
# by the model, the data, the seed, the noise and the LoRA settings `S.sft`), so an
# interrupted run (on a GPU these take a while) picks up where it stopped, and later chapters
# read these rows back instead of training again.

# %% tags=["nbval-ignore-output"]
rows = [S.row("sft", noise) for noise in NOISE_LEVELS]  # train, evaluate, store / read

table = pd.DataFrame(
    [{"method": "Vanilla", "noise (%)": "-", "accuracy": vanilla.accuracy}]
    + [{"method": "SFT", "noise (%)": r["noise"], "accuracy": r["accuracy"]}
       for r in rows]
)
table["vs Vanilla (points)"] = ((table["accuracy"] - vanilla.accuracy) * 100).round(1)
table.round({"accuracy": 3})

# %% tags=["nbval-ignore-output"]
fig, ax = plt.subplots(figsize=(5.5, 3.6))
noises, accuracies = [r["noise"] for r in rows], [r["accuracy"] for r in rows]
ax.plot(noises, accuracies, "o-", label="SFT on the noisy labels")
ax.axhline(vanilla.accuracy, color="gray", ls="--", label="Vanilla (no fine-tuning)")
ax.axhline(0.25, color="lightgray", ls=":", label="chance")
ax.set_xlabel("wrong training labels (%)")
ax.set_ylabel("test accuracy")
ax.set_xticks(NOISE_LEVELS)
ax.set_ylim(0, 1)
ax.set_title("Plain SFT against label noise")
ax.legend(loc="upper right")
fig.tight_layout()

# %%
sft = {r["noise"]: r["accuracy"] for r in rows}
if S.offline:  # the toy's Figure 1 (offline only: see below)
    # Clean labels teach; each step of noise costs; the most noise ends below Vanilla.
    assert sft[0] >= vanilla.accuracy + 0.05, (sft[0], vanilla.accuracy)
    falls = [sft[n] for n in NOISE_LEVELS]
    assert all(a > b for a, b in zip(falls, falls[1:])), falls
    assert sft[NOISE_LEVELS[-1]] < vanilla.accuracy, (sft, vanilla.accuracy)
    print("SFT: above Vanilla on clean labels, falls as the noise rises, below Vanilla "
          f"at {NOISE_LEVELS[-1]} %: checked")

# %% [markdown]
# Read the plot from left to right. With clean labels, fine-tuning teaches the model the
# facts it had never seen, and accuracy rises well above Vanilla. Every wrong label teaches a
# wrong fact instead: accuracy falls with the noise, and at 70 % the fine-tuned model is worse
# than the one we started from. This is the gap RobustFT closes — find the wrong labels, fix
# the ones it can, and train only on what it trusts.
#
# These checks are offline-only: they are the toy's Figure 1, measured on its whole test set.
# In [the chapter run with SmolLM2 on the paper's ARC files](../real-mode/02_baselines.ipynb)
# every cell runs with a real instruct model: option scoring, the response entropy, reasoning
# that ends in `Answer: X`, and one LoRA run per noise level. What a 135M model fine-tuned for one epoch
# on a few dozen questions, measured on a few dozen more, cannot show is the shape of
# Figure 1: its accuracies sit near chance and differ by less than their sampling error.
#
# ## Summary
#
# - `load_model` gives one interface for a Hub model, a local folder and the offline toy.
# - `score_options` answers multiple-choice questions in batched forward passes and gives the
#   response entropy of each answer; `generate` writes reasoning with per-token log-probs.
# - Vanilla knows the facts it has read and guesses the rest; step-by-step reasoning answers
#   two-hop questions that the direct prompt misses.
# - Plain SFT helps on clean labels and hurts more the noisier they are.
#
# **Exercises.** (1) Score the test set by letter (`robustft.evaluate(lm, test, by="letter")`)
# and explain the result for a base model. (2) Fine-tune for 3 epochs instead of 10 at 30 %
# noise: does the gap to clean SFT shrink? (3) Find the test question on which the model's
# prediction has the highest response entropy, and check whether its fact was ever seen.
