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
# # The comparison: baselines, ablations, and a detector that knows what it does not know
#
# The paper's claim is comparative: RobustFT against Vanilla, SFT on the noisy labels, NoiseAL,
# SelfRAG and SelfSelect (its Tables 1–2), each component's contribution (Table 3), robustness
# to β and k (Figure 3), perplexity (Figure 4), categories (Figure 5) and stability (Figure 6).
# This chapter reproduces every row and figure on the offline benchmark with one loop over
# the set-up's `S.row` (the loop of `robustft.compare.run`), and adds two rows the paper
# does not have:
#
# - **confident learning** (cleanlab's `find_label_issues`), the classic label-noise detector,
#   run on the direct expert's option probabilities;
# - **RobustFT noise-aware** — *ours, not the paper's*: a variant that separates "the label is
#   wrong" from "the model does not know" (`DenoiseConfig(strategy="noise_aware")`).
#
# Every number below is measured by this run. The chapter runs one benchmark seed (the
# budget of a notebook test); the closing section reads the three-seed run that
# `robustft compare --seeds 0 1 2` wrote into `results/`.

# %% tags=["hide-input"]
# On Colab: this copy of the book names no repository to install robustft from,
# so this cell installs nothing and says how to. Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    print("This copy of the book names no repository to install robustft from.\n"
          "Clone or upload your copy of the robustft repository into this session,\n"
          'then run in a cell:  %pip install "./robustft[gpu,embed,compare]"')

# %% tags=["parameters"]
MODE = None  # None: $ROBUSTFT_MODE or "offline"; "real" (SmolLM2, CPU), "gpu" (Colab)
# offline: the benchmark seed (a world and its shipped toy model; 0, 1, 2 ship)
SEED = 0
RUN_SEEDS = [0, 1, 2]  # stability: seeds of the noise injection and of fine-tuning
BETAS, KS = [0.25, 0.5, 1.0], [1, 3, 5]  # sensitivity (Figure 3)

# %% tags=["hide-input"]
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

import robustft
from robustft import compare
from robustft.data import NOISE_LEVELS
from robustft.denoise import ABLATIONS
from robustft.noise_aware import label_posterior
from robustft.offline import CATEGORIES
from robustft.notebook import glue, setup

# %% [markdown]
# Offline the set-up is the benchmark of seed `SEED` and its toy model, with the noise
# injected at each rate; in the other modes it is the mode's model on the paper's ARC files
# (their own noisy files at each rate). Every row below is `S.row(method, noise)`: measured
# once, stored, and read back by a re-run.

# %%
S = setup(MODE, seed=SEED)  # the mode's model, test set and noisy training sets
print(S)
OUT = S.out("07_compare")
base = S.config  # DenoiseConfig(): the RobustFT row's settings

# %% [markdown]
# ## The methods
#
# Every denoising method takes the noisy training set and the model and returns what
# `robustft.denoise` returns — a training set, per-sample provenance, a detection report —
# and the same LoRA fine-tune then trains on it. The expert passes are stored per batch in
# one folder, so a pass that two methods ask for (the direct expert, say) runs once.
#
# | row | what it does |
# |---|---|
# | Vanilla | the base model, no fine-tuning |
# | SFT | LoRA on the noisy labels as given |
# | RobustFT | detect (two experts + checker) → relabel (CER + review) → select (entropy, β), with this project's defaults (below) |
# | SelfSelect | the model judges each label (Y/N); labels judged wrong are dropped |
# | SelfRAG | no fine-tuning; each test question is answered with its k most similar *training* samples (noisy labels included) as examples |
# | NoiseAL | small-loss split (a two-component mixture over the model's NLL of each label), CER relabeling of the rest, confident relabels kept |
# | Confident learning | cleanlab's `find_label_issues` on the direct expert's option probabilities; issues dropped |
# | RobustFT noise-aware (ours) | keep, relabel or flag each label by its posterior given an estimated noise rate and calibrated experts |
#
# The docstrings of `robustft.baselines` say what each original does and what is simplified
# here.
#
# **The RobustFT row is not the paper's exact configuration.** It runs `DenoiseConfig()`,
# whose defaults are this project's choices in two places: the review is by confidence
# (`review="confidence"`: where CER and the reasoning expert disagree, the surer one stands)
# instead of the paper's LLM review agent, and selection ranks a relabel by its entropy under
# the experts that gave it (`entropy_from="experts"`) instead of the entropy of CER's answer.
# `DenoiseConfig.paper()` is the paper's configuration; the two differ in exactly these
# settings:

# %%
ours, theirs = base.to_dict(), type(base).paper().to_dict()
pd.DataFrame(
    {"DenoiseConfig() (the RobustFT row)": ours, "DenoiseConfig.paper()": theirs}
).loc[[k for k in ours if ours[k] != theirs[k]]].rename_axis("setting")

# %% [markdown]
# The ablations of the paper's Table 3 are settings of `DenoiseConfig`, each removing one
# component from the RobustFT row (so they inherit its defaults). `cer=False` (w/o CER) keeps
# the relabeling step but asks its prompt with the question alone, without the k retrieved
# clean worked examples; w/o REL drops the reasoning-enhanced expert, so the direct expert
# alone flags, the CER answer is the new label, and its own entropy ranks it:

# %%
with pd.option_context("display.max_colwidth", None):  # every change in full
    display(
        pd.DataFrame(
            [
                {
                    "ablation": name,
                    "changes": ", ".join(f"{k}={v!r}" for k, v in changes.items()),
                }
                for name, changes in ABLATIONS.items()
            ]
        ).set_index("ablation")
    )

