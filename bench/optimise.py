"""What `synth optimise` buys, in real labelled scenes (issue 36).

On the shapes world, segmentation as the label-efficiency bench sets it up: the pixel head's
manifest (builtin:shapes-32, the pixel head trained on K = 8 labelled scenes, the 10% most
uncertain dropped; the quickstart's until region_class joined it, now the regions row) makes a
synthetic set; the task's U-Net trains on it and is scored by mIoU on
real test scenes. The real learning curve (the same U-Net on n real labelled scenes, n = 4..512)
turns each set's test score into a *real-equivalent*: how many real labelled scenes give the same
mIoU (interpolated on log n). Rows, all at the same sample count:
- default: the manifest as written;
- optimised: `synth optimise` over the space below (sampler x drop fraction, or --space's; each sampler
  calibrates its own head, ~4 min on 2 CPU cores), on `--val` real validation scenes, within
  `--budget` runs of the default;
- feedback: the optimised manifest with [generator.feedback] toward the pixels the search's best
  downstream model (its U-Net, saved as best-model/) is unsure of (with --feedback-weight);
- influence: twice the samples, the influence stage on the validation scenes, select the half
  that teaches most;
- regions: the default manifest with the region_class stage after the head (each region the head
  drew classed as a whole, by a classifier trained on the head's own K labelled scenes; the head's
  votes weighted by --region-prior): the quickstart's labelling now (--samples 600 makes its
  samples);
- ceiling: the default row's kept images labelled by the shapes oracle instead of the pixel head
  (not a manifest: what these images could teach with the best labels the world has without a
  person, so how much of the gap to a goal is the labels' and how much the images').

    python bench/optimise.py [--samples 500] [--val 50] [--test 500] [--seg-steps 1000]
        [--budget 10] [--rows default,optimised,feedback,influence,regions,ceiling] [--space sampler|labels|picks|regions]
        [--seg-seeds 3] [--repeats 1] [--out /tmp/synth-optimise-bench]

Each row also gives its labels' agreement with the shapes oracle (mIoU of the labels against the
oracle's on the kept images). Every test score (the curve's points and each row's) is the mean
over --seg-seeds trainings of the U-Net (seeds 0, 1, ...): one training's mIoU moves with its
seed by as much as settings differ, and on the curve's flat end a small move is a large factor in
real-equivalent scenes (docs/results/optimise.md). --repeats sets the search's own `repeats`
(trainings per trial on the validation scenes).

Last line, for scripts:
`real-equivalent: default <n0>, optimised <n1> (<r>x), search <c> runs`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["background", "circle", "square", "triangle"]

SPACE = """
[task]
name = "segmentation"
steps = {steps}
width = {width}
[search]
budget = {budget}
eta = 3
min_samples = {min_samples}
repeats = {repeats}
[values]
"generator.scheduler" = ["dpm++", "euler_a"]
"stage.drop_uncertain.fraction" = [0.05, 0.1, 0.3]
"""
# --space labels: what decides the labels at the same K (the head's features, one class per colour
# region, how many uncertain samples go), the levers docs/results/label-efficiency.md measured
LABELS_VALUES = """
"stage.pixelhead.features_from" = ["noised", "trajectory"]
"stage.pixelhead.region_vote.tolerance" = [25]
"stage.drop_uncertain.fraction" = [0.1, 0.3]
"""
# --space picks: which K scenes get labels (the K most varied of the first 100 or 400 of the
# labelled source, by the generator's own features: `annotations.pick_from`) with one class per
# colour region, and how many uncertain samples go
PICKS_VALUES = """
"stage.pixelhead.annotations.pick_from" = [100, 400]
"stage.pixelhead.region_vote.tolerance" = [25]
"stage.drop_uncertain.fraction" = [0.1, 0.3]
"""
# --space regions: the region_class stage after the head, on or off (`enabled`), and how many
# uncertain samples go
REGIONS_VALUES = """
"stage.region_class.enabled" = [false, true]
"stage.drop_uncertain.fraction" = [0.1, 0.3]
"""
SPACES = {"labels": LABELS_VALUES, "picks": PICKS_VALUES, "regions": REGIONS_VALUES}


def region_stage(manifest: str, prior: float, enabled: bool = True) -> str:
    """The region_class stage, learning from the manifest's pixel-head annotations."""
    annotations = next(st for st in tomllib.loads(manifest)["stage"] if st["name"] == "pixelhead")["annotations"]
    src = annotations["source"]
    return (f'[[stage]]\nname = "region_class"\nprior = {prior}\nenabled = {str(enabled).lower()}\nannotations = {{ source = {{ name = "shapes", '
            f'split = "{src["split"]}", size = {src["size"]}, difficulty = {src["difficulty"]} }}, count = {annotations["count"]} }}\n')


