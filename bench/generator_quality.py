"""Generator quality on the shapes world: generated vs real images, through the world's own
feature network. Prints figures; asserts nothing.

For each sampler setting: sampling speed, precision / recall / density / coverage (k=3 k-NN
manifolds on feature-network features), per-channel colour mean/std of generated and real images,
and the share of images the feature network gives a confident scene label.
Goal for the shipped model: precision >= 0.8, recall >= 0.6.

Usage: python bench/generator_quality.py [--model builtin:shapes-32] [--n 1000]
       [--settings ddim:25 ddim:10 dpm++:10 ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def generate(model: str, n: int, scheduler: str, steps: int, batch: int, seed: int) -> tuple[np.ndarray, float]:
    from synth.manifest import load_manifest
    from synth.pipeline import Pipeline

    folder = Path(tempfile.mkdtemp(prefix="synth-quality-"))
    path = folder / "gen.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [dataset]
            num_samples = {n}
            seed = {seed}
            [run]
            batch_size = {batch}
            [generator]
            name = "diffusers"
            model = "{model}"
            scheduler = "{scheduler}"
            steps = {steps}
            """
        )
    )
    pipe = Pipeline(load_manifest(path))
    pipe.setup()
    t0 = time.perf_counter()
    images = [pipe.run_batch(list(range(s, min(s + batch, n)))).images for s in range(0, n, batch)]
    return np.concatenate(images), time.perf_counter() - t0


def colour_stats(images: np.ndarray) -> str:
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    mean, std = x.mean(0), x.std(0)
    return "mean " + "/".join(f"{v:.3f}" for v in mean) + "  std " + "/".join(f"{v:.3f}" for v in std)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:shapes-32")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--difficulty", type=float, default=0.5, help="of the real (test split) images")
    ap.add_argument("--settings", nargs="+", default=["ddim:25"], help="scheduler:steps to compare")
    args = ap.parse_args()

    import torch

    from synth.metrics import prdc
    from synth_shapes.featurenet import FeatureNet, confident
    from synth_shapes.world import render_many

    net = FeatureNet()
    real, _ = render_many(args.seed, range(args.n), 32, args.difficulty, "test")
    real_feats, real_probs = net.embed(real)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"model {args.model}; {args.n} generated vs {args.n} real (shapes test split, difficulty {args.difficulty})")
    print(f"feature network: {net.meta}")
    print(f"real        colour {colour_stats(real)}  confident {confident(real_probs).mean():.3f}")
    rows = []
    for setting in args.settings:
        sched, steps = setting.split(":")
        fake, secs = generate(args.model, args.n, sched, int(steps), args.batch, args.seed)
        feats, probs = net.embed(fake)
        m = prdc(real_feats, feats, k=3)
        rows.append((setting, args.n / secs, m, confident(probs).mean()))
        print(
            f"{setting:10s}  {args.n / secs:6.1f} img/s  precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
            f"density {m['density']:.3f}  coverage {m['coverage']:.3f}  confident {confident(probs).mean():.3f}",
            flush=True,
        )
        print(f"{'':10s}  colour {colour_stats(fake)}", flush=True)
    best = max(rows, key=lambda r: r[2]["precision"] + r[2]["recall"])
    print(f"best precision+recall: {best[0]}; goal precision >= 0.8 and recall >= 0.6: "
          f"{'met' if best[2]['precision'] >= 0.8 and best[2]['recall'] >= 0.6 else 'NOT met'}")


if __name__ == "__main__":
    main()