# %% [markdown]
# ## Why a noise-aware variant: a synthetic example first
#
# RobustFT's checker flags every label an expert disagrees with. Where the model never saw a
# fact, its experts *guess* — often confidently — so in this chapter's run the checker flags
# {glue:text}`never_flagged_min:.2f`–{glue:text}`never_flagged_max:.2f` of the labels of
# never-seen facts at every noise rate (as in chapter 3), and the relabels that replace them
# are guesses too. At 30 % noise the flagged labels of never-seen facts were right
# {glue:text}`never_flagged_right_30:.2f` of the time.
#
# The noise-aware variant (`robustft.noise_aware`) reads the experts as reliable as they
# measure on the data itself:
#
# 1. the **noise rate** ε is the share of labels that disagree with the experts where the
#    experts are surest (both agree, direct probability ≥ 0.99);
# 2. an expert's **reliability** at a given confidence is solved from the rate g at which the
#    labels agree with it: under uniform noise over K options, g = a(1−ε) + (1−a)ε/(K−1);
#    g is fitted as a monotone function of confidence (isotonic regression) and a is kept at
#    chance unless g says otherwise by more than one standard error;
# 3. the **posterior** of the true answer multiplies that prior by the noise model (1−ε on
#    the given label, ε/(K−1) elsewhere). The training label is the most probable answer; a
#    label is *flagged* when it is more likely wrong than right.
#
# On synthetic arrays — half the facts known (experts right and sure), half unknown (experts
# sure of a random guess), 30 % of the labels flipped — it fixes the known facts and keeps
# the labels of the unknown ones:

# %%
rng = np.random.default_rng(0)
n, K, eps = 1000, 4, 0.3
truth = rng.integers(0, K, n)
known = np.arange(n) < n // 2
guess = np.where(known, truth, rng.integers(0, K, n))
conf = np.where(known, 0.995, rng.uniform(0.5, 0.95, n))
probs = np.tile(((1 - conf) / (K - 1))[:, None], (1, K))
probs[np.arange(n), guess] = conf
reasoning = np.where(known, truth, rng.integers(0, K, n))
labels = np.where(rng.random(n) < eps, (truth + rng.integers(1, K, n)) % K, truth)

post = label_posterior(labels, probs, reasoning, np.zeros(n))
syn = (
    pd.DataFrame(
        {
            "facts": np.where(known, "known", "unknown"),
            "given label right": labels == truth,
            "trained label right": post.labels == truth,
            "label kept": post.labels == labels,
        }
    )
    .groupby("facts")
    .mean()
)
print(
    f"estimated noise rate {post.noise_rate:.3f} (true {np.mean(labels != truth):.3f})"
)
syn.round(3)

# %%
assert abs(post.noise_rate - np.mean(labels != truth)) < 0.05
assert (
    syn.loc["known", "trained label right"] > 0.97
    and syn.loc["unknown", "label kept"] > 0.9
)
print(
    "synthetic: noise rate recovered, known facts fixed, unknown facts' labels kept:"
    " checked"
)

# %% [markdown]
# ## Every method on the offline benchmark
#
# The loop below — the loop of `compare.run` — measures every row of `compare.METHODS` at
# 30, 50 and 70 % noise, then the sensitivity of RobustFT to β and k (at 50 %) and the
# stability of three methods over run seeds — the seeds of the noise injection and of
# fine-tuning, on one world and model (only the toy models of seeds 0–2 ship; other seeds
# would need minutes of pre-training and are not bit-reproducible). Finished rows are
# stored in `runs.jsonl`, so a re-run reads them back. In the other modes the same loop
# runs on the mode's model and the paper's ARC files; their noisy files are fixed, so there
# a run seed changes the fine-tuning only.

# %% tags=["nbval-ignore-output"]
def row(method, noise, run_seed=SEED, **kwargs):
    """`S.row` with any run seed, labelled as `compare.summarize` reads it."""
    r = S.experiment.row(method, noise, run_seed, **kwargs)
    return {**r, "seed": SEED, "run_seed": run_seed}


rows = [row("vanilla", None)]  # the base model: the same at every noise rate
for noise in NOISE_LEVELS:
    rows += [row(m, noise) for m in compare.METHODS if m != "vanilla"]
for vary, values in (("beta", BETAS), ("k", KS)):  # sensitivity, at 50 % noise
    rows += [
        row(
            "robustft",
            50,
            study="sensitivity",
            vary=vary,
            config=dataclasses.replace(base, **{vary: v}),
        )
        for v in values
    ]
for run_seed in RUN_SEEDS:  # stability, at 50 % noise
    rows += [row(m, 50, run_seed, study="stability") for m in compare.STABILITY_METHODS]
summary = compare.summarize(rows)
(OUT / "compare.json").write_text(json.dumps(summary, indent=1) + "\n")
acc = pd.DataFrame(
    {
        f"{n} %": {compare.LABELS[m]: v["mean"] for m, v in summary["noise"][n].items()}
        for n in summary["noise"]
    }
)
acc.round(3)

# %% tags=["nbval-ignore-output"]
fig = compare.plot_accuracy(summary)

# %% [markdown]
# The explanations and checks that follow are about the offline benchmark: its toy model
# saw some facts and never others, and the checks' bands were measured on it. Every table
# and figure is computed in every mode, but the assertion cells of claims about the toy run
# offline only (`if S.offline:`). In [the chapter run with SmolLM2 on the paper's ARC files](../real-mode/07_compare.ipynb)
# every row of the comparison is measured on SmolLM2-135M with a small subset of the paper's
# ARC files (the `"real"` sizes of `robustft.notebook.MODES`): about fifty adapters. It
# shows that every method, baseline and ablation runs end to end on a real model and the
# paper's data, and that a method whose chain keeps no sample says so (a `nothing_kept`
# warning, the base model's row) instead of stopping the comparison. It cannot rank them:
# the model answers ARC questions little better than chance, one epoch on a few samples
# barely moves it, and on so few test questions the standard error of an accuracy is
# larger than most of the differences between rows.

