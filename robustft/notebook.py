"""Small helpers the book's notebooks share, and the one setting that says where the book lives.

- `REPOSITORY`: the address of the repository this book is published from, the one place it
  is set. Empty by default: no address is assumed, because whoever owns an assumed address
  would run their code in every reader's Colab session. The places that must hold the
  address literally (each chapter's first cell, which runs before the package is installed;
  `_config.yml`; the README) are written from it by ``python -m robustft.notebook``, and
  ``tests/test_repository.py`` checks that they agree with it.
- `COLAB_INSTALL_CELL`: the first code cell of every chapter, verbatim. With a repository it
  installs the package from there when the notebook runs on Colab; without one it installs
  nothing and says how to. Elsewhere it does nothing. It cannot import anything from this
  package, since on Colab the package is not there yet.
- `glue`: hands a value measured in the notebook to the book's prose (MyST-NB's
  ``{glue:text}`` role), so no number in a chapter's text is typed in. Without MyST-NB (on
  Colab) it does nothing: the value is printed by the cell anyway.
- `setup`: a chapter's whole set-up in one call — the model, the test set and the noisy
  training sets of its mode (`MODES`), as an `robustft.experiments.Experiment` whose `row`
  stores and resumes every fine-tuning result.

A publisher sets the repository from the repository's root with::

    python -m robustft.notebook --repository URL   # URL: https address of a GitHub repository
    python -m robustft.notebook --repository ""    # back to none: no buttons, nothing installed

It rewrites `REPOSITORY` below and everything derived from it; without ``--repository`` it
re-derives everything from the value written below.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# The one setting: the https address of the GitHub repository the book is published from
# (Colab opens notebooks from GitHub), or "" for none. Set it with
# `python -m robustft.notebook --repository URL`, which also rewrites what is derived from it.
REPOSITORY = ""

# The branch the launch buttons open and the install cell installs from, so that on Colab the
# notebook and the package come from the same commit line.
BRANCH = "main"
# The extras a notebook needs on Colab (Colab brings torch): GPU, retrieval, comparison.
EXTRAS = "gpu,embed,compare"
# Colab's own address, the launch buttons' target (not this project's).
COLAB_URL = "https://colab.research.google.com"


def install_cell(repository: str) -> str:
    """The first code cell of every chapter for `repository` ("" for none)."""
    if repository:
        return f'''\
# On Colab: install robustft with its GPU, retrieval and comparison extras from the
# repository this book is published from (Colab brings torch). Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "robustft[{EXTRAS}] @ git+{repository}@{BRANCH}"], check=True)'''
    # No address, so nothing to install from: the reader brings their own copy.
    return f'''\
# On Colab: this copy of the book names no repository to install robustft from,
# so this cell installs nothing and says how to. Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    print("This copy of the book names no repository to install robustft from.\\n"
          "Clone or upload your copy of the robustft repository into this session,\\n"
          'then run in a cell:  %pip install "./robustft[{EXTRAS}]"')'''


COLAB_INSTALL_CELL = install_cell(REPOSITORY)


def readme_section(repository: str) -> str:
    """The README's Colab instructions for `repository` (between the markers below)."""
    if repository:
        return f'''\
This book is published from {repository} (`REPOSITORY` in `robustft/notebook.py`): every
chapter page has an "open in Colab" launch button and a repository button, and on Colab each
notebook's first cell installs the package from there (branch `{BRANCH}`). Elsewhere the cell
does nothing. On any machine:

```bash
git clone {repository} robustft && pip install "./robustft[{EXTRAS}]"   # keeps Colab's torch
```'''
    return f'''\
This copy names no repository (`REPOSITORY` in `robustft/notebook.py` is empty): the book has
no "open in Colab" or repository buttons, and on Colab each notebook's first cell installs
nothing and says how to. Elsewhere the cell does nothing. Clone or upload your copy of this
repository, then:

```bash
pip install "./robustft[{EXTRAS}]"   # keeps Colab's torch
```'''


# The README's derived part sits between these two lines.
README_BEGIN = "<!-- Written by `python -m robustft.notebook` from REPOSITORY in robustft/notebook.py. -->"
README_END = "<!-- End of the part written by `python -m robustft.notebook`. -->"


