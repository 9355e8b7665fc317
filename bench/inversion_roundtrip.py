"""How faithfully does the diffusers generator's `invert` find an image's latent? Prints figures.

PSNR of decode(invert(x)) against x on real shapes-world images (split "test"), with the DDIM
sampler (eta 0) at several step counts: mean and worst image. Inversion visits exactly the
reversed timesteps of the sampling loop, so the two walk the same path.

    python bench/inversion_roundtrip.py [--model builtin:shapes-32] [--n 64] [--steps 10 25 50 100]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per image, in dB, for uint8 images (N, H, W, 3)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:shapes-32")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50, 100])
    ap.add_argument("--difficulty", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from label_efficiency import load_generator
    from synth_shapes import render_many

    images, _ = render_many(args.seed, range(args.n), 32, args.difficulty, "test")
    print(f"inversion round trip: {args.model}, {args.n} real shapes-world images (difficulty {args.difficulty}), DDIM eta 0")
    idx = list(range(args.n))
    for steps in args.steps:
        gen = load_generator(args.model, "ddim", steps, args.seed)
        t0 = time.perf_counter()
        z = gen.invert(images, [{}] * args.n)
        back = gen.decode(z, [{}] * args.n, idx, args.seed)
        p = psnr(back, images)
        print(
            f"  {steps:>4} steps: PSNR mean {p.mean():.1f} dB, worst {p.min():.1f} dB; latent std {z.std():.2f}; {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    print(f"  machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")


if __name__ == "__main__":
    main()