# %% [markdown]
# ## What the numbers say
#
# Read the table by rows of the same kind. Some of the explanations need more than one number
# per row: RobustFT's runs sample by sample. `denoise` on the table's noisy sets, with the same
# run folders, gives them back (every expert pass is read back, none is computed). Offline,
# each sample also says whether the toy model's pre-training text stated its fact
# (`sample.extra["known"]`, chapter 3); a real model's training text says nothing of the
# kind, so in the other modes the columns about never-seen facts stay empty.

# %% tags=["nbval-ignore-output"]
trains = {n: S.train(n) for n in NOISE_LEVELS}
# the table's RobustFT runs (run seed = SEED)
chains = {
    n: robustft.denoise(trains[n], S.lm, base, out=S.passes(n), progress=False)
    for n in NOISE_LEVELS
}
SEEN = {True: "seen", False: "never seen"}  # offline: did pre-training state the fact?
facts = pd.concat(
    [
        pd.DataFrame(
            {
                "noise (%)": n,
                "fact": [SEEN.get(s.extra.get("known"), "?") for s in trains[n]],
                "category": [s.category for s in trains[n]],
                "label right": [not s.is_noisy for s in trains[n]],
                "flagged": [p["noisy"] for p in chains[n].provenance],
            }
        )
        for n in NOISE_LEVELS
    ],
    ignore_index=True,
)
never = facts[facts["fact"] == "never seen"]
by_noise = pd.DataFrame(
    {
        "labels right": facts.groupby("noise (%)")["label right"].mean(),
        "never-seen labels flagged": never.groupby("noise (%)")["flagged"].mean(),
        "flagged never-seen labels right": never[never["flagged"]]
        .groupby("noise (%)")["label right"]
        .mean(),
    }
)
n_options = len(trains[70][0].options)
glue("never_flagged_min", float(by_noise["never-seen labels flagged"].min()))
glue("never_flagged_max", float(by_noise["never-seen labels flagged"].max()))
glue(
    "never_flagged_right_30", float(by_noise.loc[30, "flagged never-seen labels right"])
)
glue("label_right_70", float(by_noise.loc[70, "labels right"]))
# any one other option
glue("option_right_70", float((1 - by_noise.loc[70, "labels right"]) / (n_options - 1)))
by_noise.round(3)

# %% [markdown]
# The first check holds in every mode: `denoise` gives back the table's RobustFT runs. The
# second is about the toy's never-seen facts, so it is checked offline only.

# %%
robustft_rows = {
    r["noise"]: r["detection"]
    for r in rows
    if r["study"] == "table" and r["method"] == "robustft"
}
for n in NOISE_LEVELS:  # the same runs as the table's RobustFT row
    assert chains[n].report["flagged"] == robustft_rows[n]["flagged"], n
    # f1: NaN when nothing right is flagged
    f1 = chains[n].report["f1"], robustft_rows[n]["f1"]
    assert np.isclose(*f1, rtol=0, atol=1e-9, equal_nan=True), (n, f1)
print("denoise gives back the table's RobustFT runs: checked")
if S.offline:  # unverifiable facts: flagged anyway
    assert (by_noise["never-seen labels flagged"] >= 0.8).all(), by_noise
    print("the checker flags most never-seen facts' labels at every rate: checked")

# %% tags=["nbval-ignore-output"]
def mean(method, noise):
    return summary["noise"][str(noise)][method]["mean"]


RIVALS = ("vanilla", "sft", "robustft")
gap = {
    n: mean("robustft_noise_aware", n) - max(mean("vanilla", n), mean("sft", n))
    for n in NOISE_LEVELS
}
vs_robustft = {
    n: mean("robustft_noise_aware", n) - mean("robustft", n) for n in NOISE_LEVELS
}
margin = {
    n: mean("robustft_noise_aware", n) - max(mean(m, n) for m in RIVALS)
    for n in NOISE_LEVELS
}
for n in NOISE_LEVELS:
    glue(f"na_{n}", mean("robustft_noise_aware", n))
    glue(f"robustft_{n}", mean("robustft", n))
    glue(f"sft_{n}", mean("sft", n))
    glue(f"gap_{n}", 100 * gap[n])
    glue(f"vs_robustft_{n}", 100 * vs_robustft[n])
glue("vanilla", mean("vanilla", 30))


def rates(ns):
    return " and ".join(map(str, ns)) + " %"


# One sentence for the summary, worded by the measured margins: "beats" only by a point
# or more.
ahead = [n for n in NOISE_LEVELS if margin[n] >= 0.01]
level = [n for n in NOISE_LEVELS if n not in ahead]
verdict = "the noise-aware variant "
if ahead:
    verdict += f"beats Vanilla, SFT and RobustFT at {rates(ahead)} noise"
if level:
    verdict += (
        f"; at {rates(level)} it only matches the best of them"
        if ahead
        else f"only matches the best of Vanilla, SFT and RobustFT at {rates(level)} noise"
    )
    points = ", ".join(f"{100 * margin[n]:+.1f}" for n in level)
    verdict += f" ({points} points, within the spread between seeds)"
glue("na_verdict", verdict)
pd.DataFrame(
    {
        "noise-aware − max(Vanilla, SFT) (points)": {
            f"{n} %": 100 * gap[n] for n in NOISE_LEVELS
        },
        "noise-aware − RobustFT (points)": {
            f"{n} %": 100 * vs_robustft[n] for n in NOISE_LEVELS
        },
    }
).round(1)

