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
    assert sum(bar) == sum(range(50))  # it iterates, and a short stage draws nothing
    assert sys.stderr.getvalue() == ""
    assert progress_bar(range(3), desc="work", enabled=False).disable


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


def test_a_long_stage_prints_a_line_every_heartbeat_in_a_log(monkeypatch):
    """Outside a terminal a stage longer than the heartbeat prints plain progress lines (and
    one when it ends); a short stage prints nothing; ROBUSTFT_PROGRESS=0 silences both."""
    import time

    import robustft.progress as progress

    monkeypatch.delenv("ROBUSTFT_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "HEARTBEAT_SECONDS", 0.2)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress_bar(range(5), desc="slow stage"):
        time.sleep(0.25)
    lines = log.getvalue().splitlines()
    assert len(lines) >= 4 and all(line.startswith("slow stage: ") for line in lines), lines
    assert "5/5 [" in lines[-1] and lines[-1].endswith(" done")
    assert "/5 [" in lines[0] and "<" in lines[0]  # count of total, [elapsed<remaining]
    log.seek(0), log.truncate()
    assert sum(progress_bar(range(5), desc="fast stage")) == 10 and log.getvalue() == ""
    monkeypatch.setenv("ROBUSTFT_PROGRESS", "0")
    for _ in progress_bar(range(2), desc="silenced"):
        time.sleep(0.3)
    assert log.getvalue() == ""
