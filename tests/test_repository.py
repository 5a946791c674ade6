"""The repository address is one setting (`robustft.notebook.REPOSITORY`), empty by default, and
every place that must hold it literally (each chapter's first cell, `_config.yml`, the README)
agrees with it; `python -m robustft.notebook --repository URL` rewrites them all (issue 18)."""
import contextlib
import io
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import jupytext
import pytest
import yaml

from robustft import notebook
from robustft.notebook import (BRANCH, COLAB_URL, EXTRAS, README_BEGIN, README_END, REPOSITORY,
                               apply_repository, install_cell, read_repository, readme_section)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
# Only ever written into a temporary copy: a placeholder, not an address anyone gave.
PLACEHOLDER = "https://example.org/your-fork/robustft"


def _derived_files(root: Path) -> list[Path]:
    """The setting's file and every file written from it."""
    chapters = sorted((root / "notebooks").glob("[0-9][0-9]_*.py"))
    return ([root / "robustft" / "notebook.py", root / "_config.yml", root / "README.md"]
            + chapters + [p.with_suffix(".ipynb") for p in chapters])


@pytest.fixture
def copy(tmp_path):
    """The setting's file and the files derived from it, copied to a temporary root."""
    for src in _derived_files(ROOT):
        dst = tmp_path / src.relative_to(ROOT)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return tmp_path


def _first_code_cells(root: Path) -> dict[str, str]:
    """{file name: source of its first code cell} for every chapter's .py and .ipynb."""
    cells = {}
    for py in sorted((root / "notebooks").glob("[0-9][0-9]_*.py")):
        for path, nb in [(py, jupytext.read(py)), (py.with_suffix(".ipynb"), jupytext.read(py.with_suffix(".ipynb")))]:
            cells[path.name] = next(c.source for c in nb.cells if c.cell_type == "code")
    return cells


def _readme_part(text: str) -> str:
    return text[text.index(README_BEGIN) + len(README_BEGIN):text.index(README_END)].strip("\n")


def test_the_setting_is_read_from_its_one_place():
    """The constant and the file agree (this copy ships with the setting empty: an assumed
    address would run its owner's code in every reader's Colab session; a publisher sets it
    with `python -m robustft.notebook --repository URL`, and every test here still holds)."""
    assert read_repository(ROOT) == REPOSITORY


def test_every_chapter_starts_with_the_cell_derived_from_the_setting():
    cells = _first_code_cells(ROOT)
    assert len(cells) == 2 * len(CHAPTERS) >= 18
    assert all(source == install_cell(REPOSITORY) for source in cells.values()), \
        "run `python -m robustft.notebook`"


def test_config_has_buttons_iff_the_setting_is_given():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["repository"]["url"] == REPOSITORY
    assert cfg["repository"]["branch"] == BRANCH
    assert cfg["launch_buttons"]["colab_url"] == (COLAB_URL if REPOSITORY else "")
    assert cfg["html"]["use_repository_button"] is bool(REPOSITORY)
    # No other launcher would need the address either.
    assert not any(cfg["launch_buttons"].get(k) for k in ("binderhub_url", "jupyterhub_url", "thebe", "deepnote_url"))


def test_readme_colab_instructions_agree_with_the_setting():
    readme = (ROOT / "README.md").read_text()
    assert readme.count(README_BEGIN) == readme.count(README_END) == 1
    assert _readme_part(readme) == readme_section(REPOSITORY)


def test_everything_derived_agrees_with_the_setting(copy):
    """Re-deriving from the setting as written changes nothing: no file was edited by hand."""
    assert apply_repository(copy) == []