# %% [markdown]
# **SFT against RobustFT.** Vanilla answers {glue:text}`vanilla:.3f`. Plain SFT reaches
# {glue:text}`sft_30:.3f` at 30 % noise — more than RobustFT's {glue:text}`robustft_30:.3f`.
# The checker flags nearly every sample whose fact the model never saw (both experts guess
# there), and RobustFT drops or replaces those labels, though at 30 % noise the flagged ones
# were right {glue:text}`never_flagged_right_30:.2f` of the time. As the noise rises SFT falls
# with it, and RobustFT, which keeps mostly facts the model already knows, holds.
#
# **The noise-aware variant** keeps those labels, because on unknown facts no option is more
# likely than the given one, and overrules the label where a calibrated expert is sure: it
# reaches {glue:text}`na_30:.3f` / {glue:text}`na_50:.3f` / {glue:text}`na_70:.3f` at
# 30 / 50 / 70 %, a difference of {glue:text}`gap_30:+.1f` / {glue:text}`gap_50:+.1f` /
# {glue:text}`gap_70:+.1f` points to the better of Vanilla and SFT, and of
# {glue:text}`vs_robustft_30:+.1f` / {glue:text}`vs_robustft_50:+.1f` /
# {glue:text}`vs_robustft_70:+.1f` points to RobustFT. At 70 % the margin is thin, and on a
# single seed it can vanish: there a label is right only {glue:text}`label_right_70:.2f` of the
# time and any one other option {glue:text}`option_right_70:.2f`, and the calibration has
# little to tell them apart with (the docstring of `robustft.noise_aware` describes this
# limit).
#
# The claims of this section as checks (on this one seed; the three-seed means are at the
# end). The bands allow for the spread between seeds, which is several points:

# %%
if S.offline:
    for n in NOISE_LEVELS:
        assert (
            mean("robustft_noise_aware", n)
            >= max(mean("vanilla", n), mean("sft", n)) - 0.02
        ), n
        assert mean("robustft_noise_aware", n) >= mean("robustft", n) - 0.02, n
    # where RobustFT loses to SFT
    assert mean("robustft_noise_aware", 30) >= mean("sft", 30) + 0.03
    # the paper's chain below plain SFT at 30 %
    assert mean("sft", 30) > mean("robustft", 30)
    assert mean("sft", 70) < mean("robustft", 70)  # and above it at 70 %
    print(
        "noise-aware within 2 points of, or above, Vanilla, SFT and RobustFT at every"
        " rate; SFT beats RobustFT at 30 % and loses at 70 %: checked"
    )

# %% [markdown]
# ### Detection: precision, recall, F1
#
# Each denoising method flags labels; against the true labels (known offline) its flags have
# a precision, a recall and an F1. RobustFT's checker has high recall and low precision at
# 30 %; confident learning, on the same direct probabilities, flags fewer; the noise-aware
# flags are the Bayes decision "more likely wrong than right".

# %% tags=["nbval-ignore-output"]
det = summary["detection"]
flags = pd.DataFrame(
    {
        (f"{n} %", k): {compare.LABELS[m]: det[n][m][k]["mean"] for m in det[n]}
        for n in det
        for k in ("precision", "recall", "f1")
    }
)
flags.round(3)

# %%
if S.offline:
    for n in NOISE_LEVELS:
        ours, cl = (
            det[str(n)]["robustft_noise_aware"]["f1"]["mean"],
            det[str(n)]["confident_learning"]["f1"]["mean"],
        )
        assert ours >= cl - 0.03, (n, ours, cl)
    print(
        "noise-aware F1 within 3 points of confident learning's or above, at every"
        " rate: checked"
    )

# %% [markdown]
# ### Baselines and ablations
#
# The rows below say what each component is worth *on this benchmark*; where a row beats
# RobustFT or an ablation does not hurt, that is what was measured, and the text says why.

# %% tags=["nbval-ignore-output"]
rows_of = [
    "robustft",
    "wo_selection",
    "wo_checker",
    "wo_reviewer",
    "wo_cer",
    "wo_rel",
    "selfselect",
    "selfrag",
    "noiseal",
    "confident_learning",
]
diff = pd.DataFrame(
    {
        f"{n} %": {
            compare.LABELS[m]: 100 * (mean(m, n) - mean("robustft", n)) for m in rows_of
        }
        for n in NOISE_LEVELS
    }
)
for m in rows_of[1:]:
    # + 0.0: no "-0.0"
    glue(f"d_{m}", round(float(diff.loc[compare.LABELS[m]].mean()), 9) + 0.0)
diff.round(1).rename_axis("points vs RobustFT")

# %% [markdown]
# Two of the explanations below need the runs themselves. For **w/o Selection**: which
# relabels does β = 0.5 drop, how often are they right, and how well does the entropy rank
# them (the AUROC of "entropy says wrong", as in chapter 5)? Against that, the base model's
# own answer to the same questions (the direct expert's) — what a dropped sample leaves the
# model with. For **SelfSelect**: how many labels each method flags and drops.

# %% tags=["nbval-ignore-output"]
relabels = pd.concat(
    [
        pd.DataFrame(
            [
                {
                    "noise (%)": n,
                    "entropy": np.nan if p["entropy"] is None else p["entropy"],
                    "stage": p["stage"],
                    "right": p["relabel"] == s.clean_answer,
                    "base model right": p["direct"] == s.clean_answer,
                }
                for s, p in zip(trains[n], chains[n].provenance)
                if p["noisy"]
            ]
        )
        for n in NOISE_LEVELS
    ],
    ignore_index=True,
)


def auroc(wrong, entropy):
    """AUROC of "entropy says wrong"; NaN where the relabels are all right or wrong."""
    return roc_auc_score(wrong, entropy) if wrong.nunique() == 2 else np.nan


def selection_stats(t):
    sure = np.isfinite(t["entropy"])
    dropped = t[t["stage"] == "dropped"]
    return pd.Series(
        {
            "relabels": len(t),
            "AUROC": auroc(~t["right"][sure], t["entropy"][sure]),
            "right, kept": t[t["stage"] == "selected"]["right"].mean(),
            "right, dropped": dropped["right"].mean(),
            "base model right, dropped": dropped["base model right"].mean(),
        }
    )


def quartile(entropy):
    """Quartile (1-4) of each entropy within its rate; NaN for under four relabels."""
    if entropy.notna().sum() < 4:
        return pd.Series(np.nan, index=entropy.index)
    return pd.qcut(entropy.rank(method="first"), 4, labels=False) + 1


