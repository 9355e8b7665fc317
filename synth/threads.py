"""How many threads the model library (torch) may use.

Measured on this project's 2-core machine (UNet2DModel 1.8 M parameters, `python
bench/threads.py`): on an idle machine 2 threads beat 1 (a training step 0.64 s vs 0.83 s); with
one core busy elsewhere, 2 threads fall far behind 1 (1.87 s vs 0.94 s) because the two threads
wait for each other on a core they do not get.

torch's CPU results depend on the thread count (a reduction split differently rounds
differently: one sample in forty of the tiny DDPM test model changes), so the default must not
follow the machine's momentary load, or two runs of one manifest would differ. The default is
``OMP_NUM_THREADS`` where set (the standard knob), else the cores this process may use: the same
on every run on one machine. ``"auto"`` asks for the load-following count instead, the cores
minus those other processes keep busy right now (sampled from /proc/stat over a quarter of a
second; the load average lags by minutes), at least 1: faster on a busy machine, and recorded in
the output folder so a resume reuses it. ``[run] threads``, ``[fit] threads`` or ``--threads``
(a count or "auto") choose.

The core never imports torch: the setting goes to the environment (read by torch when a plugin
imports it) and, when torch is already imported, to ``torch.set_num_threads``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated, Literal, Optional, Union

from pydantic import Field, PlainValidator

# a count, or "auto": the cores minus the machine's load now
Threads = Union[int, Literal["auto"]]
AUTO = "auto"


def check_threads(value):
    """``value`` if it is a threads setting (None, a count of at least 1, "auto"), else ValueError:
    the one rule the manifest field and the --threads option share."""
    if value is None or value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError('a count of at least 1, or "auto"')


# The manifest field ([run] threads, [fit] threads): one plain message for a bad value, not one
# per member of the union.
ThreadsSetting = Annotated[
    Optional[Threads],
    PlainValidator(check_threads, json_schema_input_type=Optional[Union[Annotated[int, Field(ge=1)], Literal["auto"]]]),
]

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(window: float = 0.25) -> float:
    """How many cores other processes keep busy now (this process is idle while it measures)."""
    first = _cpu_times()
    if first is None:
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0
    time.sleep(window)
    second = _cpu_times()
    total = second[1] - first[1]
    return (os.cpu_count() or 1) * (second[0] - first[0]) / total if total > 0 else 0.0


def default_threads() -> int:
    """OMP_NUM_THREADS where it is a positive count, else the cores available: the same on
    every run on one machine."""
    try:
        asked = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        asked = 0
    return asked if asked > 0 else available_cores()


def auto_threads() -> int:
    """Cores available minus the cores busy elsewhere (rounded), at least 1."""
    cores = available_cores()
    return max(1, min(cores, round(cores - busy_cores())))


def resolve_threads(n: Threads | None) -> int:
    """A count for ``n``: itself, the load-following count for "auto", the default for None."""
    if n == AUTO:
        return auto_threads()
    return int(n) if n else default_threads()


def current_threads() -> int | None:
    """torch's intra-op threads when a plugin has imported torch, else None."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def apply_threads(n: Threads | None) -> int:
    """Use ``n`` threads (None: the default, "auto": the load-following count); returns the number set."""
    n = resolve_threads(n)
    for var in ENV_VARS:
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n