def write_folder(folder: Path, images, masks, prefix: str) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, (im, m) in enumerate(zip(images, masks)):
        Image.fromarray(im).save(folder / f"{prefix}{i:04d}.png")
        Image.fromarray(m).save(folder / f"{prefix}{i:04d}.seg.png")
    return folder


def manifest_text(samples: int, extra_generator: str = "", extra_stages: str = "", fraction: float = 0.1, scheduler: str = "dpm++", steps: int = 20) -> str:
    """The quickstart's generator and pixel head (its shipped head loads, nothing trains) and
    drop_uncertain, at ``samples``: the quickstart without region_class and the metrics."""
    qs = tomllib.loads((ROOT / "manifests" / "quickstart.toml").read_text())
    pixelhead = next(s for s in qs["stage"] if s["name"] == "pixelhead")
    src = pixelhead["annotations"]["source"]
    return f"""
[dataset]
name = "bench-optimise"
output = "out"
num_samples = {samples}
shard_size = {min(samples, 500)}
seed = 0
classes = {CLASSES!r}
[run]
batch_size = 50
[generator]
name = "diffusers"
model = "builtin:shapes-32"
scheduler = "{scheduler}"
steps = {steps}
{extra_generator}
[[stage]]
name = "generate"
[[stage]]
name = "pixelhead"
ensemble = {pixelhead['ensemble']}
steps = {pixelhead['steps']}
calibration_samples = {pixelhead['calibration_samples']}
annotations = {{ source = {{ name = "shapes", split = "{src['split']}", size = {src['size']}, difficulty = {src['difficulty']} }}, count = {pixelhead['annotations']['count']} }}
{extra_stages}
[[stage]]
name = "drop_uncertain"
fraction = {fraction}
"""


