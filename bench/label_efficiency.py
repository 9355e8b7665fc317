"""The DatasetGAN claim on the shapes world, measured: how much is a labelled image worth when a
generator's features label thousands of generated ones?

For K labelled real images (shapes world, split "val"), mIoU on real test images (split "test") of
  (i)    the pixel head (trained on the K) applied to the real test images;
  (ii)   a small U-Net trained on the K real images only;
  (iii)  the same U-Net trained on N generated samples labelled by the head, the most uncertain
         share dropped, three ways: synthetic only; synthetic and the K real mixed in every batch;
         pre-trained on synthetic, then fine-tuned on the K real;
  (iv)   the U-Net trained on 10*K real labelled images.
Also, through the shapes world's oracle segmenter (synth_shapes.oracle): the generated samples'
shape fidelity (1.0: as recognisable as real) and, per K, the label agreement (mIoU between the
head's labels and the oracle's on the generated samples; per class, with the head's largest
mistakes).
Goal: (iii) at K beats (ii) at K and approaches (iv). Prints a table; asserts nothing.

    python bench/label_efficiency.py [--model builtin:shapes-32] [--ks 2 4 8 16] [--test 500]
        [--generated 2000] [--seg-steps 600] [--width 16] [--ensemble 5] [--head-steps 300] [--mix]
        [--pick first|k_center] [--pick-from 400] [--pick-features shapes|generator] [--region-vote TOL]
        [--region-class PRIOR]

--region-class classes each region of the head's labels (after the vote, if any) as the
region_class stage does: a classifier of whole regions trained on the K labelled scenes'
instances, the head's pixel votes weighted by PRIOR.

--pick k_center labels the K scenes the select stage's k-center would choose among --pick-from
unlabelled val scenes (for the head and (ii)); (iv) stays the first 10K of the pool.

The README's table: --features-from trajectory --width 32 --seg-steps 2000 (85 min on 2 cores).
The defaults (width 16, 600 steps) take under half as long; their U-Net is undertrained, which
flatters (iii) against (iv) at K >= 8.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CLASSES = ["background", "circle", "square", "triangle"]


def load_generator(model: str, scheduler: str, steps: int, seed: int):
    """The real generator plugin, loaded through a manifest as `synth run` would."""
    from synth.manifest import load_manifest
    from synth.pipeline import Pipeline

    path = Path(tempfile.mkdtemp(prefix="synth-labeleff-")) / "gen.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [dataset]
            num_samples = 1
            seed = {seed}
            classes = {CLASSES!r}
            [generator]
            name = "diffusers"
            model = "{model}"
            scheduler = "{scheduler}"
            steps = {steps}
            """
        ).replace("'", '"')
    )
    pipe = Pipeline(load_manifest(path))
    pipe.generator.setup()
    return pipe.generator


def generate(gen, n: int, seed: int, batch: int = 64) -> np.ndarray:
    out = []
    for start in range(0, n, batch):
        idx = list(range(start, min(start + batch, n)))
        conds = [gen.condition(i) for i in idx]
        out.append(gen.decode(gen.sample_latents(idx, seed), conds, idx, seed))
    return np.concatenate(out) if out else np.zeros((0, 1, 1, 3), np.uint8)


def head_predict(gen, ensemble, spec, images: np.ndarray, top: float, latents=None, seed: int = 0, batch: int = 64):
    """Labels and per-image uncertainty; ``latents`` (generated images: sample index = row,
    decoded with ``seed``) for trajectory features."""
    from synth_pixelhead import feature_groups
    from synth_pixelhead import image_uncertainty

    n, h, w = len(images), images.shape[1], images.shape[2]
    labels, scores = np.empty((n, h, w), np.int64), np.empty(n)
    for start in range(0, n, batch):
        rows = np.arange(start, min(start + batch, n))
        z = None if latents is None else list(latents[rows])
        decode = [{"index": int(i), "seed": seed} for i in rows]
        for group, pyramid in feature_groups(gen, spec, images[rows], [{}] * len(rows), z, decode):
            lab, js = ensemble.predict(pyramid, (h, w))
            labels[rows[group]], scores[rows[group]] = lab, image_uncertainty(js, top)
    return labels, scores


