"""Long steps show progress in logs too: plain lines at a steady interval when stderr is not a
terminal (a redrawn bar there is one endless line or nothing)."""

import io
import re

from conftest import synth, toy_manifest
from synth.bars import LogBar, progress_bar


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_log_lines_at_a_steady_interval_and_at_the_end():
    out = io.StringIO()
    bar = LogBar(100, "pixel head: training", "step", stream=out, interval=0.0)
    for _ in range(4):
        bar.update(25)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in out.getvalue()  # the last update's line is not repeated at close
    assert re.fullmatch(r"synth: pixel head: training: 25/100 steps \(25%\), [\d.]+ steps/s, \d+ s left", lines[0]), lines[0]
    assert lines[-1].startswith("synth: pixel head: training: 100/100 steps (100%)") and "done in" in lines[-1]
    quiet = io.StringIO()
    slow = LogBar(100, "x", "step", stream=quiet, interval=3600)
    slow.update(50)
    assert quiet.getvalue() == ""  # nothing between intervals ...
    slow.close()
    assert quiet.getvalue().count("\n") == 1  # ... and one line at the end


def test_a_terminal_gets_the_bar(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not isinstance(progress_bar(10, "x", stream=_Tty()), LogBar)
    assert isinstance(progress_bar(10, "x", stream=io.StringIO()), LogBar)


def test_synth_run_logs_progress_when_stderr_is_a_pipe(tmp_path):
    m = toy_manifest(tmp_path, n=40, shard=8, batch=4)
    res = synth("run", m, env={"TQDM_DISABLE": "", "SYNTH_PROGRESS_INTERVAL": "0"})
    assert res.returncode == 0
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("synth run: ")]
    assert len(lines) >= 10 and "\r" not in res.stderr
    assert lines[-1].startswith("synth run: 40/40 samples (100%)") and "shards 5/5" in lines[-1]
    assert synth("run", "-q", "--overwrite", m, env={"TQDM_DISABLE": "", "SYNTH_PROGRESS_INTERVAL": "0"}).stderr == ""
