"""Progress for long steps: a tqdm bar on a terminal, plain lines at a steady interval in logs.

On a terminal the bar redraws in place. When stderr is a file or a pipe (CI logs, `make demo |
tee`, a job scheduler) a redrawn bar is one endless line, or nothing at all; there a long step
prints one self-contained line every ``SYNTH_PROGRESS_INTERVAL`` seconds (default 15), as pip
and Ray do, plus one when it ends:

    synth: pixel head: 600/1500 steps (40%), 55.1 steps/s, 16 s left
    synth run: 128/512 samples (25%), 7.9 samples/s, 48 s left, shards 1/4
"""

from __future__ import annotations

import os
import sys
import time

INTERVAL_ENV = "SYNTH_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 15.0


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def _disabled_by_env() -> bool:
    return os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class LogBar:
    """The tqdm calls synth uses (update, set_postfix_str, n, close), as plain log lines."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0, stream=None, interval: float | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.start_n = initial
        self.stream = stream or sys.stderr
        self.interval = _interval() if interval is None else interval
        self.postfix = ""
        self.t0 = self.last = time.monotonic()
        self.closed = False
        self.emitted = None  # (n, postfix) of the last line printed

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._emit(now)

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        self.postfix = s

    def set_postfix(self, refresh: bool = True, **kwargs) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in kwargs.items())

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.t0, 1e-9)
        done = self.n - self.start_n
        rate = done / elapsed
        parts = [f"{self.n}/{self.total} {self.unit}s ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n} {self.unit}s"]
        parts.append(f"{rate:.1f} {self.unit}s/s" if rate >= 1 or rate == 0 else f"{1 / rate:.1f} s/{self.unit}")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"{_duration((self.total - self.n) / rate)} left")
        elif self.n >= (self.total or 0):
            parts.append(f"done in {_duration(elapsed)}")
        if self.postfix:
            parts.append(self.postfix)
        prefix = self.desc if self.desc.startswith("synth") else f"synth: {self.desc}"
        return f"{prefix}: " + ", ".join(parts)

    def _emit(self, now: float | None = None) -> None:
        self.emitted = (self.n, self.postfix)
        print(self.line(now), file=self.stream, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if (self.n != self.start_n or self.total == 0) and self.emitted != (self.n, self.postfix):
                self._emit()


def progress_bar(total: int | None, desc: str, unit: str = "it", initial: int = 0, disable: bool = False, leave: bool = True, stream=None):
    """A tqdm bar when ``stream`` (stderr) is a terminal, else a LogBar; None-safe to use either
    way. ``disable`` (or TQDM_DISABLE=1) gives a bar that prints nothing."""
    from tqdm import tqdm

    stream = stream or sys.stderr
    if disable or _disabled_by_env() or stream.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, disable=disable or _disabled_by_env(), leave=leave, file=stream)
    return LogBar(total, desc, unit, initial=initial, stream=stream)
