"""Generator quality on the shapes world: generated vs real images, through the world's own
feature network. Prints figures; asserts nothing.

For each sampler setting: sampling speed, precision / recall / density / coverage (k=3 k-NN
manifolds on feature-network features), per-channel colour mean/std of generated and real images,
the share of images the feature network gives a confident scene label, and what sees geometry
(the shipped oracle segmenter, synth_shapes.oracle):
- shape fidelity: the share of foreground pixels the oracle labels with confidence >= 0.9 on the
  generated samples, over the same share on real scenes (1.0: as recognisable as real);
- label agreement: mIoU between the pixel head's labels (trained on K = 8 real scenes, the
  quickstart's head settings) and the oracle's, on the generated samples, per class, with the
  head's largest mistakes (which class it takes the oracle's for).
Goals for the shipped model: fidelity >= 0.9, agreement >= 0.7 (issue 9).

Usage: python bench/generator_quality.py [--model builtin:shapes-32] [--n 1000]
       [--settings ddim:25 ddim:10 dpm++:10 ...] [--k 8]

Last line, for scripts: `fidelity <f>; label agreement K=8 <a>; precision <p>; recall <r>`
(of the best setting by precision + recall).
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


HEAD = """
[[stage]]
name = "generate"
[[stage]]
name = "pixelhead"
ensemble = 5
steps = 300
calibration_samples = 0  # nothing is dropped here: skip the quickstart's 1,024 calibration samples
annotations = {{ source = {{ name = "shapes", split = "train", size = 32, difficulty = 0.5 }}, count = {k} }}
"""


def generate(model: str, n: int, scheduler: str, steps: int, batch: int, seed: int, k: int = 0) -> tuple[np.ndarray, np.ndarray | None, float]:
    """n samples (and, with k > 0, their pixel-head labels from a head trained on k real scenes)."""
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
            classes = ["background", "circle", "square", "triangle"]
            [run]
            batch_size = {batch}
            [generator]
            name = "diffusers"
            model = "{model}"
            scheduler = "{scheduler}"
            steps = {steps}
            """
        )
        + (HEAD.format(k=k) if k else "")
    )
    pipe = Pipeline(load_manifest(path))
    pipe.setup()
    t0 = time.perf_counter()
    batches = [pipe.run_batch(list(range(s, min(s + batch, n)))) for s in range(0, n, batch)]
    seconds = time.perf_counter() - t0
    seg = np.concatenate([b.seg for b in batches]) if k else None
    return np.concatenate([b.images for b in batches]), seg, seconds


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
    ap.add_argument("--settings", nargs="+", default=["dpm++:20"], help="scheduler:steps to compare")
    ap.add_argument("--k", type=int, default=8, help="labelled real scenes of the pixel head (label agreement); 0: skip")
    args = ap.parse_args()

    import torch

    from synth.fidelity import prdc
    from synth_shapes import FeatureNet, confident
    from synth_shapes import Oracle, label_agreement, shape_fidelity, worst_confusions
    from synth_shapes import render_many

    net = FeatureNet()
    oracle = Oracle()
    real, _ = render_many(args.seed, range(args.n), 32, args.difficulty, "test")
    real_feats, real_probs = net.embed(real)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"model {args.model}; {args.n} generated vs {args.n} real (shapes test split, difficulty {args.difficulty})")
    print(f"feature network: {net.meta}")
    print(f"real        colour {colour_stats(real)}  confident {confident(real_probs).mean():.3f}")
    rows = []
    for setting in args.settings:
        sched, steps = setting.split(":")
        fake, seg, secs = generate(args.model, args.n, sched, int(steps), args.batch, args.seed, args.k)
        feats, probs = net.embed(fake)
        m = prdc(real_feats, feats, k=3)
        m["fidelity"] = shape_fidelity(oracle, fake, real)["fidelity"]
        agree = label_agreement(oracle, fake, seg) if seg is not None else None
        m["agreement"] = agree["miou"] if agree else float("nan")
        rows.append((setting, args.n / secs, m, confident(probs).mean()))
        print(
            f"{setting:10s}  {args.n / secs:6.1f} img/s (with labelling)  precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
            f"density {m['density']:.3f}  coverage {m['coverage']:.3f}  confident {confident(probs).mean():.3f}  "
            f"fidelity {m['fidelity']:.3f}  agreement K={args.k} {m['agreement']:.3f}"
            + (" (" + ", ".join(f"{c} {v:.3f}" for c, v in agree["iou"].items()) + ")" if agree else ""),
            flush=True,
        )
        print(f"{'':10s}  colour {colour_stats(fake)}", flush=True)
        if agree:
            print(f"{'':10s}  the head's largest mistakes against the oracle: {worst_confusions(agree['taken_for'])}", flush=True)
    best = max(rows, key=lambda r: r[2]["precision"] + r[2]["recall"])
    m = best[2]
    print(f"best precision+recall: {best[0]}; goals fidelity >= 0.9: {'met' if m['fidelity'] >= 0.9 else 'NOT met'}, "
          f"agreement >= 0.7: {'met' if m['agreement'] >= 0.7 else 'NOT met'}")
    print(f"fidelity {m['fidelity']:.3f}; label agreement K={args.k} {m['agreement']:.3f}; precision {m['precision']:.3f}; recall {m['recall']:.3f}")


if __name__ == "__main__":
    main()
