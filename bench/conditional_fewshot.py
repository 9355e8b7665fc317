"""Few labels into the conditioning (issue 33, part 6): do K labelled images per class, put into a
generator's conditioning, teach a classifier more than the K images themselves?

The task: which kind of shape a scene shows (circle, square, triangle) on scenes of one kind, the
views bench's task, learned by the optimise plugin's small CNN on batches turned the ways the kind
does not change with (--augment: a quarter turn, a mirror, the colour channels' order; on plain
batches the CNN barely learnt the task, with them real 10 K clearly beats real K: figures in
docs/results/conditional-fewshot.md; the class of the largest shape in mixed scenes, this bench's
first task, was not learnt at all). Per seed and K:
- real K: the CNN on K labelled scenes per class;
- real K + conditional: `synth fit` a tag model from builtin:shapes-32 (init_shared) on a pool of
  scenes (mixed ones too) of which only the K per class are tagged with their kind (the rest untagged:
  `untagged = "unlabelled"`, trained with the null token; `tagged_share` of each batch drawn from
  the tagged ones), then `synth run` it per class with that
  class's tag and classifier-free guidance; the CNN on the K real ones plus the generated ones,
  each labelled with the tag it was generated from;
- real 10 K: the CNN on ten times as many labelled scenes;
- faithful: the share of the generated scenes that show only the kind they were made for (by
  the shapes oracle): whether K tags were enough to bind the tokens.
Accuracy on real test scenes. The fit is the cost: on 2 CPU cores a step of the tag model takes
about 3.5 s (shapes-32-tags' card), so the defaults want a GPU or hours; --fit-steps trades.

    python bench/conditional_fewshot.py [--k 2,5,20] [--seeds 3] [--first-seed 0] [--pool 4000] [--fit-steps 1500]
        [--per-class 400] [--guidance 3.0] [--tagged-share 0.25] [--clf-steps 1500] [--augment rotate,flip,channels]
        [--real-only] [--out /tmp/synth-fewshot-bench]

Every seed also trains the CNN on 20 real labelled scenes per class, the goal's baseline, whether
or not K = 20 is in --k; --real-only skips the fits (the real rows alone, minutes: is the task
learnt at all?), and --first-seed lets seeds run as separate processes; --summarise DIR...
merges the results-*.json those runs wrote into one table and last line (the runs whose CNN was
trained with the same --augment). A seed's folder under --out that holds a finished fit and
samples of exactly this recipe (the same pool, tags and settings) is read again, not refitted:
a new classifier is measured on the same samples in minutes.

Last line, for scripts:
`conditional K=5: <acc>; real K=5: <acc>; real K=20: <acc>`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
CLASSES = ["circle", "square", "triangle"]

FIT = """
[dataset]
name = "fewshot-pool"
num_samples = {pool}
seed = {seed}
classes = {classes}

[run]
batch_size = 256

[[stage]]
name = "folder"
path = "{folder}"
tags_file = "{tags}"
untagged = "unlabelled"

[fit]
output = "{model}"
tags = true
init_from = "builtin:shapes-32"
init_shared = true
block_out_channels = [32, 64, 96]
layers_per_block = 1
attention_levels = [1, 2]
norm_num_groups = 8
cross_attention_dim = 64
attention_heads = 4
tag_dropout = 0.1
tagged_share = {tagged_share}
num_train_timesteps = 1000
beta_schedule = "squaredcos_cap_v2"
prediction_type = "v_prediction"
loss_weighting = "min_snr"
steps = {steps}
batch_size = 32
lr = 1e-3
lr_schedule = "cosine"
warmup_steps = {warmup}
ema_decay = 0.999
checkpoint_every = {steps}
grid_samples = 4
grid_steps = 4
"""

GENERATE = """
[dataset]
name = "gen"
output = "{output}"
num_samples = {n}
seed = {seed}
classes = {classes}

[generator]
name = "diffusers"
model = "{model}"
scheduler = "ddim"
steps = 25
guidance_scale = {guidance}
tags = [["{cls}"]]