def _config_values(repository: str) -> dict[tuple[str, str], str]:
    """(section, key) -> YAML value in _config.yml for `repository`: buttons only with one."""
    return {
        ("repository", "url"): json.dumps(repository),
        ("repository", "branch"): BRANCH,
        ("launch_buttons", "colab_url"): json.dumps(COLAB_URL if repository else ""),
        ("html", "use_repository_button"): "true" if repository else "false",
    }


_SETTING_LINE = re.compile(r'^REPOSITORY = (".*")$', flags=re.M)


def read_repository(root: Path) -> str:
    """The `REPOSITORY` written in robustft/notebook.py under `root`, read as text: the
    imported module may be another copy."""
    m = _SETTING_LINE.search((root / "robustft" / "notebook.py").read_text())
    if m is None:
        raise ValueError(f"{root / 'robustft' / 'notebook.py'}: no line `REPOSITORY = \"...\"`")
    return ast.literal_eval(m.group(1))


def _check_repository(repository: str) -> str:
    """`repository` when it is "" or an https address of the form https://HOST/OWNER/NAME;
    ValueError otherwise. Colab's launch button needs a GitHub repository; Jupyter Book's
    build stops on a host it does not know."""
    if repository == "":
        return repository
    if not re.fullmatch(r"https://[A-Za-z0-9.-]+/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repository) \
            or repository.endswith(".git"):
        raise ValueError(f"--repository {repository!r}: expected https://HOST/OWNER/NAME "
                         "(the repository's page, no .git, no trailing slash) or an empty string")
    return repository


def _first_code_cell_py(text: str, source: str) -> str:
    """`text` (a py:percent notebook) with its first code cell's source replaced by `source`."""
    lines = text.split("\n")
    markers = [i for i, line in enumerate(lines) if line.startswith("# %%")]
    start = next(i for i in markers if "[markdown]" not in lines[i] and "[raw]" not in lines[i])
    end = next((i for i in markers if i > start), len(lines))
    while end > start + 1 and lines[end - 1] == "":  # keep the blank lines before the next cell
        end -= 1
    return "\n".join(lines[:start + 1] + source.split("\n") + lines[end:])


def _first_code_cell_ipynb(text: str, source: str) -> str:
    """`text` (an .ipynb) with its first code cell's source replaced by `source`; every other
    byte, outputs included, stays as it is (Jupyter writes JSON with indent 1, as here)."""
    nb = json.loads(text)
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    cell["source"] = source.splitlines(keepends=True)
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def _config(text: str, repository: str) -> str:
    for (section, key), value in _config_values(repository).items():
        # The key's line inside its section: the section's own lines are indented.
        pattern = re.compile(rf"(^{section}:\n(?:[ #].*\n|\n)*?  {key}: ).*$", flags=re.M)
        text, n = pattern.subn(lambda m: m.group(1) + value + "  # derived", text)
        if n != 1:
            raise ValueError(f"_config.yml: expected one `{key}:` line under `{section}:`, found {n}")
    return text


def _readme(text: str, repository: str) -> str:
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"README.md: the markers {README_BEGIN!r} and {README_END!r} are missing")
    return text[:begin + len(README_BEGIN)] + "\n" + readme_section(repository) + "\n" + text[end:]


def apply_repository(root: Path, repository: str | None = None) -> list[Path]:
    """Write `repository` (None: the one already set) as the setting in robustft/notebook.py
    under `root`, and everything derived from it into the files there; returns the files that
    changed. ValueError for a malformed address or a file that lost its markers."""
    root = Path(root)
    setting = root / "robustft" / "notebook.py"
    repository = read_repository(root) if repository is None else _check_repository(repository)
    cell = install_cell(repository)
    edits = {setting: lambda t: _SETTING_LINE.sub(lambda m: f"REPOSITORY = {json.dumps(repository)}", t),
             root / "_config.yml": lambda t: _config(t, repository),
             root / "README.md": lambda t: _readme(t, repository)}
    for py in sorted((root / "notebooks").glob("[0-9][0-9]_*.py")):
        edits[py] = lambda t: _first_code_cell_py(t, cell)
        edits[py.with_suffix(".ipynb")] = lambda t: _first_code_cell_ipynb(t, cell)
    # Every edit is computed before any file is written: a file that lost its markers leaves
    # all of them as they were, never half derived from the old setting and half from the new.
    texts = {path: (path.read_text(), edit(path.read_text())) for path, edit in edits.items()}
    changed = [path for path, (old, new) in texts.items() if new != old]
    for path in changed:
        path.write_text(texts[path][1])
    return changed


