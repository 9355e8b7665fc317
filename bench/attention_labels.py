"""Labels from the generator's conditioning, measured on the shapes world (issue 33).

A tag-conditioned shapes model (builtin:shapes-32-tags) generates scenes from tags drawn as it
was trained; the `attention` stage labels them from where each tag's token is attended, through
`synth run`'s own pipeline (a manifest built here). Against the shapes world's oracle segmenter:
- agreement: mIoU between the labels and the oracle's on the generated samples;
- swaps: the share of shape instances (the oracle's connected regions of one class) whose
  labelled foreground is mostly another kind (also printed over the samples that draw exactly
  the kinds their tags name, where the drawing is not to blame);
- downstream: the label-efficiency bench's U-Net trained on the labelled samples (the most
  uncertain share dropped), mIoU on real test scenes.
Rows: attention with K = 0 (no labelled pixel); attention calibrated on K labelled real scenes
(split val: thresholds or the null rule, whichever labels them best); tokens (calibrated, with
one attribution token per class fitted to the K scenes' masks for --tokens steps, OVAM); combined
(the pixel head's regions at K, each given the class its attention favours); the pixel head alone at K (k-center
picks through the generator extractor, region vote); the U-Net on K real scenes; on 10 K real.

    python bench/attention_labels.py [--model builtin:shapes-32-tags] [--k 8] [--generated 2000]
        [--test 500] [--seg-steps 2000] [--width 32] [--seed 0] [--rows attention,calibrated,tokens,combined,head,real]
        [--tokens 200] [--token-lr 0.05]
        [--self-attention 16] [--maps docs/results/attention_maps.png]
    python bench/attention_labels.py --grid [--generated 64]   # K = 0 labels from each block and step alone

--grid reads the maps of one block (down, mid, up) at one sampler step at a time, on the same
generated samples, to see where the tokens bind (the issue's "maps per layer and timestep"); its
table ends with the whole stage's default (all blocks, every step) for comparison.

Last line, for scripts (K=8: the tokens row where it ran, else the calibrated row):
`attention K=0: agreement <a>, swaps <s>, downstream <d>; K=8: agreement <a8>, downstream <d8>; head K=8: agreement <h>, downstream <hd>`
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
CLASSES = ["background", "circle", "square", "triangle"]


def run_pipeline(model: str, n: int, seed: int, stages: str, scheduler: str, steps: int, batch: int = 50, generator: str = ""):
    """Samples 0..n-1 of a manifest with these stages after `generate`, made by synth's own
    Pipeline (as `synth run` makes them): images, seg, scores, conditions."""
    from synth.manifest import load_manifest
    from synth.pipeline import Pipeline

    path = Path(tempfile.mkdtemp(prefix="synth-attn-")) / "run.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [dataset]
            num_samples = {n}
            seed = {seed}
            classes = {CLASSES!r}
            [run]
            batch_size = {batch}
            [generator]
            name = "diffusers"
            model = "{model}"
            scheduler = "{scheduler}"
            steps = {steps}
            """
        ).replace("'", '"')
        + textwrap.dedent(generator)
        + '\n[[stage]]\nname = "generate"\n'

        + textwrap.dedent(stages)
    )
    pipe = Pipeline(load_manifest(path), quiet=True)
    pipe.setup()
    images, seg, scores, conds = [], [], [], []
    for start in range(0, n, batch):
        b = pipe.run_batch(list(range(start, min(start + batch, n))))
        images.append(b.images)
        seg.append(b.seg)
        scores += [next(iter(r.get("scores", {}).values()), 0.0) for r in b.records]
        conds += [r.get("condition") for r in b.records]
    return np.concatenate(images), (np.concatenate(seg) if seg[0] is not None else None), np.asarray(scores), conds, pipe


def swaps(oracle_labels: np.ndarray, labels: np.ndarray, background: int = 0) -> tuple[float, int]:
    """(share of instances labelled mostly as another kind, instances): an instance is a
    4-connected region of one oracle class; its kind is the labeller's most common non-background
    label inside it (an instance left all background is missed, not swapped)."""
    from synth.regions import instances_of

    wrong = total = 0
    for truth, lab in zip(oracle_labels, labels):
        for k, region in instances_of(truth, background):
            inside = lab[region]
            fg = inside[inside != background]
            total += 1
            if len(fg) and np.bincount(fg).argmax() != k:
                wrong += 1
    return (wrong / total if total else 0.0), total