sel = relabels.groupby("noise (%)").apply(selection_stats).reindex(NOISE_LEVELS)
# quartiles of entropy within each rate, pooled over the rates (chapter 5's table)
relabels["entropy quartile"] = relabels.groupby("noise (%)")["entropy"].transform(
    quartile
)
quartile_right = (
    relabels.groupby("entropy quartile")["right"].mean().reindex([1, 2, 3, 4])
)
glue("sel_auroc_min", float(sel["AUROC"].min()))
glue("sel_auroc_max", float(sel["AUROC"].max()))
glue("q1_right", float(quartile_right.iloc[0]))
glue("q4_right", float(quartile_right.iloc[-1]))
for n in NOISE_LEVELS:
    glue(f"dropped_right_{n}", float(sel.loc[n, "right, dropped"]))
    glue(f"dropped_base_right_{n}", float(sel.loc[n, "base model right, dropped"]))
display(sel.round(3))
quartile_right.rename("right (pooled over the rates)").to_frame().round(3)

# %% tags=["nbval-ignore-output"]
flag_rows = {
    (r["method"], r["noise"]): r["detection"]
    for r in rows
    if r["study"] == "table"
    and r.get("detection")
    and r["method"] in ("robustft", "selfselect")
}
flag_counts = pd.DataFrame.from_dict(
    orient="index",
    data={
        f"{n} %": {
            "training samples": flag_rows[("robustft", n)]["n"],
            "RobustFT: flagged": flag_rows[("robustft", n)]["flagged"],
            "RobustFT: kept": flag_rows[("robustft", n)]["kept"],
            "SelfSelect: flagged (and dropped)": flag_rows[("selfselect", n)][
                "flagged"
            ],
            "SelfSelect: kept": flag_rows[("selfselect", n)]["kept"],
            "SelfSelect: precision of its flags": flag_rows[("selfselect", n)][
                "precision"
            ],
        }
        for n in NOISE_LEVELS
    },
)
for n in NOISE_LEVELS:
    glue(f"ss_kept_{n}", int(flag_rows[("selfselect", n)]["kept"]))
    glue(f"ss_flagged_{n}", int(flag_rows[("selfselect", n)]["flagged"]))
    glue(f"rf_flagged_{n}", int(flag_rows[("robustft", n)]["flagged"]))
    glue(f"rf_kept_{n}", int(flag_rows[("robustft", n)]["kept"]))
    glue(f"ss_precision_{n}", float(flag_rows[("selfselect", n)]["precision"]))
glue("n_train", int(flag_rows[("robustft", NOISE_LEVELS[0])]["n"]))
flag_counts.round(3)

# %% [markdown]
# Averaged over the three noise rates, relative to RobustFT (points). Several rows beat it,
# and several ablations do not hurt; on this benchmark that is what was measured, and each
# has a reason:
#
# - **w/o Selection** ({glue:text}`d_wo_selection:+.1f`): the entropy does rank the relabels
#   (AUROC {glue:text}`sel_auroc_min:.2f`–{glue:text}`sel_auroc_max:.2f`; the surest quarter is
#   right {glue:text}`q1_right:.2f` of the time, the least sure {glue:text}`q4_right:.2f`, about
#   a guess among four options, as in chapter 5). But β = 0.5 drops the whole less sure half,
#   and that half is right {glue:text}`dropped_right_30:.2f` / {glue:text}`dropped_right_50:.2f`
#   / {glue:text}`dropped_right_70:.2f` of the time at 30 / 50 / 70 %, while the base model's
#   own answer to the same questions — what a dropped sample leaves the model with — is right
#   {glue:text}`dropped_base_right_30:.2f` / {glue:text}`dropped_base_right_50:.2f` /
#   {glue:text}`dropped_base_right_70:.2f` of the time. Keeping them teaches about as many
#   right facts as dropping them leaves, or more; selection pays only when the dropped
#   relabels are worse than what the model would answer without them.
# - **w/o Checker** ({glue:text}`d_wo_checker:+.1f`): the reasoning expert alone flags fewer
#   labels than the rule "both experts must agree", so fewer right labels are thrown away; the
#   consistency check buys recall the benchmark does not need (the checker's recall is
#   already near 1).
# - **w/o Reviewer** ({glue:text}`d_wo_reviewer:+.1f`): without the review step the CER answer
#   stands even where the step-by-step expert knew better (the two-hop questions); this
#   ablation hurts, as in the paper.
# - **w/o CER** ({glue:text}`d_wo_cer:+.1f`): worked examples help on the residences of
#   unseen people (housemates share a city), but few of those relabels survive the review
#   and the selection, so removing them changes little here — on this seed it even helps a
#   little, since the question alone gives the model's own (often unchanged) answer.
# - **w/o REL** ({glue:text}`d_wo_rel:+.1f`): the direct expert alone flags fewer labels (as
#   w/o Checker) but misses the two-hop questions that only step-by-step recall answers; the
#   two effects roughly cancel, and the loss shows at high noise.
# - **SelfSelect** ({glue:text}`d_selfselect:+.1f`): the toy model never saw a Y/N judgement
#   in pre-training, so its verdicts are close to arbitrary. It flags and drops
#   {glue:text}`ss_flagged_30:d` / {glue:text}`ss_flagged_50:d` / {glue:text}`ss_flagged_70:d`
#   of the {glue:text}`n_train:d` labels at 30 / 50 / 70 % — about as many whatever the
#   noise — with a precision of
#   {glue:text}`ss_precision_30:.2f` / {glue:text}`ss_precision_50:.2f` /
#   {glue:text}`ss_precision_70:.2f` — close to the noise rate itself, as random flags would
#   be, so the labels it keeps are about as noisy as before. RobustFT's checker flags
#   {glue:text}`rf_flagged_30:d` / {glue:text}`rf_flagged_50:d` / {glue:text}`rf_flagged_70:d`,
#   but relabels them and trains on {glue:text}`rf_kept_30:d` / {glue:text}`rf_kept_50:d` /
#   {glue:text}`rf_kept_70:d` samples, SelfSelect on {glue:text}`ss_kept_30:d` /
#   {glue:text}`ss_kept_50:d` / {glue:text}`ss_kept_70:d`. SelfSelect is plain SFT on a
#   smaller noisy set: on this seed above RobustFT at 30 %, as SFT is, and near SFT's loss at
#   70 % (SFT {glue:text}`sft_70:.3f`).
# - **SelfRAG** ({glue:text}`d_selfrag:+.1f`): the training and test splits ask about the
#   same facts, so the retrieved references include the very fact, labelled right 1 − ε of
#   the time; a test-time method that never trains holds near Vanilla at every rate.
# - **NoiseAL** ({glue:text}`d_noiseal:+.1f`) and **confident learning**
#   ({glue:text}`d_confident_learning:+.1f`): both read the model's probability of each label.
#   Confident learning flags fewer labels than RobustFT's checker at every rate, NoiseAL from
#   50 % on, and NoiseAL keeps its confident relabels; both still take "the model guesses"
#   for "the label is wrong" on part of the unseen facts.

