"""Session set-up for every test run from the repository root (`make test`: tests/ and the
notebooks under nbval).

The toy model cache: a fresh, empty folder per session, exported as $ROBUSTFT_CACHE before any
test or notebook kernel starts (kernels inherit the environment), and removed at the end. A
test run never reads or writes the user's ~/.cache/robustft (or a $ROBUSTFT_CACHE of theirs), so
what passes here passes on a fresh clone. The benchmark models come from the package's shipped
weights; only miniature configs are pre-trained, into this folder.

$ROBUSTFT_TEST_CACHE names a folder to use instead (kept afterwards): with ROBUSTFT_TOY=pretrain
it runs the suite against toy models pre-trained on this machine and cached there.
"""
import os
import shutil
import tempfile

_made = None


def pytest_configure(config):
    global _made
    chosen = os.environ.get("ROBUSTFT_TEST_CACHE")
    if chosen:
        os.environ["ROBUSTFT_CACHE"] = chosen
    else:
        _made = tempfile.mkdtemp(prefix="robustft-test-cache-")
        os.environ["ROBUSTFT_CACHE"] = _made


def pytest_unconfigure(config):
    if _made is not None:
        shutil.rmtree(_made, ignore_errors=True)