def faithful(oracle_labels: np.ndarray, conds: list, min_pixels: int = 8) -> np.ndarray:
    """Per sample: whether it shows exactly the kinds its tags name (a kind counts as shown by
    min_pixels of the oracle's pixels). On the others no labeller that keeps to a sample's tags
    can be right: a kind drawn but not named has no class to take."""
    shown = [{CLASSES[k] for k in range(1, len(CLASSES)) if (lab == k).sum() >= min_pixels} for lab in oracle_labels]
    return np.array([s == set((c or {}).get("tags") or ()) for s, c in zip(shown, conds)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:shapes-32-tags")
    ap.add_argument("--scheduler", default="dpm++")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--generated", type=int, default=2000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--seg-steps", type=int, default=2000)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--drop", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--self-attention", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=None, help="the generator's guidance_scale (a tag model's default: 1, none)")
    ap.add_argument("--background-from", default=None, choices=["null", "threshold"], help="the stage's background rule at K = 0 (default: the stage's)")
    ap.add_argument("--threshold", type=float, default=None, help="the stage's threshold (background_from = threshold)")
    ap.add_argument("--method", default="attention", choices=["attention", "contrast"], help="the stage's method")
    ap.add_argument("--rows", default="attention,calibrated,tokens,combined,head,real")
    ap.add_argument("--tokens", type=int, default=200, help="the tokens row's fit steps")
    ap.add_argument("--token-lr", type=float, default=None, help="the tokens row's Adam step size (default: the stage's)")
    ap.add_argument("--maps", type=Path, default=None, help="write a PNG of per-class maps of a few samples")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--grid", action="store_true", help="K = 0 labels from each block and sampler step alone (no downstream)")
    args = ap.parse_args()
    if args.grid:
        return layer_grid(args)

    import torch

    from label_efficiency import miou, segment, train_segmenter
    from synth.segmetrics import class_ious
    from synth_shapes import Oracle, label_agreement, worst_confusions
    from synth_shapes import render_many

    torch.set_num_threads(args.threads)
    rows = set(args.rows.split(","))
    t_all = time.perf_counter()
    test_x, test_y = render_many(args.seed, range(args.test), 32, 0.5, "test")
    oracle = Oracle()
    k = len(CLASSES)
    results = {}
    extra = f"self_attention = {args.self_attention}\n" if args.self_attention else ""
    extra += f'method = "{args.method}"\n' if args.method != "attention" else ""
    k0 = extra + (f'background_from = "{args.background_from}"\n' if args.background_from else "") + (f"threshold = {args.threshold}\n" if args.threshold else "")
    generator = f"guidance_scale = {args.guidance}\n" if args.guidance is not None else ""
    calib = f'calibrate = {{ source = {{ name = "shapes", split = "val", size = 32, difficulty = 0.5 }}, count = {args.k} }}\n'
    head = (
        f'[[stage]]\nname = "pixelhead"\nfeatures_from = "trajectory"\nensemble = 5\nsteps = 300\ncalibration_samples = 0\n'
        f'region_vote = {{ tolerance = 25 }}\nannotations = {{ source = {{ name = "shapes", split = "val", size = 32, difficulty = 0.5 }}, count = {args.k} }}\n'
    )
    plans = {
        "attention": ("attention K=0", f'[[stage]]\nname = "attention"\n{k0}'),
        "calibrated": (f"attention K={args.k}", f'[[stage]]\nname = "attention"\n{extra}{calib}'),
        "tokens": (f"attention K={args.k} + tokens", f'[[stage]]\nname = "attention"\n{extra}{calib}tokens = {args.tokens}\n' + (f"token_lr = {args.token_lr}\n" if args.token_lr else "")),
        "combined": (f"combined K={args.k}", head + f'[[stage]]\nname = "attention"\nregions_from = "labels"\n{extra}'),
        "head": (f"head K={args.k}", head),
    }
    print(f"attention labels: {args.model} ({args.scheduler}:{args.steps}{f', guidance {args.guidance}' if args.guidance is not None else ''}), {args.generated} generated, {args.test} real test scenes, seed {args.seed}")
    for key, (name, stages) in plans.items():
        if key not in rows:
            continue
        t0 = time.perf_counter()
        x, y, unc, conds, pipe = run_pipeline(args.model, args.generated, args.seed, stages, args.scheduler, args.steps, generator=generator)
        agree = label_agreement(oracle, x, y)
        ref, _ = oracle.predict(x)
        swap, instances = swaps(ref, y)
        true = faithful(ref, conds)
        swap_true, instances_true = swaps(ref[true], y[true])
        keep = np.argsort(unc, kind="stable")[: int(round(len(unc) * (1 - args.drop)))]
        net = train_segmenter(torch, [(x[keep], y[keep], 1.0)], args.seg_steps, args.seed, width=args.width)
        pred = segment(torch, net, test_x)
        down = miou(pred, test_y, k)
        results[key] = {"agreement": agree["miou"], "swaps": swap, "downstream": down}
        print(
            f"  {name}: agreement {agree['miou']:.3f} ({' '.join(f'{c} {v:.2f}' for c, v in agree['iou'].items())}; {worst_confusions(agree['taken_for'])}), "
            f"swaps {swap:.3f} of {instances} instances ({swap_true:.3f} of {instances_true} on the {true.mean():.0%} of samples that show their tags), downstream {down:.3f} ({' '.join(f'{c} {v:.2f}' for c, v in zip(CLASSES, class_ious(pred, test_y, k)))}) "
            f"[{time.perf_counter() - t0:.0f} s]",
            flush=True,
        )
        if key == "attention" and args.maps is not None:
            write_maps(pipe, x[:6], conds[:6], y[:6], args.maps)
    if "real" in rows:
        pool_x, pool_y = render_many(args.seed, range(10 * args.k), 32, 0.5, "val")
        for name, n in ((f"real K={args.k}", args.k), (f"real 10K={10 * args.k}", 10 * args.k)):
            net = train_segmenter(torch, [(pool_x[:n], pool_y[:n], 1.0)], args.seg_steps, args.seed, width=args.width)
            results[name] = {"downstream": miou(segment(torch, net, test_x), test_y, k)}
            print(f"  {name}: downstream {results[name]['downstream']:.3f}", flush=True)
    print(f"  machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; total {time.perf_counter() - t_all:.0f} s")
    get = lambda row, col: f"{results[row][col]:.3f}" if row in results else "-"  # noqa: E731
    few = "tokens" if "tokens" in results else "calibrated"
    print(
        f"attention K=0: agreement {get('attention', 'agreement')}, swaps {get('attention', 'swaps')}, downstream {get('attention', 'downstream')}; "
        f"K={args.k}: agreement {get(few, 'agreement')}, downstream {get(few, 'downstream')}; "
        f"head K={args.k}: agreement {get('head', 'agreement')}, downstream {get('head', 'downstream')}"
    )


