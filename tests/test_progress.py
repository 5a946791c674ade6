"""Progress bars: drawn for someone watching (a terminal, a notebook), off in logs."""
import io
import subprocess
import sys

from robustft.progress import interactive, progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bars_are_off_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.delenv("ROBUSTFT_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not interactive()
    bar = progress_bar(range(50), desc="work")
    assert bar.disable and sum(bar) == sum(range(50))  # a disabled bar still iterates
    assert sys.stderr.getvalue() == ""


def test_bars_show_on_a_terminal_unless_switched_off(monkeypatch):
    monkeypatch.delenv("ROBUSTFT_PROGRESS", raising=False)
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert interactive()
    assert not progress_bar(range(3), desc="work", file=term).disable
    assert progress_bar(range(3), desc="work", enabled=False, file=term).disable
    monkeypatch.setenv("ROBUSTFT_PROGRESS", "0")
    assert progress_bar(range(3), desc="work", file=term).disable
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setenv("ROBUSTFT_PROGRESS", "1")
    assert not progress_bar(range(3), desc="work").disable


def test_a_logged_library_run_prints_no_bars_unless_asked(tmp_path):
    """Scoring, generating and fine-tuning with progress=True, stdout and stderr into a file:
    no bar in the log; then the same with ROBUSTFT_PROGRESS=1: every bar."""
    import os

    code = ("import os, robustft\n"
            "from robustft.offline import make_benchmark\n"
            "lm = robustft.load_model('toy', seed=0)\n"
            "qs = make_benchmark(seed=0).train[:40]\n"
            "for forced in (None, '1'):\n"
            "    if forced:\n"
            "        os.environ['ROBUSTFT_PROGRESS'] = forced\n"
            "    print('=== forced', forced, flush=True)\n"
            "    robustft.score_options(lm, qs, batch_size=4, progress=True)\n"
            "    robustft.generate(lm, ['Question: x'] * 4, max_new_tokens=4, batch_size=1, progress=True)\n"
            "    robustft.finetune(lm, qs, epochs=1, batch_size=4, progress=True)\n")
    env = {k: v for k, v in os.environ.items() if k != "ROBUSTFT_PROGRESS"}
    log = tmp_path / "log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT, env=env, check=True)
    quiet, loud = log.read_text().split("=== forced 1")
    names = ("scoring options", "generating", "fine-tuning")
    assert not any(n in quiet for n in names) and "it/s" not in quiet, quiet
    assert all(n in loud for n in names), loud