def pick_k_center(args, ks, gen, images: np.ndarray) -> dict:
    """The K scenes to label, as a user would choose them before labelling anything: the select
    stage's greedy k-center over features of the unlabelled ``images``, either the shapes feature
    network's (trained on the world's labels: the picker at its best) or the generator's own
    through the `generator` extractor (what any user of a generator has, with no other model)."""
    from synth.selection import k_center

    if args.pick_features == "shapes":
        from synth_shapes import FeatureNet

        feats = FeatureNet().embed(images)[0].astype(np.float32)
    else:
        from synth_filters import GeneratorFeatures

        extractor = GeneratorFeatures(GeneratorFeatures.Config(blocks=args.blocks, timesteps=args.timesteps), gen.context)
        extractor.setup()
        feats = extractor.embed(images)
    return {kk: np.array(k_center(feats, np.arange(len(feats)), kk)) for kk in ks}


def region_vote(images: np.ndarray, labels: np.ndarray, tolerance: int | None) -> np.ndarray:
    """The pixelhead stage's region_vote (background = class 0); None: the labels as they are."""
    if tolerance is None:
        return labels
    from synth.regions import vote_each

    return vote_each(images, labels, tolerance)


def region_class(torch, lab_x, lab_y, seed: int, prior: float):
    """The region_class stage with its defaults (silhouettes, tolerance 25), trained on the K
    labelled scenes: a function relabelling (images, labels)."""
    from synth_regionclass import RegionClassConfig, classify_regions, instances, train_classifiers

    cfg = RegionClassConfig(annotations={"source": {"name": "shapes"}}, prior=prior)
    crops, labels = instances(lab_x, lab_y, 0, cfg.crop, False, cfg.min_pixels)
    known = np.bincount(labels, minlength=len(CLASSES)) > 0
    nets = train_classifiers(torch, crops, labels, len(CLASSES), cfg.ensemble, cfg.steps, seed)
    return lambda images, seg: np.stack([classify_regions(torch, nets, known, x, y, 0, cfg.tolerance, cfg.crop, False, prior, cfg.min_pixels) for x, y in zip(images, seg)])


# mIoU as `synth evaluate` computes it: one confusion matrix over all test pixels.
from synth.segmetrics import class_ious, miou  # noqa: E402


# -- the downstream segmenter: the optimise plugin's segmentation task model, so that this bench
# and `synth optimise` score with the same U-Net --------------------------------------------------
from synth_optimise import segment, small_unet  # noqa: E402,F401


