"""What running on Ray costs and buys, on this machine: the quickstart with the local executor and
with Ray at 1 and 2 actors (samples/s, ratios measured in one run), and Ray's overhead per shard
(a toy manifest of many tiny shards, where the model costs nothing).

    python bench/ray_scaling.py [--samples 600]

Last line, for scripts:
`local <r> samples/s; ray 1 actor <r1> (<x1>x); ray 2 actors <r2> (<x2>x); overhead <o> s/shard`
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_run(manifest: Path, out: Path, *extra: str) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "synth", "run", "-q", str(manifest), "--output", str(out), "--overwrite", *extra], env=env, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"{manifest.name} {' '.join(extra)} failed: {res.stderr.strip().splitlines()[-1]}")
    return time.perf_counter() - t0


def toy(folder: Path, shards: int) -> Path:
    p = folder / f"toy-{shards}.toml"
    p.write_text(f'[dataset]\nname = "t"\nnum_samples = {4 * shards}\nshard_size = 4\n[run]\nbatch_size = 4\n[generator]\nname = "toy"\nsize = 32\n')
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=600, help="quickstart samples (shards of 150)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="synth-ray-bench-") as tmp:
        tmp = Path(tmp)
        q = tmp / "quickstart.toml"
        text = (ROOT / "manifests" / "quickstart.toml").read_text().replace("num_samples = 600", f"num_samples = {args.samples}")
        q.write_text(text)
        print(f"quickstart, {args.samples} samples, {len(os.sched_getaffinity(0))} cores:")
        rates = {}
        for label, extra in (("local", ()), ("ray 1 actor", ("--executor", "ray", "-X", "actors=1")), ("ray 2 actors", ("--executor", "ray", "-X", "actors=2"))):
            seconds = timed_run(q, tmp / label.replace(" ", "-"), *extra)
            rates[label] = args.samples / seconds
            print(f"  {label:>12}: {seconds:.1f} s, {rates[label]:.2f} samples/s (wall, start-up included)")
        small, large = 2, 40
        t = {}
        for label, extra in (("local", ()), ("ray", ("--executor", "ray", "-X", "actors=1"))):
            for n in (small, large):
                t[(label, n)] = timed_run(toy(tmp, n), tmp / f"toy-{label}-{n}", *extra)
        per_shard_local = (t[("local", large)] - t[("local", small)]) / (large - small)
        per_shard_ray = (t[("ray", large)] - t[("ray", small)]) / (large - small)
        overhead = per_shard_ray - per_shard_local
        startup = t[("ray", small)] - t[("local", small)]
        print(f"toy, shards of 4 samples: local {per_shard_local:.3f} s/shard, ray {per_shard_ray:.3f} s/shard; ray start-up {startup:.1f} s")
        base = rates["local"]
        print(
            f"local {base:.2f} samples/s; ray 1 actor {rates['ray 1 actor']:.2f} ({rates['ray 1 actor'] / base:.2f}x); "
            f"ray 2 actors {rates['ray 2 actors']:.2f} ({rates['ray 2 actors'] / base:.2f}x); overhead {overhead:.3f} s/shard"
        )


if __name__ == "__main__":
    main()
