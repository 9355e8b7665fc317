"""Dataset metrics in bounded memory and time: precision, recall, density, coverage, FID and KID
of N generated feature vectors (dimension 512) against 10,000 reference ones, at N = 10,000 and
100,000, each in its own process so its peak RSS is its own.

    python bench/metrics.py [--sizes 10000 100000] [--dim 512] [--reference 10000]

Goal: 100,000 within 2 GB peak and under 5 minutes on 2 cores. Last line, for scripts:
`100000 x 512 vs 10000: peak <gb> GB, <s> s`
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def one(n: int, dim: int, ref: int) -> None:
    import numpy as np

    from synth.fidelity import fid, kid, prdc

    rng = np.random.default_rng(0)
    real = rng.normal(size=(ref, dim)).astype(np.float32)
    fake = (rng.normal(size=(n, dim)) * 1.1 + 0.05).astype(np.float32)
    t0 = time.perf_counter()
    out = prdc(real, fake, k=3)
    out["fid"] = fid(real, fake)
    out["kid"] = kid(real, fake)[0]
    out["seconds"] = time.perf_counter() - t0
    out["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--reference", type=int, default=10_000)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(args.one, args.dim, args.reference)
        return
    print(f"synth.fidelity, {os.cpu_count()} cores, numpy blocked distances (512-row blocks, float32)")
    last = None
    for n in args.sizes:
        res = subprocess.run([sys.executable, __file__, "--one", str(n), "--dim", str(args.dim), "--reference", str(args.reference)], capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"  {n:>7} x {args.dim} vs {args.reference}: {r['seconds']:.1f} s, peak RSS {r['peak_gb']:.2f} GB "
              f"(precision {r['precision']:.3f}, recall {r['recall']:.3f}, density {r['density']:.3f}, coverage {r['coverage']:.3f}, FID {r['fid']:.2f}, KID {r['kid']:.4f})", flush=True)
        last = (n, r)
    n, r = last
    print(f"{n} x {args.dim} vs {args.reference}: peak {r['peak_gb']:.2f} GB, {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