def layer_grid(args) -> None:
    """Agreement and swaps of K = 0 labels from one block at one sampler step at a time."""
    import torch

    from synth_attention import Rule, label
    from synth_shapes import Oracle, label_agreement

    torch.set_num_threads(args.threads)
    generator = f"guidance_scale = {args.guidance}\n" if args.guidance is not None else ""
    t0 = time.perf_counter()
    x, _, _, conds, pipe = run_pipeline(args.model, args.generated, args.seed, "", args.scheduler, args.steps, generator=generator)
    gen = pipe.generator
    z = gen.sample_latents(list(range(args.generated)), args.seed)
    oracle = Oracle()
    ref, _ = oracle.predict(x)
    path = [int(t) for t in gen._fresh_scheduler().timesteps]
    steps = [path[i] for i in np.linspace(0, len(path) - 1, 5).round().astype(int)]
    rule = Rule(0, True, tuple([0.5] * len(CLASSES)))
    print(f"attention maps by block and step: {args.model} ({args.scheduler}:{args.steps}), {args.generated} generated, seed {args.seed}, K = 0, null rule")
    print("| blocks | step (timestep) | agreement | swaps |")
    print("| --- | --- | --- | --- |")
    best = None
    for blocks in (["down"], ["mid"], ["up"], None):
        for t in steps + [None]:
            if (blocks is None) != (t is None):
                continue  # one block at one step, or the stage's default (all of them)
            spec = gen.attention_spec({"blocks": blocks, "timesteps": None if t is None else [t]})
            maps = gen.attention(x, conds, spec, latents=z)
            y, _ = label(maps.classes, maps.named, maps.null, rule)
            agree = label_agreement(oracle, x, y)["miou"]
            swap, _ = swaps(ref, y)
            where = "all" if blocks is None else blocks[0]
            when = "all" if t is None else f"{path.index(t) + 1} of {len(path)} ({t})"
            print(f"| {where} | {when} | {agree:.3f} | {swap:.3f} |", flush=True)
            if blocks is not None and (best is None or agree > best[0]):
                best = (agree, swap, where, when)
    print(f"  machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; total {time.perf_counter() - t0:.0f} s")
    print(f"best single block and step: {best[2]} at {best[3]}: agreement {best[0]:.3f}, swaps {best[1]:.3f}")


def write_maps(pipe, images: np.ndarray, conditions: list, labels: np.ndarray, out: Path) -> None:
    """A PNG: per sample, the image, each class's attention map, and the labels."""
    from PIL import Image

    gen = pipe.generator
    stage = next(s for step, s in pipe.steps if step.name == "attention")
    z = gen.sample_latents(list(range(len(images))), gen.context.seed)
    maps = gen.attention(images, conditions, stage.spec, latents=z, decode=[{"index": i, "seed": gen.context.seed} for i in range(len(images))])
    palette = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200]], np.uint8)
    scale = 4
    rows = []
    for i in range(len(images)):
        tiles = [images[i]]
        for c in range(1, len(CLASSES)):
            m = maps.classes[i, c]
            m = m / m.max() if m.max() > 0 else m
            tiles.append((np.stack([m] * 3, -1) * 255).astype(np.uint8))
        tiles.append(palette[labels[i]])
        rows.append(np.concatenate([np.pad(t, ((1, 1), (1, 1), (0, 0)), constant_values=255) for t in tiles], 1))
    grid = np.concatenate(rows, 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(out)


if __name__ == "__main__":
    main()
