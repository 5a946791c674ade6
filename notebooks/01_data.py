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
# # Noisy SFT data
#
# RobustFT starts from a supervised fine-tuning set in which some answers are wrong. This
# chapter shows the data every later stage works on:
#
# 1. the **sample**: a question, its options, the given (possibly wrong) answer and, when we
#    know it, the clean answer;
# 2. the **offline benchmark**, a synthetic knowledge domain we can run on a laptop;
# 3. **noise injection** exactly as in the paper: a fixed fraction of answers replaced by a
#    different option, chosen uniformly at random;
# 4. **export** to the formats fine-tuning frameworks read, and what happens with **bad input**.
#
# The paper's own files (`labeled.csv`, `noisy/noisy{30,50,70}.csv`, `test.csv`) have the same
# shape; set `MODE = "real"` (SmolLM2 on a CPU) or `"gpu"` (Colab) below to run the chapter on
# them (`setup` reads the folder from `$ROBUSTFT_DATA`).

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
NOISE = 30  # percent of wrong labels: one of the paper's rates (data.NOISE_LEVELS)

# %% tags=["hide-input"]
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

import robustft
from robustft import prompts
from robustft.notebook import setup

# %% [markdown]
# ## The data
#
# Offline, the data come from the built-in benchmark: people who belong to *houses*, live in
# cities and practise trades. The tiny model of the next chapters has read about some of
# these facts and never about others — as a real LLM knows some of MMLU and not the rest.
# Training and test questions ask about the same facts, worded and shuffled independently.
# In the other modes they are a subset of the rows of the paper's ARC files. One call gives
# the model, the test set and the training sets of the mode; `S.train(0)` is the training
# set with its clean labels.

# %%
S = setup(MODE, seed=SEED)  # the mode's model, test set and noisy training sets
print(S)
train, test = S.train(0), S.test  # clean labels; noise comes next
OUT = S.out("01_data")
print(f"{len(train)} training and {len(test)} test questions")

# %%
def table(samples, n=5):
    """The first n samples as a table: the official CSV's columns and the category."""
    return pd.DataFrame(
        [
            {"id": s.id, "question": s.question, "options": " | ".join(s.options),
             "answer": s.answer, "category": s.category}
            for s in samples[:n]
        ]
    )


table(train)

# %% [markdown]
# Each question belongs to a category. In the offline benchmark the categories are the three
# kinds of question: where someone lives (shared by everyone in a house), their trade, and
# where their mentor lives (a two-hop question that reasoning step by step can answer). The
# paper's ARC files have no categories: there every question counts under `None`.

# %%
categories = pd.Series([s.category for s in train], dtype=object)
categories.value_counts(dropna=False).rename("training questions").to_frame()

# %% [markdown]
# A model never sees the sample object, only text. Every prompt lives in
# `robustft.prompts`; this is what the *vanilla expert* reads, and what fine-tuning trains on:

# %%
print(prompts.direct_prompt(train[0]) + prompts.answer_line(train[0]))

# %% [markdown]
# ## Injecting noise
#
# `inject_noise` replaces exactly round(rate · N) answers, each by one of the *other* options
# drawn uniformly at random, and remembers the clean answer. The same seed gives the same
# noisy set, so every chapter and every run sees the same wrong labels.

# %%
rows = []
for noise in robustft.data.NOISE_LEVELS:  # the paper's rates
    noisy, changed = robustft.inject_noise(train, noise / 100, seed=SEED)
    same = sum(noisy[i].answer == train[i].answer for i in changed)
    rows.append({"noise": f"{noise}%", "labels changed": len(changed),
                 "measured rate": f"{len(changed) / len(train):.3f}",
                 "changed to the same letter": same})
pd.DataFrame(rows)

# %%
# Exactly round(rate * N) labels changed, each a real change.
for noise, row in zip(robustft.data.NOISE_LEVELS, rows):
    assert row["labels changed"] == round(noise / 100 * len(train)), row
    assert row["changed to the same letter"] == 0, row
print("exact noise counts, no label changed to itself: checked")

# %% [markdown]
# The wrong letters are spread evenly over the other options. Left: how the given answer
# relates to the clean one at the chapter's noise level — the diagonal holds the untouched
# labels, every off-diagonal cell a wrong one. Right: the letter balance before and after.

# %%
noisy_train, changed = robustft.inject_noise(train, NOISE / 100, seed=SEED)
letters = list(max((s.letters for s in noisy_train), key=len))  # "ABCD" here
clean_answers = pd.Series([s.clean_answer for s in noisy_train], name="clean answer")
given_answers = pd.Series([s.answer for s in noisy_train], name="given answer")
grid = pd.crosstab(clean_answers, given_answers)
grid = grid.reindex(index=letters, columns=letters, fill_value=0)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
ax1.imshow(grid.values, cmap="Blues")
for i in range(len(letters)):
    for j in range(len(letters)):
        color = "black" if i != j else "white"
        ax1.text(j, i, grid.values[i, j], ha="center", va="center", color=color)
