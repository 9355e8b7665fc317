"""Fitted pipelines side by side: their samples against a world's real test scenes, in the shapes
feature network's space (precision, recall, density, coverage, FID, KID). For checking a `[fit]`
default on a world other than shapes (e.g. cells, manifests/fit-cells-32.toml): the network was
trained on shapes, so on another world read the figures as a comparison between models.

    python bench/fit_compare.py MODEL [MODEL ...] [--world cells] [--n 1000] [--scheduler dpm++]
        [--steps 20] [--threads 2]

MODEL: a pipeline folder (synth fit's output) or builtin:NAME. Last line, for scripts:
`best FID <model>: precision <p>; recall <r>; FID <f>`
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def real_scenes(world: str, n: int) -> np.ndarray:
    if world == "cells":
        from synth_shapes import render_cells

        return np.stack([render_cells(0, i, 32, "test")[0] for i in range(n)])
    from synth_shapes import render_many

    return render_many(0, range(n), 32, 0.5, "test")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--world", choices=["cells", "shapes"], default="cells")
    ap.add_argument("--n", type=int, default=1000, help="real scenes and samples per model")
    ap.add_argument("--scheduler", default="dpm++")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    import torch

    from label_efficiency import generate, load_generator
    from synth.fidelity import fid, kid, prdc
    from synth_shapes import FeatureNet

    torch.set_num_threads(args.threads)
    net = FeatureNet()
    real, _ = net.embed(real_scenes(args.world, args.n))
    rows = {}
    for model in args.models:
        gen = load_generator(model, args.scheduler, args.steps, 0)
        fake, _ = net.embed(generate(gen, args.n, 0))
        rows[model] = {**prdc(real, fake, k=3), "FID": fid(real, fake), "KID": kid(real, fake)[0]}
        print(f"{model}: " + ", ".join(f"{k} {v:.4g}" for k, v in rows[model].items()), flush=True)
    best = min(rows, key=lambda m: rows[m]["FID"])
    r = rows[best]
    print(f"best FID {best}: precision {r['precision']:.3f}; recall {r['recall']:.3f}; FID {r['FID']:.3f}")


if __name__ == "__main__":
    main()