def test_no_install_address_outside_the_setting():
    """`git+` (pip installing from a repository) appears only in the setting's module, and in
    the chapters' first cells only when the setting is given."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    holders = set()
    for name in files:
        path = ROOT / name
        if path == Path(__file__).resolve():  # this test names what it looks for
            continue
        if path.is_file() and path.suffix in {".py", ".ipynb", ".md", ".yml", ".yaml", ".toml", ".cfg", ".txt", ""}:
            if "git+" in path.read_text(errors="replace"):
                holders.add(name)
    chapters = {f"notebooks/{p.name}" for p in CHAPTERS} | {f"notebooks/{p.stem}.ipynb" for p in CHAPTERS}
    assert holders == {"robustft/notebook.py"} | (chapters if REPOSITORY else set())


def test_setting_an_address_rewrites_exactly_the_derived_places(copy):
    before = {p: p.read_bytes() for p in _derived_files(copy)}
    assert notebook.main(["--root", str(copy), "--repository", PLACEHOLDER]) == 0

    assert read_repository(copy) == PLACEHOLDER
    cells = _first_code_cells(copy)
    assert all(source == install_cell(PLACEHOLDER) for source in cells.values())
    assert all(f'"robustft[{EXTRAS}] @ git+{PLACEHOLDER}@{BRANCH}"' in source for source in cells.values())
    cfg = yaml.safe_load((copy / "_config.yml").read_text())
    assert cfg["repository"]["url"] == PLACEHOLDER
    assert cfg["launch_buttons"]["colab_url"] == COLAB_URL
    assert cfg["html"]["use_repository_button"] is True
    readme = (copy / "README.md").read_text()
    assert _readme_part(readme) == readme_section(PLACEHOLDER)
    assert f"git clone {PLACEHOLDER} robustft" in readme
    # Every derived file now names the address; nothing else in them changed: in each .ipynb
    # only the first code cell's source differs (outputs, counts and metadata are kept).
    assert {p for p in before if PLACEHOLDER in p.read_text()} == set(before)
    for ipynb in (copy / "notebooks").glob("*.ipynb"):
        old, new = json.loads(before[ipynb]), json.loads(ipynb.read_bytes())
        first = next(i for i, c in enumerate(new["cells"]) if c["cell_type"] == "code")
        assert "".join(old["cells"][first]["source"]) == install_cell(REPOSITORY)
        old["cells"][first]["source"] = new["cells"][first]["source"]
        assert old == new, ipynb.name

    # And back to the setting it had: byte for byte what it was.
    assert notebook.main(["--root", str(copy), "--repository", REPOSITORY]) == 0
    for p, b in before.items():
        assert p.read_bytes() == b, p.name


@pytest.mark.parametrize("bad", ["http://example.org/a/b", f"{PLACEHOLDER}.git", f"{PLACEHOLDER}/",
                                 "example.org/a/b", 'https://example.org/a/b"]); import os; #', "https://example.org/a"])
def test_a_malformed_address_is_refused_and_nothing_is_written(copy, bad, capsys):
    before = {p: p.read_bytes() for p in _derived_files(copy)}
    assert notebook.main(["--root", str(copy), "--repository", bad]) == 2
    assert "expected https://HOST/OWNER/NAME" in capsys.readouterr().err
    assert all(p.read_bytes() == b for p, b in before.items())


def test_a_file_without_its_markers_stops_the_command_before_anything_is_written(copy, capsys):
    readme = copy / "README.md"
    readme.write_text(readme.read_text().replace(README_END, ""))
    before = {p: p.read_bytes() for p in _derived_files(copy)}
    assert notebook.main(["--root", str(copy), "--repository", PLACEHOLDER]) == 2
    assert "README.md: the markers" in capsys.readouterr().err
    assert all(p.read_bytes() == b for p, b in before.items())
    assert read_repository(copy) == REPOSITORY


def _run_cell(source: str, monkeypatch, on_colab: bool) -> tuple[str, list]:
    """Execute an install cell as a notebook would; returns (stdout, subprocess.run calls).
    `subprocess.run` is replaced, so nothing is ever installed here."""
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append((a, k)))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "<install cell>", "exec"), {})
    return out.getvalue(), calls


def test_without_a_repository_the_cell_installs_nothing_and_says_how(monkeypatch):
    cell = install_cell("")
    assert "://" not in cell and "git+" not in cell and "subprocess" not in cell
    printed, calls = _run_cell(cell, monkeypatch, on_colab=True)
    assert calls == []
    assert f'%pip install "./robustft[{EXTRAS}]"' in printed
    assert _run_cell(cell, monkeypatch, on_colab=False) == ("", [])


def test_with_a_repository_the_cell_installs_from_it_on_colab_only(monkeypatch):
    cell = install_cell(PLACEHOLDER)
    printed, calls = _run_cell(cell, monkeypatch, on_colab=True)
    assert printed == ""
    assert calls == [(([sys.executable, "-m", "pip", "install", "-q",
                        f"robustft[{EXTRAS}] @ git+{PLACEHOLDER}@{BRANCH}"],), {"check": True})]
    assert _run_cell(cell, monkeypatch, on_colab=False) == ("", [])