def real_equivalent(score: float, curve: list[tuple[int, float]]) -> float:
    """n real scenes giving ``score`` on the curve, interpolated on log n (clamped to its ends)."""
    ns = np.log([n for n, _ in curve])
    ys = np.array([y for _, y in curve])
    ys = np.maximum.accumulate(ys)  # a noisy curve made monotone for the inverse
    if score <= ys[0]:
        return float(curve[0][0]) * (score / ys[0] if ys[0] > 0 else 1.0)
    if score >= ys[-1]:
        return float(curve[-1][0])
    return float(np.exp(np.interp(score, ys, ns)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--val", type=int, default=50)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--seg-steps", type=int, default=1000)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--budget", type=float, default=10)
    ap.add_argument("--min-samples", type=int, default=50)
    ap.add_argument("--curve", default="4,8,16,32,64,128,256,512")
    ap.add_argument("--feedback-weight", type=float, default=0.05)
    ap.add_argument("--rows", default="default,optimised,feedback,influence")
    ap.add_argument("--space", default="sampler", choices=["sampler", "labels", "picks", "regions"],
                    help="sampler: sampler x drop fraction; labels: the head's features x region vote x drop fraction; picks: which K scenes are labelled x region vote x drop fraction; regions: region_class on or off x drop fraction")
    ap.add_argument("--region-prior", type=float, default=0.5, help="the regions row's region_class prior")
    ap.add_argument("--seg-seeds", type=int, default=3, help="U-Net trainings per test score (the curve's and each row's), their mean reported")
    ap.add_argument("--repeats", type=int, default=1, help="the search's trainings per trial ([search] repeats)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/synth-optimise-bench"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    rows = args.rows.split(",")
    if "ceiling" in rows and "default" not in rows:  # before minutes of learning curve
        sys.exit("--rows ceiling needs the default row (it relabels the default's images)")

    import torch

    torch.set_num_threads(args.threads)
    from synth.engine import run
    from synth.manifest import load_manifest
    from synth.progress import BarProgress
    from synth.tasks import read_samples
    from synth_optimise import optimise
    from synth_optimise import SegmentationConfig, SegmentationTask
    from synth_shapes import Oracle, label_agreement, render_many

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    task = SegmentationTask(SegmentationConfig(steps=args.seg_steps, width=args.width), CLASSES)
    test_x, test_y = render_many(0, range(args.test), 32, 0.5, "test")
    val_x, val_y = render_many(1, range(args.val), 32, 0.5, "val")  # another seed than the head's labelled scenes
    val = write_folder(out / "val", val_x, val_y, "v")
    print(f"optimise bench: shapes world 32x32, segmentation U-Net width {args.width} x {args.seg_steps} steps; {args.samples} samples per set; "
          f"{args.val} validation, {args.test} test scenes; {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}", flush=True)

    def test_score(x, y) -> tuple[float, list[float]]:
        """Mean test mIoU of --seg-seeds trainings on (x, y), and each one's."""
        each = [task.evaluate(task.train(x, y, seed), test_x, test_y)["miou"] for seed in range(args.seg_seeds)]
        return float(np.mean(each)), each

    def scored(name: str, x, y, what: str) -> dict:
        """A row: the test score of (x, y), each training's, and its real-equivalent, printed."""
        test, each = test_score(x, y)
        r = {"row": name, "kept": len(x), "test_miou": test, "each": each, "real_equivalent": real_equivalent(test, curve)}
        print(f"  {what}: {len(x)} kept, test mIoU {test:.3f} ({' '.join(f'{v:.3f}' for v in each)}), "
              f"real-equivalent {r['real_equivalent']:.0f} scenes", end="", flush=True)
        return r

    t0 = time.perf_counter()
    # the real curve depends only on these: an earlier run's in the same --out is read back
    recipe = {"curve": args.curve, "test": args.test, "seg_steps": args.seg_steps, "width": args.width, "seg_seeds": args.seg_seeds, "torch": torch.__version__}
    saved = out / "curve.json"
    done = json.loads(saved.read_text()) if saved.is_file() else {}
    if done.get("recipe") == recipe:
        curve, curve_each, where = [tuple(p) for p in done["curve"]], {int(k): v for k, v in done["each"].items()}, f"read back from {saved}"
    else:
        curve, curve_each = [], {}
        pool_x, pool_y = render_many(2, range(max(int(n) for n in args.curve.split(","))), 32, 0.5, "train")
        for n in (int(v) for v in args.curve.split(",")):
            score, curve_each[n] = test_score(pool_x[:n], pool_y[:n])
            curve.append((n, score))
        saved.write_text(json.dumps({"recipe": recipe, "curve": curve, "each": curve_each}))
        where = f"{time.perf_counter() - t0:.0f} s"
    print(f"  real learning curve (test mIoU, mean of {args.seg_seeds} trainings): " + ", ".join(f"{n}: {s:.3f}" for n, s in curve)
          + f" ({where})", flush=True)

    def score_set(name: str, text: str) -> dict:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "manifest.toml"
        path.write_text(text)
        t = time.perf_counter()
        run(load_manifest(path), output=folder / "data", progress=BarProgress(disable=True), quiet=True, threads=args.threads)
        x, y = read_samples(folder / "data", "seg")
        r = scored(name, x, y, name)
        r["seconds"] = time.perf_counter() - t
        # how near the labels are to the best this world has without a person
        agreement = label_agreement(oracle, x, y)
        r["agreement"], r["agreement_per_class"] = agreement["miou"], agreement["iou"]
        per_class = ", ".join(f"{c} {v:.2f}" for c, v in agreement["iou"].items())
        print(f"; agreement with the oracle {r['agreement']:.3f} ({per_class}) ({r['seconds']:.0f} s)", flush=True)
        return r

    results = {}
    oracle = Oracle()
    default_text = manifest_text(args.samples)
    if "default" in rows:
        results["default"] = score_set("default", default_text)
    search = None
    best_text = default_text
    if "optimised" in rows or "feedback" in rows:
        (out / "search").mkdir(exist_ok=True)
        base = out / "search" / "manifest.toml"
        # --space regions switches the region_class stage on and off: the search's manifest has it, off
        base.write_text(manifest_text(args.samples, extra_stages=region_stage(default_text, args.region_prior, False)) if args.space == "regions" else default_text)
        space = out / "search" / "space.toml"
        text = SPACE.format(steps=args.seg_steps, width=args.width, budget=args.budget, min_samples=args.min_samples, repeats=args.repeats)
        if args.space in SPACES:
            text = text[: text.index("[values]")] + "[values]" + SPACES[args.space]
        space.write_text(text)
        t = time.perf_counter()
        search = optimise(base, space, str(val), out=out / "search" / "trials", quiet=False, threads=args.threads)
        print(f"  search: best {search['best']['label']} (validation mIoU {search['best']['score']:.3f}), {len(search['trials'])} trials, "
              f"{search['cost_runs']:.2f} runs ({time.perf_counter() - t:.0f} s)", flush=True)
        best_text = (out / "search" / "trials" / "best.toml").read_text()
        if "optimised" in rows:
            results["optimised"] = score_set("optimised", best_text)
    if "feedback" in rows:
        # The downstream segmenter the search's best trial trained: sampling leans toward the
        # scenes whose pixels it cannot tell apart.
        folder = search["best_model"]
        data = tomllib.loads(best_text)
        gen = data["generator"]
        extra = f'feedback = {{ classifier = {{ name = "task_model", path = "{folder}" }}, weight = {args.feedback_weight} }}'
        text = manifest_text(args.samples, extra, fraction=data["stage"][-1]["fraction"], scheduler=gen["scheduler"], steps=gen["steps"])
        results["feedback"] = score_set("feedback", text)
    if "regions" in rows:
        results["regions"] = score_set("regions", manifest_text(args.samples, extra_stages=region_stage(default_text, args.region_prior)))
    if "ceiling" in rows:
        x, _ = read_samples(out / "default" / "data", "seg")
        oracle_y, _ = oracle.predict(x)
        results["ceiling"] = scored("ceiling", x, oracle_y, "ceiling (the default's images, oracle labels)")
        print(flush=True)
    if "influence" in rows:
        extra = f'[[stage]]\nname = "influence"\nvalidation = "{val}"\ntask = {{ name = "segmentation", width = {args.width} }}\n'
        text = manifest_text(2 * args.samples, extra_stages=extra) + f'[[stage]]\nname = "select"\nmethod = "influence"\nkeep = {int(round(args.samples * 0.9))}\n'
        results["influence"] = score_set("influence", text)

    print("\n| row | kept samples | agreement with the oracle | test mIoU | real-equivalent scenes |\n| --- | --- | --- | --- | --- |")
    for r in results.values():
        print(f"| {r['row']} | {r['kept']} | {r.get('agreement', 1.0):.3f} | {r['test_miou']:.3f} | {r['real_equivalent']:.0f} |")
    (out / "results.json").write_text(json.dumps({"curve": curve, "curve_each": curve_each, "seg_seeds": args.seg_seeds, "rows": results, "search": search and {k: search[k] for k in ("best", "cost_runs", "tried", "settings")}}, indent=1, default=str))
    n0 = results.get("default", {}).get("real_equivalent", float("nan"))
    n1 = results.get("optimised", {}).get("real_equivalent", float("nan"))
    cost = search["cost_runs"] if search else float("nan")
    print(f"real-equivalent: default {n0:.0f}, optimised {n1:.0f} ({n1 / n0:.2f}x), search {cost:.1f} runs")


if __name__ == "__main__":
    sys.exit(main())
