"""The book's structure: paired notebooks in sync, the Colab cell, the table of contents, and a
full `jupyter-book build -W` (warnings are errors) whose pages carry what a reader needs."""
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import jupytext
import nbformat
import pytest
import yaml

from robustft.notebook import BRANCH, COLAB_INSTALL_CELL, REPOSITORY

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CHAPTERS = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def _cells(nb):
    """(type, source) of each cell: what the pair must agree on (outputs and metadata may differ)."""
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_every_chapter_is_a_pair():
    ipynbs = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert CHAPTERS == ipynbs
    assert len(CHAPTERS) >= 2


@pytest.mark.parametrize("name", CHAPTERS)
def test_pair_in_sync_and_starts_with_the_colab_cell(name):
    py = jupytext.read(NOTEBOOKS / f"{name}.py")
    ipynb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert _cells(py) == _cells(ipynb), f"run `jupytext --sync notebooks/{name}.py`"
    code = [c for c in ipynb.cells if c.cell_type == "code"]
    assert code[0].source.strip() == COLAB_INSTALL_CELL.strip()
    assert "parameters" in code[1].metadata.get("tags", []), "the second code cell is the parameters cell"
    # Stored outputs: the book renders them (execute_notebooks: off), nbval re-runs them.
    assert all(c.get("execution_count") for c in code[1:]), "store the notebook executed"
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), "at least one plot"


def test_toc_lists_every_chapter_once():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert sorted(f for f in files if f.startswith("notebooks/")) == [f"notebooks/{c}" for c in CHAPTERS]
    assert len(files) == len(set(files))
    for f in files:
        assert (ROOT / "book" / f"{f}.md").exists() or (ROOT / "book" / f"{f}.ipynb").exists(), f


def test_intro_stage_table_is_complete():
    intro = (ROOT / "book" / "intro.md").read_text()
    assert "(coming)" not in intro
    linked = set(re.findall(r"\]\((?:notebooks/)?(\d\d_[a-z_]+)(?:\.ipynb)?\)", intro))
    assert set(CHAPTERS) <= linked, sorted(set(CHAPTERS) - linked)


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    r = subprocess.run([str(Path(sys.executable).with_name("jupyter-book")), "build", str(ROOT / "book"), "-W", "--keep-going",
                        "--path-output", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return out / "_build" / "html"


def test_book_builds_without_warnings(built_book):
    assert (built_book / "index.html").exists()


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_page_has_colab_button_iff_repository_plots_and_math(built_book, name):
    html = (built_book / "notebooks" / f"{name}.html").read_text()
    # The launch and repository buttons exist exactly when the book names its repository.
    if REPOSITORY:
        owner_name = urlparse(REPOSITORY).path.strip("/")
        assert f"colab.research.google.com/github/{owner_name}/blob/{BRANCH}/notebooks/{name}.ipynb" in html
        assert f'href="{REPOSITORY}"' in html and "btn-source-repository-button" in html
    else:
        assert "colab.research.google.com" not in html
        assert "dropdown-launch-buttons" not in html and "btn-source-repository-button" not in html
        assert "installs nothing" in html, "the install cell as rendered says it installs nothing"
    assert re.search(r'<img[^>]+src="[^"]+\.png"', html), "a rendered plot"
    # MathJax ships with the book (sphinx-mathjax-offline): pages with math render offline too.
    assert not re.search(r"https?://[^\"']*mathjax", html, flags=re.I)
    if 'class="math' in html:
        assert '_static/mathjax/tex-chtml.js"' in html
    assert "Traceback (most recent call last)" not in html, "a cell's stored output is an error"


def test_pipeline_figure_is_drawn_by_its_script(tmp_path):
    """The intro's figure comes from book/figures/pipeline.py: redrawing it gives the same
    labels as the committed SVG, and every stage names its chapter's function."""
    script = ROOT / "book" / "figures" / "pipeline.py"
    subprocess.run([sys.executable, str(script), str(tmp_path / "p.svg")], check=True, capture_output=True)
    texts = lambda p: re.findall(r"<text[^>]*>([^<]*)</text>", p.read_text())  # noqa: E731
    assert texts(tmp_path / "p.svg") == texts(ROOT / "book" / "figures" / "pipeline.svg")
    for fn in ("detect_noise", "select_by_entropy", "finetune"):
        assert any(fn in t for t in texts(tmp_path / "p.svg")), fn


@pytest.mark.parametrize("name", CHAPTERS)
def test_code_lines_fit_the_page(name):
    """A chapter's code cells fit the book's page without sideways scrolling."""
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    long = [line for c in nb.cells if c.cell_type == "code" for line in c.source.splitlines() if len(line) > 90]
    assert not long, long[:3]


@pytest.mark.parametrize("name", CHAPTERS)
def test_setup_is_one_call_and_its_boilerplate_is_hidden(name):
    """The reader meets the stage first: the install cell and the imports are hidden in the
    book, the set-up is one `setup(MODE, ...)` call, and no chapter branches on the mode's
    name or reads the environment itself (the three modes run one code path)."""
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    code = [c for c in nb.cells if c.cell_type == "code"]
    tags = [c.metadata.get("tags", []) for c in code]
    assert "hide-input" in tags[0], "the install cell is hidden"
    assert "parameters" in tags[1] and re.search(r"^MODE = None\b", code[1].source, flags=re.M)
    assert "hide-input" in tags[2] and all(
        line.startswith(("import ", "from ", "#")) or not line.strip() or line.startswith(" ")
        for line in code[2].source.splitlines()), "the third code cell holds the imports only"
    assert re.search(r"^S = setup\(MODE\b", code[3].source, flags=re.M), "the set-up is one call"
    source = "\n".join(c.source for c in code)
    for banned in ("os.environ", "MODE ==", "MODE !=", "ToyConfig.for_seed"):
        assert banned not in source, banned


def test_real_mode_runs_are_in_the_book_and_linked_from_their_chapters():
    """A chapter's run in the real mode that the book lists (the table of contents' part
    "Every chapter with a real model") is stored in results/real-mode, went through, and is
    linked from its chapter; a chapter links no run the book does not list."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    listed = {f.split("/", 1)[1] for f in files if f.startswith("real-mode/") and f[10:12].isdigit()}
    # Every chapter whose set-up follows the mode has its real-mode run in the book (a
    # chapter that always runs a real model, `setup(MODE or "real")`, needs none).
    follows_mode = {n for n in CHAPTERS
                    if re.search(r"^S = setup\(MODE,", (NOTEBOOKS / f"{n}.py").read_text(), flags=re.M)}
    assert len(follows_mode) >= 9 and listed == follows_mode, (sorted(listed), sorted(follows_mode))
    for name in CHAPTERS:
        linked = f"](../real-mode/{name}.ipynb)" in (NOTEBOOKS / f"{name}.py").read_text()
        assert linked == (name in listed), name
        if name in listed:  # the stored run went through: every code cell ran, none raised
            nb = nbformat.read(ROOT / "results" / "real-mode" / f"{name}.ipynb", as_version=4)
            code = [c for c in nb.cells if c.cell_type == "code"]
            assert all(c.get("execution_count") for c in code), name
            assert not any(o.output_type == "error" for c in code for o in c.outputs), name