ax1.set_xticks(range(len(letters)), letters)
ax1.set_yticks(range(len(letters)), letters)
ax1.set_xlabel("given (noisy) answer")
ax1.set_ylabel("clean answer")
ax1.set_title(f"{NOISE}% noise: {len(changed)} of {len(train)} labels wrong")
counts = pd.DataFrame(
    {"clean": clean_answers.value_counts(), "noisy": given_answers.value_counts()}
).reindex(letters)
counts.plot.bar(ax=ax2, rot=0)
ax2.legend(loc="lower right")
ax2.set_title("answer letters")
fig.tight_layout()

# %%
# Uniform over the other options: in every row of the grid the wrong letters share the
# row's changed labels about evenly (each within half of the even share, plus a few for
# small rows).
for clean in letters:
    wrong = [grid.loc[clean, given] for given in letters if given != clean]
    even = sum(wrong) / len(wrong)
    assert all(abs(w - even) <= 0.5 * even + 3 for w in wrong), (clean, wrong)
print("wrong letters spread over the other options: checked")

# %% [markdown]
# Because the clean answers are known here, later chapters can measure what the paper can
# only estimate: how many of the wrong labels the checker flags, and how many relabels are
# right. `Sample.is_noisy` compares the two:

# %%
print("wrong labels:", sum(s.is_noisy for s in noisy_train))
print("first changed rows:", changed[:10])

# %% [markdown]
# The later chapters take their noisy training sets from `S.train(noise)`. Offline that is
# this very injection (same seed, same wrong labels); in the real modes it is the paper's own
# `noisy/noisyNN.csv`, whose wrong labels their injector chose, so its measured rate is what
# the paper's file holds on this subset.

# %%
given = S.train(NOISE)  # what the later chapters train on at NOISE %
rate = sum(s.is_noisy for s in given) / len(given)
print(f"S.train({NOISE}): {len(given)} questions, {rate:.3f} of the labels wrong")
if S.offline:  # offline only: there S.train injects the noise exactly as above
    assert [s.answer for s in given] == [s.answer for s in noisy_train]

# %% [markdown]
# ## Export
#
# The denoised set goes to a fine-tuning framework. `to_alpaca` writes Alpaca JSON (as
# LLaMA-Factory reads it), `to_messages` chat JSONL (TRL, LLaMA-Factory), and `to_official_csv`
# the official `denoiseNN.csv` shape. The prompt inside is the very prompt used at inference.
# Each file carries the sample's own fields too, so it reads back without loss.

# %%
alpaca = robustft.to_alpaca(noisy_train, OUT / f"noisy{NOISE}.alpaca.json")
chat = robustft.to_messages(noisy_train, OUT / f"noisy{NOISE}.jsonl")
csv_path = robustft.to_official_csv(noisy_train, OUT / f"noisy{NOISE}.csv")
for path in (alpaca, chat, csv_path):
    back = robustft.load_samples(path)
    same = all(
        (a.id, a.question, a.options, a.answer) == (b.id, b.question, b.options, b.answer)
        for a, b in zip(back, noisy_train)
    )
    print(f"{path}: {len(back)} samples, identical on reading back: {same}")
    assert same and len(back) == len(noisy_train), path

# %%
print(Path(chat).read_text().splitlines()[0][:400])

# %% [markdown]
# ## Bad input
#
# Real files have problems: a broken quote, a missing column, options written as a Python
# list, an answer letter that names no option. The loader never guesses and never evaluates
# a field; it stops with a `robustft.DataError` that names the file, the row (as a
# spreadsheet shows it, the header being row 1) and the field.

# %%
bad = OUT / "bad.csv"
bad.write_text('id,question,options,answer\n'
               'q1,"Which is a colour?","[""red"", ""cat""]",A\n'
               "q2,\"Which is a number?\",\"['two', 'dog']\",A\n")
try:
    robustft.load_samples(bad)
except robustft.DataError as e:
    print(e)

# %%
bad.write_text(
    'id,question,options,answer\nq1,"Which is a colour?","[""red"", ""cat""]",C\n'
)
try:
    robustft.load_samples(bad)
except robustft.DataError as e:
    print(e)

# %% [markdown]
# The paper's noisy ARC files contain such rows (a `D` on a three-option question, left by
# their noise injector). `load_official` keeps them, with a warning, so that its noise rates
# match the paper's exactly; such a label can never be judged correct.
#
# ## Summary
#
# - A sample is plain data; stages pass lists of samples and never modify them in place.
# - Noise is injected by one function, deterministic for a seed, and the clean labels are
#   kept so every later stage can be scored against the truth.
# - The loaders read the official CSVs, JSON/JSONL and Alpaca files, and say exactly where
#   a file is wrong.
#
# **With a real model.** This chapter asks no model anything:
# [the chapter run with SmolLM2 on the paper's ARC files](../real-mode/01_data.ipynb) shows
# the same steps on ARC questions — the injection's exact counts, the paper's own noisy file,
# exports that read back unchanged. What a 135M model can and cannot do with such labels is
# the subject of the next chapters.
#
# **Exercises.** (1) Inject 70 % noise and check that no label was "changed" to itself.
# (2) Load an official file with `load_official(folder, noise=50)` and print
# `data.noise_rate`. (3) Export the noisy set with `by="text"` and compare the `output` field.
