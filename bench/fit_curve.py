"""How much shape fidelity `synth fit` buys per minute, for the old recipe and the new ones.

Each recipe trains the same UNet2DModel on the same shapes-world scenes for the same compute
(minutes of this process's CPU time, with one torch thread, so other load on the machine does not
bend the comparison), and is measured every few minutes on samples of its EMA weights (DDIM,
20 steps): shape fidelity against real test scenes (the shipped oracle segmenter) and precision /
recall (the shipped feature network). Writes a table and a PNG curve. A --baseline run made on a
machine with another step rate is compared on its clock: this run's minutes become steps over the
baseline's steps per minute (on_baseline_clock).

    python bench/fit_curve.py [--minutes 20] [--every 4] [--recipes old minsnr minsnr-v]
        [--samples 200] [--seed 0] [--parallel] [--baseline EARLIER/fit_curve.json] [--out bench-out/fit_curve]
    python bench/fit_curve.py --curves RUN/fit_curve.json [--baseline ...]   (report a finished run again)

Last line, for scripts:
`old: fidelity <f> at <m> min; best <name>: fidelity <f2> at <m> min, old's final reached at <m3> min (<x>x faster)`
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARCH = dict(block_out_channels=[32, 64, 96], layers_per_block=1, attention_levels=[2], norm_num_groups=8)
# every recipe warms up 200 steps and keeps an EMA at 0.999; they differ in the loss and the lr
EPSILON = dict(warmup_steps=200, ema_decay=0.999, prediction_type="epsilon", loss_weighting="uniform", timestep_sampling="uniform")
V_MINSNR = {**EPSILON, "prediction_type": "v_prediction", "loss_weighting": "min_snr"}
RECIPES = {
    # the recipe of the first shipped shapes-32 (its stage 1; refitted since with the defaults)
    "old": {**EPSILON, "lr": 3e-4},
    "minsnr": {**EPSILON, "lr": 3e-4, "loss_weighting": "min_snr"},
    "minsnr-logsnr": {**EPSILON, "lr": 3e-4, "loss_weighting": "min_snr", "timestep_sampling": "logsnr"},
    "minsnr-v": {**V_MINSNR, "lr": 3e-4},
    # the learning rate on its own, so that a faster recipe is not credited with what lr buys
    "old-lr1e-3": {**EPSILON, "lr": 1e-3},
    "old-lr2e-3": {**EPSILON, "lr": 2e-3},
    "minsnr-v-lr1e-3": {**V_MINSNR, "lr": 1e-3},
    "minsnr-v-lr2e-3": {**V_MINSNR, "lr": 2e-3},
    "minsnr-v-lr3e-3": {**V_MINSNR, "lr": 3e-3},
}


def manifest(folder: Path, recipe: dict, images: int, minutes: float, seed: int = 0) -> Path:
    fit = {**ARCH, **recipe, "output": str(folder / "model"), "steps": 10**7, "batch_size": 32, "lr_schedule": "constant", "hflip": True}
    lines = [f"{k} = {json.dumps(v)}" for k, v in fit.items()]
    text = f'[dataset]\nnum_samples = {images}\nshard_size = {images}\nseed = {seed}\n[run]\nbatch_size = 256\n[[stage]]\nname = "shapes"\nsize = 32\ndifficulty = 0.5\nsplit = "train"\n[fit]\n' + "\n".join(lines) + "\n"
    path = folder / "fit.toml"
    path.write_text(text)
    return path


def evaluate(trainer, oracle, featnet, real_images, real_feats, n: int) -> dict:
    from synth.fidelity import prdc
    from synth_shapes import shape_fidelity

    samples = trainer.sample(n, 20)
    fid = shape_fidelity(oracle, samples, real_images)
    feats, _ = featnet.embed(samples)
    pr = prdc(real_feats, feats, k=3)
    return {"fidelity": fid["fidelity"], "precision": pr["precision"], "recall": pr["recall"]}


def run_recipe(name: str, recipe: dict, args, oracle, featnet, real_images, real_feats) -> list[dict]:
    import torch

    from synth.manifest import load_manifest
    from synth_diffusers import Trainer, load_training_data, read_fit_config

    folder = Path(tempfile.mkdtemp(prefix=f"synth-fitcurve-{name}-"))
    m = load_manifest(manifest(folder, recipe, args.images, args.minutes, args.seed))
    cfg = read_fit_config(m)
    # one thread (recipe_job set it; threads=1 keeps the reading pipeline from applying [run]
    # threads, the machine's free cores): the budget is CPU time of all the process's threads
    trainer = Trainer(m, cfg, folder / "model", load_training_data(m, lambda d, t: None, threads=1))
    assert torch.get_num_threads() == 1, torch.get_num_threads()
    curve, cpu, next_eval = [], 0.0, 0.0
    while True:
        if cpu >= next_eval * 60:
            row = {"recipe": name, "minutes": round(cpu / 60, 2), "steps": trainer.step, **evaluate(trainer, oracle, featnet, real_images, real_feats, args.samples)}
            curve.append(row)
            print(f"  {name:>16} {row['minutes']:6.1f} min {row['steps']:6d} steps: fidelity {row['fidelity']:.3f}, precision {row['precision']:.3f}, recall {row['recall']:.3f}", flush=True)
            next_eval += args.every
            if cpu >= args.minutes * 60:
                return curve
        t0 = time.process_time()
        trainer.train_step()
        cpu += time.process_time() - t0


def recipe_job(name: str, args) -> list[dict]:
    from synth_shapes import FeatureNet
    from synth_shapes import Oracle
    from synth_shapes import render_many

    import torch

    torch.set_num_threads(1)
    oracle, featnet = Oracle(), FeatureNet()
    real_images, _ = render_many(0, range(1000), 32, 0.5, "test")
    real_feats, _ = featnet.embed(real_images)
    return run_recipe(name, RECIPES[name], args, oracle, featnet, real_images, real_feats)


def reach(curve: list[dict], target: float) -> float | None:
    """The first minute from which fidelity stays at or above ``target`` (a single noisy
    evaluation above it does not count)."""
    for i, row in enumerate(curve):
        if all(r["fidelity"] >= target for r in curve[i:]):
            return row["minutes"]
    return None


def steps_per_minute(curves: dict[str, list[dict]]) -> float | None:
    """Training steps per CPU minute over a run's curves (every recipe trains the same UNet at the
    same batch, so one rate serves them all); None where no point past 0 minutes records its steps."""
    last = [c[-1] for c in curves.values() if c and c[-1]["minutes"] > 0 and "steps" in c[-1]]
    return sum(r["steps"] for r in last) / sum(r["minutes"] for r in last) if last else None


def on_baseline_clock(curves: dict[str, list[dict]], earlier: dict[str, list[dict]], tolerance: float = 0.1) -> tuple[dict, str | None]:
    """This run's curves with minutes on the baseline run's clock. A CPU minute buys different
    numbers of steps on different machines (1.5x between two hosts of this project's VMs), so
    minutes from two runs compare only at the same step rate: where the rates differ by more than
    ``tolerance``, a point's minutes become its steps over the baseline's steps per minute (the
    compute the baseline's machine needed for them); ``cpu_minutes`` keeps the measured value."""
    ours, theirs = steps_per_minute(curves), steps_per_minute(earlier)
    if ours is None or theirs is None:
        return curves, "steps per minute unknown for one of the runs: minutes compared as measured"
    if abs(ours / theirs - 1) <= tolerance:
        return curves, None
    moved = {name: [{**r, "cpu_minutes": r["minutes"], "minutes": round(r["steps"] / theirs, 2)} for r in c] for name, c in curves.items()}
    note = (
        f"this run trained {ours:.1f} steps per CPU minute, the baseline {theirs:.1f} ({ours / theirs:.2f}x): "
        f"this run's minutes below are on the baseline's clock (steps / {theirs:.1f})"
    )
    return moved, note


def summary_line(curves: dict[str, list[dict]]) -> str | None:
    """The last line: the old recipe's final fidelity and which other recipe reached it soonest
    (staying there); if none did, the one highest at its own end. Curves may differ in length
    (--baseline), so the longest curve is not preferred for being long."""
    old = curves.get("old")
    others = {k: v for k, v in curves.items() if k != "old"}
    if not old or not others:
        return None
    target = old[-1]["fidelity"]
    hits = {k: reach(c, target) for k, c in others.items()}
    reached = [k for k, h in hits.items() if h is not None]
    best = min(reached, key=hits.get) if reached else max(others, key=lambda k: others[k][-1]["fidelity"])
    hit = hits[best]
    speed = f"{old[-1]['minutes'] / hit:.1f}x faster" if hit else "never"
    return (
        f"old: fidelity {target:.3f} at {old[-1]['minutes']:.0f} min; best {best}: fidelity {others[best][-1]['fidelity']:.3f} at "
        f"{others[best][-1]['minutes']:.0f} min, old's final reached at {hit if hit is not None else 'never'} min ({speed})"
    )


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    from PIL import Image, ImageDraw

    w, h, pad = 900, 360, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    colours = [(30, 80, 200), (200, 60, 40), (40, 150, 60), (150, 60, 160), (200, 140, 0)]
    top_x = max(r["minutes"] for c in curves.values() for r in c) or 1
    panels = [("fidelity", 0), ("precision", 1), ("recall", 2)]
    pw = (w - pad) // 3
    for metric, k in panels:
        x0 = pad + k * pw
        d.line([(x0, 20), (x0, h - pad), (x0 + pw - 20, h - pad)], fill="black")
        d.text((x0 + 5, 5), metric, fill="black")
        d.text((x0, h - pad + 5), "0", fill="black")
        d.text((x0 + pw - 60, h - pad + 5), f"{top_x:.0f} min", fill="black")
        for v in (0.0, 0.5, 1.0):
            y = h - pad - v * (h - pad - 20)
            d.text((x0 - 25, y - 6), f"{v:.1f}", fill="black")
        for i, (name, c) in enumerate(curves.items()):
            pts = [(x0 + r["minutes"] / top_x * (pw - 20), h - pad - min(r[metric], 1.2) / 1.2 * (h - pad - 20) * 1.2) for r in c]
            if len(pts) > 1:
                d.line(pts, fill=colours[i % 5], width=2)
    for i, name in enumerate(curves):
        d.text((pad + 10 + i * 170, h - 20), name, fill=colours[i % 5])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def train_all(args) -> dict[str, list[dict]]:
    for name in args.recipes:
        print(f"{name}: {RECIPES[name]}", flush=True)
    if not args.parallel:
        return {name: recipe_job(name, args) for name in args.recipes}
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=len(args.recipes)) as pool:
        jobs = {name: pool.submit(recipe_job, name, args) for name in args.recipes}
        return {name: job.result() for name, job in jobs.items()}


def read_curves(ap: argparse.ArgumentParser, flag: str, path: Path) -> dict[str, list[dict]]:
    """A fit_curve.json named on the command line; anything else is one argparse line, exit 2."""
    try:
        curves = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        ap.error(f"{flag} {path}: {e}")
    if not isinstance(curves, dict) or not curves or not all(isinstance(c, list) and c for c in curves.values()):
        ap.error(f"{flag} {path}: not a fit_curve.json (recipe names, each with a list of points)")
    return curves


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="CPU minutes of training per recipe (one thread)")
    ap.add_argument("--every", type=float, default=4.0, help="evaluate every this many minutes")
    ap.add_argument("--recipes", nargs="+", default=["old", "minsnr", "minsnr-v"], choices=sorted(RECIPES))
    ap.add_argument("--images", type=int, default=20000, help="training scenes")
    ap.add_argument("--samples", type=int, default=200, help="generated samples per evaluation")
    ap.add_argument("--seed", type=int, default=0, help="the fit's seed (scenes, initial weights, batches): a second seed tells a real gap from noise")
    ap.add_argument("--out", type=Path, default=Path("bench-out/fit_curve"))
    ap.add_argument(
        "--baseline",
        type=Path,
        help="fit_curve.json of an earlier run with the same --seed, --images and --samples: its curves (e.g. the old recipe's 75 minutes) "
        "join this run's for the comparison, without training them again",
    )
    ap.add_argument("--curves", type=Path, help="report a finished run's fit_curve.json (table, curve, last line) instead of training")
    ap.add_argument("--parallel", action="store_true", help="each recipe in its own process at once (budgets are CPU time, one thread each)")
    args = ap.parse_args()
    # read before training, so that a wrong --baseline fails now rather than after the run
    earlier = read_curves(ap, "--baseline", args.baseline) if args.baseline else {}
    if args.curves:
        curves = read_curves(ap, "--curves", args.curves)
    else:
        curves = train_all(args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "fit_curve.json").write_text(json.dumps(curves, indent=1))
    first = next(iter(curves.values()))
    print("\n| recipe | " + " | ".join(f"{r['minutes']:.0f} min" for r in first) + " |")
    print("| --- |" + " --- |" * len(first))
    for name, c in curves.items():
        print(f"| {name} | " + " | ".join(f"{r['fidelity']:.2f} ({r['precision']:.2f}/{r['recall']:.2f})" for r in c) + " |")
    print("(fidelity (precision/recall) against CPU minutes of training, one thread)")
    if earlier:
        earlier = {k: v for k, v in earlier.items() if k not in curves}
        curves, note = on_baseline_clock(curves, earlier)
        if note:
            print(note)
        if any("cpu_minutes" in r for c in curves.values() for r in c):
            for name, c in curves.items():
                print(f"{name} (baseline clock): " + ", ".join(f"{r['minutes']:.1f} min {r['fidelity']:.2f}" for r in c))
        for name, c in earlier.items():
            print(f"{name} ({args.baseline}): " + ", ".join(f"{r['minutes']:.0f} min {r['fidelity']:.2f} ({r['precision']:.2f}/{r['recall']:.2f})" for r in c))
        curves = {**earlier, **curves}
    plot(curves, args.out / "fit_curve.png")
    line = summary_line(curves)
    if line:
        print(line)


if __name__ == "__main__":
    sys.exit(main())
