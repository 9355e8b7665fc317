"""How many threads the model library (torch) may use.

Measured on this project's 2-core machine (UNet2DModel 1.8 M parameters, `python
bench/threads.py`): on an idle machine 2 threads beat 1 (a training step 0.64 s vs 0.83 s); with
one core busy elsewhere, 2 threads fall far behind 1 (1.87 s vs 0.94 s) because the two threads
wait for each other on a core they do not get. So the default is the number of cores this process may
use minus the machine's recent load, at least 1; ``[run] threads``, ``[fit] threads`` or
``--threads`` override it.

The core never imports torch: the setting goes to the environment (read by torch when a plugin
imports it) and, when torch is already imported, to ``torch.set_num_threads``.
"""

from __future__ import annotations

import os
import sys

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Cores available minus the 1-minute load average (rounded), at least 1."""
    cores = available_cores()
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, round(cores - busy)))


def current_threads() -> int | None:
    """torch's intra-op threads when a plugin has imported torch, else None."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def apply_threads(n: int | None) -> int:
    """Use ``n`` threads (None: the default); returns the number set."""
    n = int(n) if n else default_threads()
    for var in ENV_VARS:
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n
