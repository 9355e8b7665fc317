"""Where near-duplicates begin for a feature extractor: the nearest-neighbour cosine of real
images to each other (issue 31: dedup's threshold set from real-to-real distances, as
memorisation's is). Prints the percentiles of the nearest-neighbour cosine over N real shapes
scenes, the cosine at the 1st percentile of the distance (what the shapes extractor declares as
duplicate_cosine), and how a small pixel noise moves a scene's own features.

    python bench/dedup_threshold.py [--n 2000] [--seed 0] [--noise 4]

Last line: dedup_threshold: extractor shapes n N nn_cos_median M p1_distance_cos C noise_self_cos_median S
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=4.0, help="pixel noise (0-255 scale) for the self-similarity check")
    args = ap.parse_args()

    from synth_shapes import FeatureNet
    from synth_shapes import render_many

    net = FeatureNet()
    images = render_many(args.seed, range(args.n))[0]
    f = net.embed(images)[0].astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    sim = f @ f.T
    np.fill_diagonal(sim, -1)
    nn = sim.max(1)
    p = np.percentile(nn, [1, 10, 50, 90, 99])
    print(f"nearest-neighbour cosine of {args.n} real scenes: p1 {p[0]:.4f}  p10 {p[1]:.4f}  median {p[2]:.4f}  p90 {p[3]:.4f}  p99 {p[4]:.4f}")
    d1 = float(np.percentile(1 - nn, 1))
    rng = np.random.default_rng(args.seed)
    m = min(200, args.n)
    noisy = np.clip(images[:m].astype(np.float32) + rng.normal(0, args.noise, images[:m].shape), 0, 255).astype(np.uint8)
    g = net.embed(noisy)[0].astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    own = (g * f[:m]).sum(1)
    print(f"a scene against itself with pixel noise {args.noise:g}: median cosine {np.median(own):.5f}, p10 {np.percentile(own, 10):.4f}")
    print(f"dedup_threshold: extractor shapes n {args.n} nn_cos_median {p[2]:.4f} p1_distance_cos {1 - d1:.4f} noise_self_cos_median {np.median(own):.4f}")


if __name__ == "__main__":
    main()
