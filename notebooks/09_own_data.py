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
# # Bring your own data
#
# The earlier chapters ran on the benchmark's samples, already in memory. Your data are in a
# file: a JSONL export, an Alpaca JSON file for LLaMA-Factory, a CSV in the official RobustFT
# shape. This chapter takes such files from disk to a fine-tuned adapter, the way you would
# with your own:
#
# 1. write a small **JSONL** file and an **Alpaca JSON** file, and read them with
#    `robustft.load_samples`;
# 2. denoise them with the **`robustft` command** and with the **Python API**
#    (`robustft.denoise`) — the same code, sharing one run folder;
# 3. look at **what comes out**: the official `denoised.csv`, Alpaca JSON, chat JSONL,
#    per-sample provenance and a summary;
# 4. see what **bad input** gives: an error naming the file, the row and the field, and exit
#    status 2 from the command;
# 5. **fine-tune** on the output, with the project's command or with another trainer (TRL).
#
# Your file does not know which labels are wrong, so neither do ours: the files below carry
# the given answers only. We know the true labels aside (offline we made the noise
# ourselves; the paper's files come with their clean labels), so at the end we can still
# check how many labels denoising fixed; with your data, `result.report` stays empty unless
# you add a `clean_answer` field to the samples you have verified.

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
SEED = 0
NOISE = 30  # percent of wrong labels in the file we write

# %% tags=["hide-input"]
import importlib.util
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

import robustft
from robustft.notebook import MODES, glue, setup

# %% [markdown]
# ## Your data, as files
#
# We stand in for "your data" with the training questions of the mode, {glue:text}`noise`
# % of their answers wrong: offline the benchmark's questions with the noise injected,
# in the other modes the paper's noisy ARC file (a subset of its rows in the real mode). The
# mode's model is the one that denoises them.

# %%
S = setup(MODE, seed=SEED)  # the mode's model, test set and noisy training sets
print(S)
lm, test = S.lm, S.test
noisy = S.train(NOISE)
truth = {s.id: s.clean_answer for s in noisy}  # kept aside: your files have no such thing
OUT = S.out("09_own_data")

# %% [markdown]
# The chapter runs the `robustft` command on the same model. Its `--model` names it: the
# shipped toy model of this seed offline (`toy:0`), otherwise the mode's model, quantized
# as the mode quantizes it.

# %%
# The `robustft` command of this environment (on Colab and in a venv it is on the PATH).
ROBUSTFT = shutil.which("robustft") or str(Path(sys.executable).parent / "robustft")
settings = MODES[S.mode]
MODEL_ARGS = ["--model", f"toy:{SEED}" if S.offline else settings["model"]]
MODEL_ARGS += ["--quantize", settings["quantize"]] if settings["quantize"] else []
# peft reads an attribute that transformers renamed; nothing for a reader to do about it.
QUIET = "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")


def rel(path):
    """A path as printed in this chapter: relative to the results folder."""
    path = Path(path)
    return path.relative_to(S.runs) if path.is_relative_to(S.runs) else path