# %%
if S.offline:
    # the entropy does rank the relabels (chapter 5)
    assert (sel["AUROC"] >= 0.7).all(), sel
    assert quartile_right.iloc[0] >= 0.6 and quartile_right.iloc[-1] <= 0.35, (
        quartile_right
    )
    # dropping gains nothing
    right_dropped = sel["right, dropped"], sel["base model right, dropped"]
    assert (right_dropped[0] >= right_dropped[1] - 0.03).all(), sel  # no gain
    ss = [flag_rows[("selfselect", n)] for n in NOISE_LEVELS]
    for n, d in zip(
        NOISE_LEVELS, ss
    ):  # SelfSelect's flags: about as precise as random ones
        assert abs(d["precision"] - n / 100) < 0.1, (n, d)
    assert (
        max(d["flagged"] for d in ss) - min(d["flagged"] for d in ss)
        <= 0.05 * ss[0]["n"]
    ), ss  # whatever the noise
    assert (
        mean("selfselect", 30) > mean("robustft", 30)
        and abs(mean("selfselect", 70) - mean("sft", 70)) < 0.03
    )
    print(
        "the entropy ranks the relabels (AUROC >= 0.7), but the half that β = 0.5"
        " drops is right at least about as often as the base model's own answer;"
        " SelfSelect flags about as many labels at every rate, about as precisely as"
        " random flags, and behaves like SFT: checked"
    )

# %% [markdown]
# ## Sensitivity to β and k (Figure 3)

# %% tags=["nbval-ignore-output"]
fig = compare.plot_sensitivity(summary)
sens = summary.get("sensitivity", {})
if sens:
    beta_acc = {float(b): v for b, v in sens["beta"].items()}
    k_acc = {int(k): v for k, v in sens["k"].items()}
    glue("sens_noise", sens["noise"])
    glue("sens_beta_default", beta_acc[base.beta])
    glue("sens_beta_1", beta_acc[1.0])
    glue("sens_k_default", k_acc[base.k])
    glue("sens_k_best", max(k_acc.values()))
    glue("sens_k_best_at", max(k_acc, key=k_acc.get))
    glue("sens_k_1", k_acc[1])
    display(
        pd.concat(
            {
                "β": pd.Series(sens["beta"], dtype=float),
                "k": pd.Series(sens["k"], dtype=float),
            },
            names=["parameter", "value"],
        )
        .rename(f"accuracy at {sens['noise']} % noise (seed {sens['seed']})")
        .to_frame()
        .round(3)
    )

# %% [markdown]
# At {glue:text}`sens_noise:d` % noise the paper's settings are not the best points on this
# benchmark. β = 0.5 gives {glue:text}`sens_beta_default:.3f`; keeping every relabel (β = 1,
# the ablation w/o Selection) gives {glue:text}`sens_beta_1:.3f`, for the reason the
# w/o Selection bullet above gives: the relabels that β drops are right about as often as what
# the model answers without them. k = 3 gives {glue:text}`sens_k_default:.3f`, k =
# {glue:text}`sens_k_best_at:d` gives {glue:text}`sens_k_best:.3f`, and k = 1
# {glue:text}`sens_k_1:.3f`: no trend, so what k changes here is which relabels happen to come
# out right, not how well the worked examples work.
#
# Each point is one run on one world. The grey band is the default configuration over this
# chapter's run seeds at the same rate ({glue:text}`stab_rf_min:.3f` to
# {glue:text}`stab_rf_max:.3f`, the stability study below), and the y-axis spans 15 points, so
# a difference of two or three points is drawn at its size rather than stretched over the
# whole plot. Between benchmark seeds (another world and toy model) methods move by more than
# between run seeds — the three-seed table at the end has standard deviations of up to
# {glue:text}`three_std_max:.3f` — so one seed cannot rank these settings. The three-seed run
# does compare one pair at every rate: w/o Selection (β = 1) against RobustFT (β = 0.5), ahead
# by {glue:text}`three_wo_sel_min:+.1f` to {glue:text}`three_wo_sel_max:+.1f` points on
# average. So β = 1 is at least as good as β = 0.5 here; the paper's β = 0.5 and k = 3 are its
# settings, not optima this benchmark shows.

# %%
if S.offline:
    # keeping every relabel does not hurt
    assert beta_acc[1.0] >= beta_acc[base.beta] - 0.01, beta_acc
    assert max(k_acc.values()) >= k_acc[base.k], k_acc
    print("β = 1 at least as good as β = 0.5 (within a point) on this seed: checked")