def main(argv: list[str] | None = None) -> int:
    """``python -m robustft.notebook [--repository URL] [--root DIR]``; returns the exit status
    (2 for a malformed address, nothing written then)."""
    parser = argparse.ArgumentParser(
        prog="python -m robustft.notebook",
        description="Set the repository the book is published from (REPOSITORY in "
                    "robustft/notebook.py) and rewrite what is derived from it: each chapter's "
                    "first cell, _config.yml's repository and launch buttons, the README's "
                    "Colab instructions.")
    parser.add_argument("--repository", metavar="URL",
                        help='https address of a GitHub repository, or "" for none (no buttons, '
                             "the install cell installs nothing); default: re-derive from the "
                             "value already set")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository's root (default: .)")
    args = parser.parse_args(argv)
    try:
        changed = apply_repository(args.root, args.repository)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    repository = read_repository(args.root)
    print(f"REPOSITORY = {repository!r}: " + (f"{len(changed)} files rewritten" if changed else "nothing to change"))
    for path in changed:
        print(f"  {path}")
    return 0


# ------------------------------------------------------------------------------- modes
# The three ways every chapter runs, one code path: they differ only in these values.
# - "offline": the offline benchmark's toy model and world, CPU, no download (the default,
#   and what the book shows);
# - "real": the Colab branch on a laptop CPU — SmolLM2-135M-Instruct (shipped in a PyPI
#   wheel, `load_model("smollm2")`) in full precision on small subsets of the official files;
# - "gpu": the Colab branch — a real instruct model in 4 bits on the official files.
# "real" and "gpu" differ only in the model, its quantization and the sizes (rows, epochs,
# batch): tests/test_notebook_modes.py checks it. The official folder is $ROBUSTFT_DATA.
# The "real" sizes are what lets every chapter run on a 2-core CPU within CI's budget (about
# sixty SmolLM2 adapters in all, chapter 7 alone about fifty): 16 training and 16 test rows,
# one epoch at batch 4, which keeps a batch's activations under the 1 GiB above which
# `finetune` turns on gradient checkpointing (which recomputes each forward pass).
MODES = {
    "offline": dict(model="toy", quantize=None, n_train=None, n_test=None, sft={}),
    "real": dict(model="smollm2", quantize=None, n_train=16, n_test=16, sft=dict(epochs=1, batch_size=4)),
    "gpu": dict(model="Qwen/Qwen2.5-1.5B-Instruct", quantize="4bit", n_train=None, n_test=None, sft={}),
}
MODE_ENV, DATA_ENV, RUNS_ENV = "ROBUSTFT_MODE", "ROBUSTFT_DATA", "ROBUSTFT_RUNS"
DEFAULT_DATA = "RobustFT/data/arc"  # a clone of the paper's repository, next to the notebook