def robustft_command(*args):
    """Run `robustft ARGS` in the chapter's folder (so it prints short relative paths);
    its stdout and stderr come back as one stream, in the order the command wrote them."""
    command = ["env", f"PYTHONWARNINGS={QUIET}", "PYTHONUNBUFFERED=1", ROBUSTFT]
    done = subprocess.run([*command, *args, "--no-progress"], cwd=OUT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    print(f"$ robustft {' '.join(args)}\n{done.stdout}exit status {done.returncode}")
    return done


print("--model:", " ".join(MODEL_ARGS[1:]))

# %% [markdown]
# **JSONL**, one JSON object per line, is the simplest format to write from any program.
# `load_samples` reads the official CSV's fields: `question`, `options` (a list),
# `answer` (a letter), and an optional `id` and `category`; any other field is kept in
# `sample.extra`.

# %%
jsonl = OUT / "own.jsonl"
with open(jsonl, "w") as f:
    for s in noisy:
        record = {"id": s.id, "question": s.question, "options": list(s.options),
                  "answer": s.answer, "category": s.category}
        f.write(json.dumps(record) + "\n")
print(jsonl.read_text().splitlines()[0])

# %% [markdown]
# **Alpaca JSON** is a list of `{"instruction", "input", "output"}` records. `to_alpaca`
# writes the very prompt the model sees at inference into those three fields and the
# sample's own fields beside them, so the file trains LLaMA-Factory as it is and reads back
# into samples without loss. A bare Alpaca record, without options, is read as a
# short-answer sample (its `output` is the answer).

# %%
alpaca = robustft.to_alpaca(noisy, OUT / "own.alpaca.json")
print(json.dumps(json.loads(alpaca.read_text())[0], indent=1))

bare = OUT / "bare.alpaca.json"
record = {"instruction": "Name the capital of France.", "input": "", "output": "Paris"}
bare.write_text(json.dumps([record]))
print(robustft.load_samples(bare)[0])

# %% [markdown]
# Both files read back as the same samples, with the given labels and nothing else:

# %%
from_jsonl = robustft.load_samples(jsonl)
from_alpaca = robustft.load_samples(alpaca)
key = lambda s: (s.id, s.question, s.options, s.answer, s.category)  # noqa: E731
keys = [key(s) for s in noisy]
assert [key(s) for s in from_jsonl] == [key(s) for s in from_alpaca] == keys
assert all(s.clean_answer is None for s in from_jsonl)
print(f"{len(from_jsonl)} samples in each file, identical; no true labels attached")

# %% [markdown]
# ## Denoising with the command
#
# `robustft denoise --data FILE --model MODEL --out DIR` runs the whole chain: both experts,
# the checker, context-enhanced relabeling and review, and entropy-based selection, with the
# same defaults as `robustft.DenoiseConfig()` (`robustft denoise --help` lists every
# option). Offline `--model toy:0` is the shipped toy model of seed 0; on a GPU it is a Hub
# id with `--quantize 4bit`.

# %% tags=["nbval-ignore-output"]
done = robustft_command("denoise", "--data", jsonl.name, *MODEL_ARGS, "--out", "run")
assert done.returncode == 0

# %% [markdown]
# ## The same with the Python API
#
# `robustft.denoise(samples, lm, config, out=...)` is what the command calls. Pointed at the
# command's run folder, it finds every expert batch already computed there (each batch is
# stored under its pass, model, settings and prompts) and only re-does the cheap array
# stages: the two runs give the same training set.

# %% tags=["nbval-ignore-output"]
result = robustft.denoise(from_jsonl, lm, robustft.DenoiseConfig(), out=OUT / "run",
                          progress=False)
print(f"kept {len(result.samples)} of {len(from_jsonl)} samples; expert batches computed "
      f"{result.stats['computed_batches']}, read back {result.stats['reused_batches']}")
print("report:", result.report)  # None: the file has no true labels

# %%
cli_csv = robustft.load_samples(OUT / "run" / "denoised.csv")
assert [key(s) for s in cli_csv] == [key(s) for s in result.samples]
assert result.stats["computed_batches"] == 0 and result.stats["reused_batches"] > 0
print("the command and the API give the same training set, from the same stored passes:"
      " checked")

# %% [markdown]
# ## What comes out
#
# The run folder holds the training set in three formats and the record of how it was made:
#
# - `denoised.csv`: the official `denoiseNN.csv` shape (`id`, `question`, `answer`,
#   `options`; the file is named `denoiseNN.csv` when the input is an official
#   `noisyNN.csv`);
# - `denoised.alpaca.json` and `denoised.messages.jsonl`: the same samples for LLaMA-Factory
#   and TRL;
# - `provenance.jsonl`: one line per *input* sample — each expert's answer, the flag, the
#   retrieved neighbours, the new label and its entropy, and the stage it ended in;
# - `summary.json` (counts and timings), `config.json` (every setting), `experts.jsonl` (the
#   stored expert batches, from which a later run resumes) and `run.json` (the marker that
#   makes the folder a robustft run folder, which the command may write into again).

# %%
run = OUT / "run"
listing = pd.DataFrame([{"file": str(p.relative_to(run)), "bytes": p.stat().st_size}
                        for p in sorted(run.iterdir()) if p.is_file()])
print(rel(run))
listing[["file"]]

# %%
pd.read_csv(run / "denoised.csv").head()

# %%
first = json.loads((run / "denoised.alpaca.json").read_text())[0]
print(json.dumps(first, indent=1)[:600])
print((run / "denoised.messages.jsonl").read_text().splitlines()[0][:500])

# %% [markdown]
# Provenance says, for every sample, why it is or is not in the training set. A relabeled
# one, for instance:

# %% tags=["nbval-ignore-output"]
lines = (run / "provenance.jsonl").read_text().splitlines()
provenance = [json.loads(line) for line in lines]
example = next(p for p in provenance if p["stage"] == "selected")
print(json.dumps({k: v for k, v in example.items() if k != "reasoning_text"}, indent=1))
print("reasoning:", example["reasoning_text"][:300])

# %% [markdown]
# Because we injected the noise ourselves, we can do what the file cannot: compare the
# labels before and after with the truth. The left panel counts where the samples ended;
# the right one the fraction of right labels in the noisy file and in the denoised set.

# %% tags=["nbval-ignore-output"]
stages = pd.Series([p["stage"] for p in provenance]).value_counts()
stages = stages.reindex(["clean", "selected", "dropped"], fill_value=0)
before = sum(s.answer == truth[s.id] for s in from_jsonl) / len(from_jsonl)
after = sum(s.answer == truth[s.id] for s in result.samples) / len(result.samples)
flagged_wrong = sum(p["noisy"] and p["given"] != truth[p["id"]] for p in provenance)
recall = flagged_wrong / sum(s.answer != truth[s.id] for s in from_jsonl)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
stages.plot.bar(ax=ax1, rot=0, color=["tab:blue", "tab:green", "tab:gray"])
ax1.set_ylabel("samples")
ax1.set_title("where each input sample ended")
ax2.bar(["noisy file", "denoised set"], [before, after],
        color=["tab:orange", "tab:green"])
ax2.set_ylim(0, 1)
ax2.set_ylabel("fraction of right labels")
ax2.set_title("labels against the truth")
fig.tight_layout()
glue("before", before)
glue("after", after)
glue("recall", recall)
glue("kept", len(result.samples))
glue("n_input", len(from_jsonl))
glue("noise", NOISE);

# %% [markdown]
# On the toy model these numbers have bands we can check: the file has exactly the injected
# share of right labels, and the checker, which knows most of the benchmark's facts, flags
# nearly every wrong one and leaves a cleaner set. The bands are the toy's (chapter 3); a real
# model on a few dozen ARC questions has its own, so the checks are made offline only.

# %%
if S.offline:
    assert abs(before - (1 - NOISE / 100)) < 0.01, before
    assert after >= before + 0.05, (before, after)  # denoising leaves fewer wrong labels
    assert recall >= 0.85, recall
    print("the denoised set's labels are right more often than the file's, and most wrong"
          " labels were flagged: checked")

# %% [markdown]
# Of the file's labels {glue:text}`before:.2f` were right; of the
# {glue:text}`kept` samples kept out of {glue:text}`n_input`, {glue:text}`after:.2f` are. The
# checker flagged {glue:text}`recall:.2f` of the wrong labels. With your own data you cannot
# measure this, but you can estimate it: verify a few dozen samples by hand, give them a
# `clean_answer` field, and denoise that subset to get `result.report`.
#
# ## Bad input
#
# Data files break in ordinary ways: a missing field, a letter that names no option, options
# written as a Python list. `load_samples` raises `robustft.DataError`, whose message names
# the file, the row (the line, in JSONL) and the field; it never guesses a fix.

# %%
bad = OUT / "bad.jsonl"
bad.write_text(jsonl.read_text().splitlines()[0] + "\n"
               + json.dumps({"id": "x1", "question": "Where does Ada live?",
                             "options": ["Linsa", "Moro"], "answer": "C"}) + "\n")
try:
    robustft.load_samples(bad)
except robustft.DataError as e:
    print(f"{type(e).__name__}: {e}")
    print(f"file {rel(e.path)}, row {e.row}, field {e.field!r}")
    assert (e.row, e.field) == (2, "answer")

# %% [markdown]
# The command prints the same message on one line, without a traceback, and exits with
# status 2 (a usage error), so a script or a CI job can tell bad data from a crash.

# %%
done = robustft_command("denoise", "--data", bad.name, *MODEL_ARGS, "--out", "bad-run")
assert done.returncode == 2 and "bad.jsonl, row 2, field 'answer'" in done.stdout

# %% [markdown]
# ## Fine-tuning on the output
#
# The denoised files are ordinary SFT data. With this project, `robustft finetune` trains a
# LoRA adapter on them (QLoRA with `--quantize 4bit`; offline `--toy-settings` uses the
# benchmark's LoRA settings) and `robustft evaluate` scores a test file with the adapter:

# %% tags=["nbval-ignore-output"]
robustft.to_official_csv(test, OUT / "test.csv")
# offline the benchmark's LoRA settings; otherwise the mode's epochs and batch size
SFT_ARGS = ["--toy-settings"] if S.offline else [
    "--epochs", str(S.sft["epochs"]), "--batch-size", str(S.sft["batch_size"])]
done = robustft_command("finetune", "--data", "run/denoised.csv", *MODEL_ARGS, *SFT_ARGS,
                        "--out", "lora")
assert done.returncode == 0
done = robustft_command("evaluate", "--data", "test.csv", *MODEL_ARGS,
                        "--adapter", "lora", "--json", "lora-eval.json")
assert done.returncode == 0

# %% tags=["nbval-ignore-output"]
tuned_acc = json.loads((OUT / "lora-eval.json").read_text())["accuracy"]
vanilla_acc = robustft.evaluate(lm, test, progress=False).accuracy
print(f"test accuracy: base model {vanilla_acc:.3f}, with the adapter trained on the"
      f" denoised file {tuned_acc:.3f}")
glue("tuned_acc", tuned_acc)
glue("vanilla_acc", vanilla_acc)
glue("gain_points", 100 * (tuned_acc - vanilla_acc));

# %% [markdown]
# The command saved a plain LoRA adapter folder. Loaded back from Python with
# `load_model(..., adapter=folder)`, it gives the very accuracy the command printed:

# %%
# the set-up's model as it was loaded (lm.info["load_args"]), with the adapter on top
with_adapter = robustft.load_model(**{**lm.info["load_args"],
                                      "adapter": str(OUT / "lora")})
api_acc = robustft.evaluate(with_adapter, test, progress=False).accuracy
assert abs(api_acc - tuned_acc) < 1e-9, (api_acc, tuned_acc)
assert hasattr(with_adapter.model, "peft_config")  # the adapter is really there
print("`robustft evaluate --adapter` and load_model(adapter=...) + evaluate agree:"
      " checked")

# %% [markdown]
# The adapter trained on the denoised file answers {glue:text}`tuned_acc:.3f` of the test
# questions, against {glue:text}`vanilla_acc:.3f` for the base model: a difference of
# {glue:text}`gain_points:+.1f` points over not fine-tuning at all. That is not the comparison
# that decides whether denoising was worth it: the alternative to denoising is plain SFT on
# the noisy file as it is. Chapter 6 makes that comparison over three seeds. At 30 % noise,
# the rate of this file, plain SFT does better than RobustFT: the checker also drops many
# right labels on facts the model has never seen, while the noisy file still has more right
# labels than wrong ones. At 50 and 70 % noise RobustFT is ahead of SFT.
#
# From Python the same fine-tuning is
# `robustft.finetune(lm, robustft.load_samples(run / "denoised.csv"), output_dir=...)`,
# and `robustft.load_model(base, adapter=folder)` loads the adapter back, as above.
#
# **Another trainer.** The chat JSONL is in the format Hugging Face's TRL reads. The cell
# below fine-tunes the mode's model on it with TRL's `SFTTrainer` (QLoRA where the mode
# loads the model in 4 bits), with the mode's LoRA settings. It needs `pip install trl`, and
# a model with a chat template: not the toy model, which has none, so it does not run
# offline. Each record is split into a prompt (the user turn) and a completion (the
# answer), so the loss falls on the answer only — as in `robustft.finetune`.

# %%
if not lm.chat:
    print("the toy model has no chat template: TRL's chat format does not apply")
elif importlib.util.find_spec("trl") is None:
    print("TRL is not installed: `pip install trl` to run this cell")
else:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    chat = load_dataset("json", data_files=str(run / "denoised.messages.jsonl"),
                        split="train")
    chat = chat.map(lambda r: {"prompt": r["messages"][:-1],
                               "completion": r["messages"][-1:]},
                    remove_columns=chat.column_names)
    # a fresh base, loaded as the set-up's model was (QLoRA trains in place)
    base = robustft.load_model(**lm.info["load_args"])
    sft = S.sft  # the mode's epochs, learning rate, batch size and LoRA rank
    trainer = SFTTrainer(
        model=base.model, processing_class=base.tokenizer, train_dataset=chat,
        args=SFTConfig(output_dir=str(OUT / "trl-lora"), num_train_epochs=sft["epochs"],
                       learning_rate=sft["lr"],
                       per_device_train_batch_size=sft["batch_size"],
                       lr_scheduler_type="cosine", warmup_ratio=0.03, logging_steps=10,
                       report_to="none", bf16=torch.cuda.is_available()),
        peft_config=LoraConfig(r=sft["lora_r"], lora_alpha=sft["lora_alpha"],
                               target_modules="all-linear", task_type="CAUSAL_LM"))
    trainer.train()
    trainer.save_model(str(OUT / "trl-lora"))
    trl_lm = robustft.load_model(**{**lm.info["load_args"],
                                    "adapter": str(OUT / "trl-lora")})
    trl_acc = robustft.evaluate(trl_lm, test, progress=False).accuracy
    print("TRL adapter, test accuracy:", trl_acc)

# %% [markdown]
# In [the chapter run with SmolLM2 on the paper's ARC files](../real-mode/09_own_data.ipynb)
# every step above runs on SmolLM2-135M and a few rows of the paper's noisy ARC file:
# the files written and read back, the command and the API giving the same training set from
# the same stored passes, the outputs, the errors on bad input, the adapter trained by the
# command and loaded back with the same accuracy. What a 135M model cannot show is that
# denoising pays: it answers ARC questions not much better than chance, so its experts'
# verdicts on a label carry little information, and a few dozen test questions cannot
# separate a fine-tune from the base model.

# %% [markdown]
# ## Summary
#
# - `load_samples` reads JSONL, JSON, Alpaca JSON and the official CSV; write whichever is
#   easiest, with `question`, `options` and `answer` (a letter) per sample.
# - `robustft denoise --data FILE --model MODEL --out DIR` and `robustft.denoise(...,
#   out=DIR)` are the same chain and share the stored expert passes; a re-run resumes.
# - The run folder holds the denoised set as official CSV, Alpaca JSON and chat JSONL, and
#   `provenance.jsonl` says what happened to every sample.
# - Bad input stops with a `DataError` naming the file, row and field; the command exits
#   with status 2.
# - Fine-tune on the output with `robustft finetune` or with any trainer that reads chat
#   JSONL.
#
# **Exercises.** (1) Write the same samples as a CSV with `robustft.to_official_csv` and
# denoise it into a new folder with `--k 5 --beta 0.8`: how many samples are kept, and how
# many of their labels are right? (2) Run the command again on `own.jsonl` with `--out run`
# and read the expert timings it prints: what did the second run compute? (3) Add a
# `clean_answer` field to the first 50 lines of `own.jsonl` (from `truth`) and denoise
# only those: compare `result.report` with the numbers measured above on the whole file.