# %% [markdown]
# ## Perplexity of the gold answers (Figure 4)
#
# `robustft.perplexity(lm, samples)` is the perplexity of each test question's right answer
# under a model; lower means the fine-tuned model finds the right answers more natural.
# Training on wrong labels raises it (SFT as the noise rises); the methods that drop samples
# leave those facts as the base model had them, near Vanilla's perplexity. SelfRAG trains
# nothing and has none.

# %% tags=["nbval-ignore-output"]
fig = compare.plot_perplexity(summary)
ppl = pd.DataFrame(
    {
        f"{n} %": {
            compare.LABELS[m]: v["mean"] for m, v in summary["perplexity"][n].items()
        }
        for n in summary["perplexity"]
    }
)
ppl.round(2)

# %%
if S.offline:
    p = {
        n: {m: v["mean"] for m, v in summary["perplexity"][str(n)].items()}
        for n in NOISE_LEVELS
    }
    sft_ppl = [p[n]["sft"] for n in NOISE_LEVELS]
    # more wrong labels, less likely right answers
    assert all(a < b for a, b in zip(sft_ppl, sft_ppl[1:])), sft_ppl
    assert all(
        p[n]["robustft_noise_aware"] <= p[n]["sft"] + 0.05 for n in NOISE_LEVELS
    ), p
    # right labels learnt: right answers likelier
    assert p[30]["robustft_noise_aware"] < p[30]["vanilla"] - 0.2, p
    print(
        "perplexity: SFT's rises with the noise; the noise-aware model's is at most"
        " SFT's (+0.05) at every rate and well below Vanilla's at 30 %: checked"
    )

# %% [markdown]
# ## Categories (Figure 5)
#
# Offline the categories are the benchmark's three question kinds — where someone lives, a
# trade, and the two-hop mentor question; the paper's ARC files have one category for all
# their questions (so with them the numbers of the next paragraph read "nan"). The figure
# and the table show the middle noise rate.