[[stage]]
name = "generate"
"""


def scenes(seed: int, n: int, split: str, single_only: bool):
    """Scenes and their label: the one kind of shape a scene shows (0..2), or -1 when it shows
    several kinds or none; ``single_only`` keeps only the labelled ones."""
    from synth_shapes import render_many
    from views_efficiency import single_kind

    images, masks = render_many(seed, range(n), 32, 0.5, split)
    y = single_kind(masks)
    keep = y >= 0 if single_only else np.ones(len(y), bool)
    return images[keep], y[keep]


def first_per_class(y: np.ndarray, k: int) -> np.ndarray:
    return np.concatenate([np.flatnonzero(y == c)[:k] for c in range(len(CLASSES))])


def synth(*args) -> None:
    res = subprocess.run([sys.executable, "-m", "synth", *map(str, args)], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"synth {' '.join(map(str, args))} failed:\n{res.stderr}")


def accuracy(torch, x, y, test, steps: int, seed: int, augment: tuple[str, ...]) -> float:
    from synth_optimise import classify, train_classifier

    net = train_classifier(torch, x, y, steps, seed, len(CLASSES), augment=augment)
    return float((classify(torch, net, test[0]) == test[1]).mean())


def conditional_samples(root: Path, pool_x, labelled: np.ndarray, pool_y, seed: int, args) -> tuple[np.ndarray, np.ndarray]:
    """Fit a tag model with only ``labelled`` tagged, then generate per class."""
    from io import BytesIO

    from PIL import Image

    from synth.reading import iter_samples, shard_paths

    folder = root / "pool"
    root.mkdir(parents=True, exist_ok=True)
    tags = "".join(json.dumps({"file": f"{i:05d}.png", "tags": [CLASSES[pool_y[i]]]}) + "\n" for i in labelled)
    if not reusable(root / "tags.jsonl", tags):
        (root / "tags.jsonl").write_text(tags)
        (root / "fit.toml").unlink(missing_ok=True)  # other tags: the model there is not this one
    fit = root / "fit.toml"
    recipe = FIT.format(pool=len(pool_x), seed=seed, classes=json.dumps(CLASSES), folder=folder, tags=root / "tags.jsonl", model=root / "model",
                        steps=args.fit_steps, warmup=min(200, args.fit_steps // 5), tagged_share=args.tagged_share)
    fitted = reusable(fit, recipe) and finished_fit(root / "model")
    if not fitted:  # the pool's images are written only for a fit that runs
        folder.mkdir(exist_ok=True)
        for i, im in enumerate(pool_x):
            Image.fromarray(im).save(folder / f"{i:05d}.png")
        fit.write_text(recipe)
        synth("fit", fit, "-q")
    xs, ys = [], []
    for c, name in enumerate(CLASSES):
        manifest = root / f"gen-{name}.toml"
        run = GENERATE.format(output=root / f"gen-{name}", n=args.per_class, seed=seed, classes=json.dumps(CLASSES), model=root / "model",
                              guidance=args.guidance, cls=name)
        if not (fitted and reusable(manifest, run)):
            manifest.write_text(run)
            synth("run", manifest, "-q", "--overwrite")
        else:  # the same run over the same model: resumed, so an interrupted one is finished
            synth("run", manifest, "-q")
        for shard in shard_paths(root / f"gen-{name}"):
            for s in iter_samples(shard):
                xs.append(np.asarray(Image.open(BytesIO(s["png"])).convert("RGB")))
                ys.append(c)
    return np.stack(xs), np.asarray(ys)


def reusable(path: Path, text: str) -> bool:
    """Whether an earlier run of this bench left ``path`` written with exactly ``text`` (the same
    pool, tags, settings and folder), so what it made can be read again instead of refitted."""
    return path.is_file() and path.read_text() == text


def finished_fit(model: Path) -> bool:
    card = model / "fit.json"
    return card.is_file() and json.loads(card.read_text()).get("finished") is True


def faithful(x: np.ndarray, y: np.ndarray) -> float:
    """The share of generated scenes that show only the kind they were made for, by the shapes
    oracle (8 px or more of a kind count as showing it): how well K tags bound their tokens."""
    from synth_shapes import Oracle
    from views_efficiency import single_kind

    labels, _ = Oracle().predict(x)
    return float(np.mean(single_kind(labels, min_pixels=8) == y))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", default="2,5,20")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run are first-seed .. first-seed + seeds - 1")
    ap.add_argument("--real-only", action="store_true", help="the real rows only, no fit or generation")
    ap.add_argument("--pool", type=int, default=4000, help="training scenes of the fit (only K per class tagged)")
    ap.add_argument("--fit-steps", type=int, default=1500)
    ap.add_argument("--tagged-share", type=float, default=0.25, help="share of each fit batch drawn from the K tagged scenes per class")
    ap.add_argument("--per-class", type=int, default=400, help="generated images per class")
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--clf-steps", type=int, default=1500)
    ap.add_argument("--augment", default="rotate,flip,channels", help="what the CNN's batches are turned by (none: plain batches, as the first runs)")
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/synth-fewshot-bench"))
    ap.add_argument("--summarise", type=Path, nargs="+", metavar="DIR", help="only merge the results-*.json in these folders and print the table")
    args = ap.parse_args()
    augment = tuple(a for a in args.augment.split(",") if a and a != "none")
    if args.summarise:
        return summarise(args.summarise, augment)
    import torch

    ks = [int(k) for k in args.k.split(",")]
    test = scenes(0, args.test, "test", single_only=True)
    print(f"conditional few-shot bench: single-kind scenes (which kind), K in {ks}, {args.seeds} seeds; fit {args.fit_steps} steps on {args.pool} scenes; "
          f"{args.per_class} generated per class (guidance {args.guidance}); {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}", flush=True)
    print("| seed | K | real K | real K + conditional | real 10 K | faithful | seconds |\n| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        pool_x, pool_y = scenes(100 + seed, args.pool, "train", single_only=False)  # mixed scenes stay, untagged
        trained: dict[int, float] = {}  # per class count: real K = 20, real 10 K at K = 2 and the baseline are one training

        def real_accuracy(n: int) -> float:
            if n not in trained:
                take = first_per_class(pool_y, n)
                trained[n] = accuracy(torch, pool_x[take], pool_y[take], test, args.clf_steps, seed, augment)
            return trained[n]

        rows.append({"seed": seed, "k": 20, "baseline": real_accuracy(20), "augment": list(augment)})
        print(f"| {seed} | 20 | {rows[-1]['baseline']:.3f} | | | | baseline |", flush=True)
        for k in ks:
            t0 = time.perf_counter()
            lab = first_per_class(pool_y, k)
            real, real10 = real_accuracy(k), real_accuracy(10 * k)
            cond = faith = float("nan")
            if not args.real_only:
                gx, gy = conditional_samples(args.out / f"s{seed}-k{k}", pool_x, lab, pool_y, seed, args)
                faith = faithful(gx, gy)
                cond = accuracy(torch, np.concatenate([pool_x[lab], gx]), np.concatenate([pool_y[lab], gy]), test, args.clf_steps, seed, augment)
            rows.append({"seed": seed, "k": k, "real": real, "conditional": cond, "real10": real10, "faithful": faith, "augment": list(augment)})
            print(f"| {seed} | {k} | {real:.3f} | {cond:.3f} | {real10:.3f} | {faith:.2f} | {time.perf_counter() - t0:.0f} |", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = f"{args.first_seed}-{args.first_seed + args.seeds - 1}-k{'-'.join(map(str, ks))}-{'-'.join(augment) or 'plain'}"
    (args.out / f"results-{runs}.json").write_text(json.dumps(rows, indent=1))
    print(last_line(rows))


def last_line(rows: list[dict]) -> str:
    """The issue's line, always at K = 5 (nan where K = 5 was not run)."""
    def mean(key: str, k: int) -> float:
        vals = [r[key] for r in rows if r["k"] == k and key in r and not np.isnan(r[key])]
        return float(np.mean(vals)) if vals else float("nan")

    return f"conditional K=5: {mean('conditional', 5):.3f}; real K=5: {mean('real', 5):.3f}; real K=20: {mean('baseline', 20):.3f}"


