"""What a new user's first `make demo` costs: the quickstart on an empty cache, timed.

Runs `synth run manifests/quickstart.toml` into a temporary folder with an empty
SYNTH_CACHE_DIR (as on a fresh machine; the pixel head it needs ships with the model) and
reports the wall time and the labelled samples written. The README's promise: >= 500 labelled
samples in <= 180 s on a 2-core CPU.

    python bench/quickstart.py

Last line, for scripts: `quickstart: <n> labelled samples in <s> s (empty cache, <cores> cores)`
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="synth-quickstart-") as tmp:
        env = {**os.environ, "SYNTH_CACHE_DIR": str(Path(tmp) / "cache"), "HF_HUB_OFFLINE": "1"}
        out = Path(tmp) / "out"
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-m", "synth", "run", str(ROOT / "manifests" / "quickstart.toml"), "--output", str(out)],
            env=env, capture_output=True, text=True,
        )
        seconds = time.perf_counter() - t0
        if res.returncode != 0:
            sys.exit(f"quickstart failed: {res.stderr.strip().splitlines()[-1]}")
        info = json.loads((out / "dataset.json").read_text())
        trained = "training the pixel head" in res.stderr
        labelled = sum(1 for f in info["fields"] if f == "seg.png") and info["num_samples"]
        for line in res.stderr.strip().splitlines()[-4:]:
            print(line)
        print(f"head: {'trained (not bundled for this setup)' if trained else 'bundled with the model'}")
        print(f"quickstart: {labelled} labelled samples in {seconds:.0f} s (empty cache, {len(os.sched_getaffinity(0))} cores)")


if __name__ == "__main__":
    main()
