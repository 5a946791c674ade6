"""Session set-up for every test run from the repository root (`make test`: tests/ and the
notebooks under nbval).

The toy model cache: a fresh, empty folder per session, exported as $ROBUSTFT_CACHE before any
test or notebook kernel starts (kernels inherit the environment), and removed at the end. A
test run never reads or writes the user's ~/.cache/robustft (or a $ROBUSTFT_CACHE of theirs), so
what passes here passes on a fresh clone. The benchmark models come from the package's shipped
weights; only miniature configs are pre-trained, into this folder.

$ROBUSTFT_TEST_CACHE names a folder to use instead (kept afterwards): with ROBUSTFT_TOY=pretrain
it runs the suite against toy models pre-trained on this machine and cached there.

The notebooks' results (RunLog files, exports): $ROBUSTFT_RUNS, a fresh folder in the same
session folder, so a run never reads back results that an earlier run left in notebooks/runs.
Hugging Face's cache ($HF_HOME), matplotlib's ($MPLCONFIGDIR) and Triton's ($TRITON_CACHE_DIR)
go there as well.
"""
import os
import shutil
import tempfile

_made = None


def pytest_configure(config):
    global _made
    _made = tempfile.mkdtemp(prefix="robustft-test-")
    os.environ["ROBUSTFT_CACHE"] = os.environ.get("ROBUSTFT_TEST_CACHE") or os.path.join(_made, "cache")
    os.environ["ROBUSTFT_RUNS"] = os.path.join(_made, "runs")
    # Hugging Face's and matplotlib's caches too: the hub tests build datasets and modules
    # there, and a test run leaves nothing under the user's HOME.
    os.environ["HF_HOME"] = os.path.join(_made, "huggingface")
    os.environ["MPLCONFIGDIR"] = os.path.join(_made, "matplotlib")
    os.environ["TRITON_CACHE_DIR"] = os.path.join(_made, "triton")  # the kernels' compile test


def pytest_unconfigure(config):
    if _made is not None:
        shutil.rmtree(_made, ignore_errors=True)


# Each notebook's wall time under nbval (its cells' run times, kernel start included in the
# first), printed at the end: the book's budget is per chapter, and pytest reports per cell.
_notebook_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] = _notebook_seconds.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if _notebook_seconds:
        terminalreporter.section("notebook times")
        for path, seconds in sorted(_notebook_seconds.items()):
            terminalreporter.write_line(f"{path}: {seconds:6.1f} s")
        terminalreporter.write_line(f"all notebooks: {sum(_notebook_seconds.values()):6.1f} s")