def train_segmenter(torch, sets, steps: int, seed: int, batch: int = 32, lr: float = 1e-3, model=None, width: int = 16):
    """Train on ``sets``: a list of (images, masks, share) drawn from in every batch by share."""
    from synth_optimise import train_segmenter as train

    return train(torch, sets, steps, seed, len(CLASSES), batch=batch, lr=lr, model=model, width=width)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:shapes-32")
    ap.add_argument("--scheduler", default="dpm++")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps")
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--generated", type=int, default=2000)
    ap.add_argument("--drop", type=float, default=0.1, help="most uncertain share of generated samples dropped")
    ap.add_argument("--difficulty", type=float, default=0.5)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seg-steps", type=int, default=600)
    ap.add_argument("--width", type=int, default=16, help="U-Net base width (16: ~0.12 M parameters)")
    ap.add_argument("--mix", action="store_true", help="also train on synthetic + K real mixed in every batch")
    ap.add_argument("--cache", default=None, help="npz file keeping the generated images between runs")
    ap.add_argument("--ensemble", type=int, default=5)
    ap.add_argument("--head-steps", type=int, default=300)
    ap.add_argument("--balance", type=float, default=0.0, help="class balance of the head's training batches")
    ap.add_argument("--blocks", nargs="*", default=None)
    ap.add_argument("--timesteps", type=int, nargs="*", default=None)
    ap.add_argument("--features-from", default="noised", choices=["noised", "inverted", "trajectory"])
    ap.add_argument("--inversion-steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pick", default="first", choices=["first", "k_center"], help="which K of the labelled pool to label: the first K, or the select stage's k-center (see --pick-features)")
    ap.add_argument("--pick-from", type=int, default=400, help="unlabelled val scenes that --pick k_center chooses from")
    ap.add_argument("--pick-features", default="shapes", choices=["shapes", "generator"], help="k-center on the shapes feature network's features or on the generator's own (the generator extractor)")
    ap.add_argument("--region-vote", type=int, default=None, metavar="TOL", help="the stage's region_vote at this colour tolerance, on every label the head makes")
    ap.add_argument("--region-class", type=float, default=None, metavar="PRIOR", help="the region_class stage after the head (and the vote), the head's votes weighted by PRIOR")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--head-only", action="store_true", help="only (i): compare feature choices quickly")
    ap.add_argument("--baselines-only", action="store_true", help="only (ii) and (iv): how strong is the U-Net at this width and step count?")
    args = ap.parse_args()

    import torch

    from synth.annotations import Examples
    from synth_pixelhead import PixelHeadConfig
    from synth_pixelhead import train_head
    from synth_shapes import render_many

    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    k_max = max(args.ks)
    test_x, test_y = render_many(args.seed, range(args.test), args.size, args.difficulty, "test")
    # the labelled pool: (iv) takes its first 10 K, --pick k_center chooses among its first --pick-from
    n_pool = max(10 * k_max, args.pick_from if args.pick == "k_center" else 0)
    pool_x, pool_y = render_many(args.seed, range(n_pool), args.size, args.difficulty, "val")
    gen = load_generator(args.model, args.scheduler, args.steps, args.seed)
    if args.pick == "k_center":
        picks = pick_k_center(args, args.ks, gen, pool_x[: args.pick_from])
    else:
        picks = {kk: np.arange(kk) for kk in args.ks}
    pick_x, pick_y = {kk: pool_x[picks[kk]] for kk in args.ks}, {kk: pool_y[picks[kk]] for kk in args.ks}
    spec = gen.feature_spec({"blocks": args.blocks, "timesteps": args.timesteps, "source": args.features_from, "inversion_steps": args.inversion_steps})
    t0 = time.perf_counter()
    n_gen = 0 if args.head_only or args.baselines_only else args.generated
    if args.cache and Path(args.cache).is_file() and len(np.load(args.cache)["x"]) == n_gen:
        gen_x = np.load(args.cache)["x"]
    else:
        gen_x = generate(gen, n_gen, args.seed)
        if args.cache:
            np.savez(args.cache, x=gen_x)
    t_gen = time.perf_counter() - t0
    gen_latents = gen.sample_latents(list(range(len(gen_x))), args.seed) if len(gen_x) else None
    print(f"label efficiency: {args.model} ({args.scheduler}:{args.steps}), shapes world {args.size}x{args.size} difficulty {args.difficulty}")
    print(f"  test: {args.test} real (split test); labelled pool: split val; generated: {args.generated} in {t_gen:.0f} s, {args.drop:.0%} most uncertain dropped")
    if len(gen_x):
        from synth_shapes import Oracle, label_agreement, shape_fidelity, worst_confusions

        oracle = Oracle()
        fid = shape_fidelity(oracle, gen_x, test_x)
        print(f"  shape fidelity of the generated samples: {fid['fidelity']:.3f} (confident foreground {fid['generated_confident']:.3f} vs real {fid['real_confident']:.3f})")
    print(f"  features: {spec.source}, blocks {list(spec.blocks)}, timesteps {list(spec.timesteps)}; head: {args.ensemble} MLPs x {args.head_steps} steps, balance {args.balance}{'' if args.region_vote is None else f', region vote at tolerance {args.region_vote}'}; U-Net (width {args.width}): {args.seg_steps} steps, batch 32")
    if args.pick == "k_center":
        print(f"  labelled: k-center picks among {args.pick_from} val scenes ({args.pick_features} features): " + "; ".join(f"K={kk} {list(map(int, picks[kk]))}" for kk in args.ks))
    k = len(CLASSES)
    rows = []
    if args.baselines_only:
        for kk in args.ks:
            t0 = time.perf_counter()
            real = train_segmenter(torch, [(pick_x[kk], pick_y[kk], 1.0)], args.seg_steps, args.seed + kk, width=args.width)
            ten = train_segmenter(torch, [(pool_x[: 10 * kk], pool_y[: 10 * kk], 1.0)], args.seg_steps, args.seed + kk, width=args.width)
            print(
                f"  K={kk}: U-Net width {args.width}, {args.seg_steps} steps: real K {miou(segment(torch, real, test_x), test_y, k):.3f}, "
                f"real 10K {miou(segment(torch, ten, test_x), test_y, k):.3f} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        return
    for kk in args.ks:
        t0 = time.perf_counter()
        lab_x, lab_y = pick_x[kk], pick_y[kk]
        ex = Examples(lab_x, lab_y, [{}] * kk, [str(i) for i in picks[kk]], "real")
        cfg = PixelHeadConfig(annotations={"source": {"name": "shapes"}}, ensemble=args.ensemble, steps=args.head_steps, balance=args.balance, calibration_samples=0, feature_batch=64)
        ensemble, _ = train_head(gen, spec, ex, cfg, CLASSES, seed=args.seed)
        head_test, _ = head_predict(gen, ensemble, spec, test_x, cfg.top_fraction)
        head_miou = miou(head_test, test_y, k)
        voted = ""
        if args.region_vote is not None:
            voted = f"; head on real {head_miou:.3f} without the region vote"
            head_test = region_vote(test_x, head_test, args.region_vote)
            head_miou = miou(head_test, test_y, k)
        if args.region_class is not None:
            classed = region_class(torch, lab_x, lab_y, args.seed, args.region_class)
            voted += f"; {head_miou:.3f} before region_class"
            head_test = classed(test_x, head_test)
            head_miou = miou(head_test, test_y, k)
        if args.head_only:
            rows.append({"K": kk, "head": head_miou, "seconds": time.perf_counter() - t0})
            per_class = " ".join(f"{c} {v:.2f}" for c, v in zip(CLASSES, class_ious(head_test, test_y, k)))
            print(f"  K={kk}: head mIoU {rows[-1]['head']:.3f} ({per_class}{voted}; {rows[-1]['seconds']:.0f} s)", flush=True)
            continue
        gen_y, unc = head_predict(gen, ensemble, spec, gen_x, cfg.top_fraction, gen_latents, args.seed)
        gen_y = region_vote(gen_x, gen_y, args.region_vote)
        if args.region_class is not None:
            gen_y = classed(gen_x, gen_y)
        keep = np.argsort(unc, kind="stable")[: int(round(len(unc) * (1 - args.drop)))]
        syn_x, syn_y = gen_x[keep], gen_y[keep]
        real = (lab_x, lab_y)
        seed = args.seed + kk
        agree = label_agreement(oracle, gen_x, gen_y)
        r = {"K": kk, "head": head_miou, "agreement": agree["miou"]}
        print(
            f"  K={kk}: head on real per class " + " ".join(f"{c} {v:.2f}" for c, v in zip(CLASSES, class_ious(head_test, test_y, k)))
            + "; agreement per class " + " ".join(f"{c} {v:.2f}" for c, v in agree["iou"].items())
            + f"; largest mistakes against the oracle: {worst_confusions(agree['taken_for'])}{voted}",
            flush=True,
        )
        r["real K"] = miou(segment(torch, train_segmenter(torch, [(*real, 1.0)], args.seg_steps, seed, width=args.width), test_x), test_y, k)
        syn = train_segmenter(torch, [(syn_x, syn_y, 1.0)], args.seg_steps, seed, width=args.width)
        r["syn"] = miou(segment(torch, syn, test_x), test_y, k)
        if args.mix:
            mixed = train_segmenter(torch, [(syn_x, syn_y, 0.5), (*real, 0.5)], args.seg_steps, seed, width=args.width)
            r["syn+K mix"] = miou(segment(torch, mixed, test_x), test_y, k)
        fine = train_segmenter(torch, [(*real, 1.0)], args.seg_steps // 2, seed, lr=3e-4, model=copy.deepcopy(syn))
        r["syn->K ft"] = miou(segment(torch, fine, test_x), test_y, k)
        r["real 10K"] = miou(segment(torch, train_segmenter(torch, [(pool_x[: 10 * kk], pool_y[: 10 * kk], 1.0)], args.seg_steps, seed, width=args.width), test_x), test_y, k)
        r["seconds"] = time.perf_counter() - t0
        rows.append(r)
        print(f"  K={kk} ({r['seconds']:.0f} s): " + ", ".join(f"{c} {r[c]:.3f}" for c in r if c not in ("K", "seconds")), file=sys.stderr, flush=True)

    if args.head_only:
        return
    cols = ["head", "agreement", "real K", "syn", "syn->K ft", "real 10K"] + (["syn+K mix"] if args.mix else [])
    print()
    print("  mIoU on real test images")
    print("  " + f"{'K':>3} | " + " | ".join(f"{c:>10}" for c in cols) + " | best (iii) - (ii)")
    for r in rows:
        best = max(r[c] for c in ("syn", "syn->K ft", "syn+K mix") if c in r)
        print("  " + f"{r['K']:>3} | " + " | ".join(f"{r[c]:>10.3f}" for c in cols) + f" | {best - r['real K']:+.3f}")
    print()
    print("  (i) head = pixel head on real test images; agreement = head vs oracle on the generated samples; (ii) real K = U-Net on the K real; (iii) syn = U-Net on the")
    print("  head-labelled generated samples, syn->K ft = that U-Net fine-tuned on the K real (half the steps),")
    print("  syn+K mix = half of every batch from the K real; (iv) real 10K = U-Net on 10*K real labelled images.")
    print(f"  machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