def summarise(folders: list[Path], augment: tuple[str, ...]) -> None:
    """One row per (seed, K) from several runs' results with the CNN trained the same way (runs
    from before --augment trained it on plain batches): the real rows are the same in every run
    of a seed (seeded), the conditional one comes from whichever run fitted it."""
    merged: dict[tuple, dict] = {}
    for path in sorted(p for f in folders for p in f.glob("results*.json")):
        for r in json.loads(path.read_text()):
            if tuple(r.get("augment", ())) != augment:
                continue
            key = (r["seed"], r["k"], "baseline" in r)
            row = merged.setdefault(key, dict(r))
            if not np.isnan(r.get("conditional", np.nan)):
                row.update({k: r[k] for k in ("conditional", "faithful") if k in r})
    rows = [merged[k] for k in sorted(merged)]
    print("| seed | K | real K | real K + conditional | real 10 K | faithful |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "baseline" in r:  # the K = 20 baseline, shown where no K = 20 row shows it
            if (r["seed"], 20, False) not in merged:
                print(f"| {r['seed']} | 20 | {r['baseline']:.3f} | | | |")
        else:
            print(f"| {r['seed']} | {r['k']} | {r['real']:.3f} | {r.get('conditional', float('nan')):.3f} | {r['real10']:.3f} | {r.get('faithful', float('nan')):.2f} |")
    print(last_line(rows))


if __name__ == "__main__":
    main()