# %% tags=["nbval-ignore-output"]
fig = compare.plot_categories(summary)
# the middle noise rate
mid = list(summary["categories"])[len(summary["categories"]) // 2]
cats = pd.DataFrame(
    {
        compare.LABELS[m]: summary["categories"][mid][m]
        for m in ("vanilla", "sft", "robustft", "robustft_noise_aware")
    }
)
glue("cat_noise", int(mid))
for m, col in (
    ("vanilla", "Vanilla"),
    ("sft", "SFT"),
    ("robustft", "RobustFT"),
    ("na", "RobustFT noise-aware (ours)"),
):
    for c in CATEGORIES:  # the offline question kinds the prose names: nan on other data
        glue(f"cat_{m}_{c}", float(cats.loc[c, col]) if c in cats.index else float("nan"))
# which right labels the checker flags, by question kind (at the same rate)
right = facts[(facts["noise (%)"] == int(mid)) & facts["label right"]]
right_flagged = right.groupby("category")["flagged"].mean()
glue("mentor_right_flagged", float(right_flagged.get("mentor", np.nan)))
glue("other_right_flagged", float(right_flagged.drop("mentor", errors="ignore").max()))
cats["RobustFT: right labels flagged"] = right_flagged
cats.rename_axis(f"question kind, at {mid} % noise").round(3)

# %% [markdown]
# At {glue:text}`cat_noise:d` % noise, fine-tuning on the noisy labels (SFT) costs most on the
# residence questions ({glue:text}`cat_sft_residence:.3f` against Vanilla's
# {glue:text}`cat_vanilla_residence:.3f`), where the base model knows most, and gains on the
# two-hop mentor questions ({glue:text}`cat_sft_mentor:.3f` against
# {glue:text}`cat_vanilla_mentor:.3f`), where it knows least. RobustFT keeps the residences
# ({glue:text}`cat_robustft_residence:.3f`) but gains less on the mentor questions
# ({glue:text}`cat_robustft_mentor:.3f`): its checker flags {glue:text}`mentor_right_flagged:.2f`
# of the *right* mentor labels, against at most {glue:text}`other_right_flagged:.2f` of the
# other kinds (chapter 3: the direct expert, answering at once, often misses the first hop).
# The noise-aware variant gains most on the mentor questions
# ({glue:text}`cat_na_mentor:.3f`) and on trades ({glue:text}`cat_na_trade:.3f`, Vanilla
# {glue:text}`cat_vanilla_trade:.3f`), and holds the residences
# ({glue:text}`cat_na_residence:.3f`).

# %%
if S.offline:
    c = cats
    # noisy labels cost known facts
    assert c.loc["residence", "SFT"] < c.loc["residence", "Vanilla"] - 0.05, c
    assert c.loc["mentor", "SFT"] > c.loc["mentor", "Vanilla"] + 0.05, c
    assert c.loc["residence", "RobustFT"] >= c.loc["residence", "Vanilla"] - 0.03, c
    assert c.loc["mentor", "RobustFT"] < c.loc["mentor", "SFT"], c
    assert right_flagged["mentor"] > right_flagged.drop("mentor").max() + 0.1, (
        right_flagged
    )
    gain = c["RobustFT noise-aware (ours)"] - c["Vanilla"]
    assert gain.idxmax() == "mentor" and gain["residence"] >= -0.05, gain
    print(
        f"at {mid} %: SFT loses residences and gains mentors; RobustFT keeps"
        " residences, gains less on mentors and flags right mentor labels most; the"
        " noise-aware variant gains most on mentors: checked"
    )

# %% [markdown]
# ## Stability over run seeds (Figure 6)
#
# A *run seed* seeds the noise injection and the fine-tuning; the world and the toy model stay
# those of benchmark seed 0. This chapter runs three run seeds, its time budget.
# `robustft compare` runs five (0–4) by default, and so did the committed run read at the end of
# the chapter (`results/compare-cpu-2-threads`, made over benchmark seeds 0–2, with its
# stability study on benchmark seed 0).

# %% tags=["nbval-ignore-output"]
fig = compare.plot_stability(summary)
stab = summary.get("stability", {}).get("methods", {})
if stab:
    for m, key in (("sft", "sft"), ("robustft", "rf"), ("robustft_noise_aware", "na")):
        glue(f"stab_{key}_min", min(stab[m]["values"]))
        glue(f"stab_{key}_max", max(stab[m]["values"]))
    glue("stab_std_max", max(v["std"] for v in stab.values()))
    glue("stab_noise", summary["stability"]["noise"])
    glue("stab_seeds", ", ".join(map(str, summary["stability"]["run_seeds"])))
(
    pd.DataFrame(
        {
            compare.LABELS[m]: {
                "mean": v["mean"],
                "std": v["std"],
                "min": min(v["values"]),
                "max": max(v["values"]),
            }
            for m, v in stab.items()
        }
    )
    .T.rename_axis(
        f"at {summary['stability']['noise']} % noise, run seeds "
        f"{', '.join(map(str, summary['stability']['run_seeds']))}"
    )
    .round(3)
)

# %% [markdown]
# Over run seeds {glue:text}`stab_seeds` at {glue:text}`stab_noise:d` % noise the three
# methods never change places: SFT lies between {glue:text}`stab_sft_min:.3f` and
# {glue:text}`stab_sft_max:.3f`, RobustFT between {glue:text}`stab_rf_min:.3f` and
# {glue:text}`stab_rf_max:.3f`, the noise-aware variant between {glue:text}`stab_na_min:.3f`
# and {glue:text}`stab_na_max:.3f`; no standard deviation exceeds
# {glue:text}`stab_std_max:.3f`. The run seed moves a method less than the benchmark seed
# does (another world and toy model): the three-seed table below has standard deviations up to
# {glue:text}`three_std_max:.3f`. Differences of a point or two on one seed, as in the
# sensitivity study, are therefore not rankings.

# %%
if S.offline:
    # a few points at most between run seeds
    assert all(v["std"] < 0.05 for v in stab.values()), stab
    v = {m: stab[m]["values"] for m in ("sft", "robustft", "robustft_noise_aware")}
    assert max(v["sft"]) < min(v["robustft"]) and max(v["robustft"]) < min(
        v["robustft_noise_aware"]
    ), v
    print(
        "every method within a few points across run seeds, and SFT < RobustFT <"
        " noise-aware in every run: checked"
    )

# %% [markdown]
# ## Three seeds (`robustft compare --seeds 0 1 2`)
#
# The chapter ran one seed. The command line runs all three and writes `compare.json`; the
# run below was made on a 2-core CPU and is kept in the repository. Its means ± std over
# seeds 0–2:

# %%
name = Path("results") / "compare-cpu-2-threads" / "compare.json"
found = [
    p / name
    for p in (Path.cwd().parent, Path(robustft.__file__).resolve().parents[1])
    if (p / name).exists()
]
# absent outside a checkout (e.g. on Colab)
three = json.loads(found[0].read_text()) if found else None
if three is None:
    print(
        f"{name} is not in this installation: clone the repository to read the"
        " three-seed run"
    )
else:
    display(
        pd.DataFrame(
            {
                f"{n} %": {
                    compare.LABELS[m]: f"{v['mean']:.3f} ± {v['std']:.3f}"
                    for m, v in three["noise"][n].items()
                }
                for n in three["noise"]
            }
        )
    )
    glue(
        "three_std_max",
        max(v["std"] for row in three["noise"].values() for v in row.values()),
    )
    wo_sel = [
        100 * (row["wo_selection"]["mean"] - row["robustft"]["mean"])
        for row in three["noise"].values()
    ]
    glue("three_wo_sel_min", min(wo_sel))
    glue("three_wo_sel_max", max(wo_sel))

# %%
if three is not None:
    m3 = {
        n: {m: v["mean"] for m, v in three["noise"][n].items()} for n in three["noise"]
    }
    for n, row in m3.items():
        assert row["robustft_noise_aware"] >= max(row["vanilla"], row["sft"]) + 0.03, (
            n,
            row,
        )
        assert row["robustft_noise_aware"] >= row["robustft"] - 0.01, (n, row)
        f1 = {
            m: three["detection"][n][m]["f1"]["mean"]
            for m in ("robustft_noise_aware", "confident_learning")
        }
        assert f1["robustft_noise_aware"] >= f1["confident_learning"], (n, f1)
        # β = 1 at least as good as β = 0.5
        assert row["wo_selection"] >= row["robustft"] - 0.005, (n, row)
    print(
        "three seeds: noise-aware ≥ max(Vanilla, SFT) + 3 points and ≥ RobustFT − 1"
        " point at every rate, its F1 ≥ confident learning's, and w/o Selection ≥"
        " RobustFT: checked"
    )

# %% [markdown]
# ## Summary
#
# - `robustft.compare.run` measures every row of the paper's Tables 1–3 and the analyses of
#   its Figures 3–6 on the offline benchmark; `robustft compare --out DIR` does the same from
#   the command line and writes `compare.json` and the figures.
# - The ablations are settings of `DenoiseConfig` (`DenoiseConfig().ablation("wo_cer")`); the
#   baselines take and return what `robustft.denoise` does.
# - On this benchmark the paper's checker cannot tell a wrong label from a fact the model does
#   not know, and loses to plain SFT at 30 % noise. Estimating the noise rate and the experts'
#   reliability from the data, and keeping each label by its posterior, fixes that on this
#   run: {glue:text}`na_verdict`.
#
# **Exercises.** (1) Run the noise-aware variant with `noise_rate` given (the true 0.3) in
# `label_posterior`: how much of its gain is the estimate's? (2) Give the posterior the CER
# answers as a third expert; why must its reliability be estimated on samples selected without
# looking at the label? (3) Which of the ablations would you expect to hurt on a benchmark
# where the model knows every fact, and why?