@dataclass
class Setup:
    """What a chapter works with (`setup`).

    Attributes:
        mode: "offline", "real" or "gpu".
        experiment: the `Experiment`: its `lm`, `test`, ``train_at(noise, seed)`` and `row`.
        seed: the offline benchmark's seed (the world and its toy model), or the run seed.
        runs: the folder of results shared by the chapters ($ROBUSTFT_RUNS, else "runs").
    """

    mode: str
    experiment: "object"
    seed: int
    runs: Path

    @property
    def lm(self):
        return self.experiment.lm

    @property
    def test(self):
        return self.experiment.test

    @property
    def sft(self) -> dict:
        """The LoRA settings of this mode's fine-tuning (`robustft.finetune` keywords)."""
        return self.experiment.sft

    @property
    def config(self):
        """The `DenoiseConfig` of the RobustFT rows."""
        return self.experiment.config

    @property
    def offline(self) -> bool:
        return self.mode == "offline"

    def train(self, noise: int) -> list:
        """The noisy training set at `noise` % (this setup's seed); 0 gives the clean labels."""
        return self.experiment.train_at(noise, self.seed)

    def passes(self, noise: int) -> Path:
        """The folder of the expert passes on the training set at `noise` %, shared by the
        chapters (``robustft.denoise(..., out=setup.passes(noise))`` resumes from it)."""
        return self.experiment.passes_at(noise)

    def row(self, method: str, noise: int | None = None, **kwargs) -> dict:
        """`Experiment.row` with this setup's seed: the stored result of `method` at
        `noise` %, or train, measure and store it."""
        return self.experiment.row(method, noise, self.seed, **kwargs)

    def out(self, chapter: str) -> Path:
        """The chapter's own results folder, ``runs/<chapter>`` (created)."""
        folder = self.runs / chapter
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def __str__(self) -> str:
        data = ", ".join(f"{k} {v}" for k, v in self.experiment.data.items())
        return f"mode {self.mode!r}: {self.lm.name}, {len(self.test)} test questions ({data})"


def setup(mode: str | None = None, *, seed: int = 0, config=None, n_train: int | None = None,
          n_test: int | None = None, runs: str | Path | None = None, progress: bool = False) -> Setup:
    """A chapter's set-up: the model, the test set and the noisy training sets of `mode`.

    Args:
        mode: "offline", "real" or "gpu" (`MODES`); default $ROBUSTFT_MODE, else "offline".
        seed: offline, the benchmark seed (0, 1, 2 ship); the run seed of fine-tuning too.
        config: the `DenoiseConfig` of the denoising rows (default `DenoiseConfig()`).
        n_train, n_test: override the mode's sizes (a chapter that needs fewer rows).
        runs: the results folder ($ROBUSTFT_RUNS, else "runs"); expert passes are kept in
            ``runs/denoise`` and shared by the chapters.

    Offline the noise is injected (`robustft.inject_noise`, seeded by `seed`) into the
    benchmark's training questions; otherwise it is the official ``noisy/noisyNN.csv`` of
    the folder $ROBUSTFT_DATA (default "RobustFT/data/arc").
    """
    import os

    from .denoise import DenoiseConfig
    from .finetune import SFT

    mode = mode or os.environ.get(MODE_ENV, "offline")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    runs = Path(runs or os.environ.get(RUNS_ENV, "runs"))
    config = config or DenoiseConfig()
    settings = MODES[mode]
    if mode == "offline":
        from .compare import toy_experiment

        exp = toy_experiment(seed, runs / "denoise", runs / "denoise", config=config, progress=progress,
                             log=lambda *a: None)
    else:
        from .bench import official_experiment
        from .model import load_model

        from .progress import library_bars

        with library_bars(enabled=progress):  # no "Loading weights" bar left on the page
            lm = load_model(settings["model"], quantize=settings["quantize"])
        exp = official_experiment(lm, os.environ.get(DATA_ENV, DEFAULT_DATA), runs / "denoise",
                                  n_train=n_train or settings["n_train"] or 10**9,
                                  n_test=n_test or settings["n_test"] or 10**9,
                                  config=config, sft={**SFT, **settings["sft"]},
                                  perplexity=True,  # every mode's rows feed Figure 4
                                  progress=progress, log=lambda *a: None)
    return Setup(mode, exp, seed, runs)


def glue(name: str, value, display: bool = False):
    """`myst_nb.glue(name, value, display=display)` when MyST-NB is installed; returns value.

    In a chapter's Markdown, ``{glue:text}`name:.3f` `` then shows the number this run
    measured. Tag the cell ``nbval-ignore-output`` when the value comes from a model.
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar: MyST-NB formats
        value = value.item()                                            # only Python numbers
    _glue(name, value, display=display)
    return value


if __name__ == "__main__":
    sys.exit(main())
