"""Does `synth discover` find what a classifier relies on, when we know the answer?

Classifiers of the shapes world's "circle or square" (scenes whose shapes are all of one kind)
are trained on real scenes with a planted shortcut, and one clean:
  - colour: the shapes are red-ish in circle scenes and blue-ish in square scenes, 95% of the time
    (5% the other way round); the right explanation is "colour", not "kind";
  - background: the background is tinted warm in circle scenes and cool in square scenes, 95%;
  - clean: no shortcut; the right explanation is the shapes' kind.
For each, three seeds: a classifier (small_cnn, saved as the `torch` classifier reads it), then
`synth discover` on images a shipped generator (builtin:shapes-32, or --model) makes, target "square",
every candidate direction named by the shapes probe. Per run: the planted attribute's rank among
the ranked directions (colour, background; kind for the clean one), the flip rate and MNAC of the
top direction's counterfactuals, and their realism (the realism filter's score, k = 3 against
real scenes, on the direction operator's children at the strip's ends, over the parents').
Also each classifier's accuracy on clean test scenes and on scenes with the shortcut reversed
(how much it relies on it).

    python bench/discover.py [--seeds 3] [--samples 48] [--candidates 6] [--train 4000] [--keep DIR]
        [--block up0] [--model builtin:shapes-32-tags --condition]   # also the tag tokens' space
        [--step 0.5 --condition-step 1.0] [--single-kind]   # each space's unit; scenes of one kind
        [--localise]   # judge directions where the classifier looks in each image

Last line, for scripts:
`planted first <r>/<n>; clean: shape first <c>/<m>; flip rate <f>; mnac <x>`
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

KINDS = ("circle", "square")  # world class ids 1 and 2
PLANTED = {"colour": "colour", "background": "background", "clean": "kind"}
RED, BLUE = np.array([0.85, 0.2, 0.2]), np.array([0.2, 0.3, 0.85])
WARM, COOL = np.array([0.22, 0.0, -0.22]), np.array([-0.22, 0.0, 0.22])


def scenes(n: int, split: str, seed: int):
    """Real scenes whose shapes are all circles or all squares, with their kind (0, 1), and masks."""
    from synth_shapes import render_many

    images, masks = render_many(seed, range(n), 32, 0.5, split)
    present = np.stack([(masks == k).reshape(len(masks), -1).sum(1) >= 3 for k in (1, 2, 3)], 1)
    keep = (present.sum(1) == 1) & ~present[:, 2]
    return images[keep], present[keep, 1].astype(int), masks[keep]


def plant(images, masks, y, kind: str, agree: float, rng) -> np.ndarray:
    """The shortcut: with probability ``agree`` the class's colour (or tint), else the other's."""
    if kind == "clean":
        return images
    out = images.astype(np.float64) / 255.0
    follow = rng.random(len(y)) < agree
    for i in range(len(y)):
        cls = y[i] if follow[i] else 1 - y[i]
        if kind == "colour":
            fg = masks[i] > 0
            c = np.clip((RED if cls == 0 else BLUE) + rng.uniform(-0.08, 0.08, 3), 0, 1)
            out[i][fg] = np.clip(c + (out[i][fg] - out[i][fg].mean(0)), 0, 1)
        else:
            bg = masks[i] == 0
            out[i][bg] = np.clip(out[i][bg] + (WARM if cls == 0 else COOL), 0, 1)
    return (out * 255 + 0.5).astype(np.uint8)


def train(x, y, seed: int, epochs: int, fit: float = 0.95):
    """small_cnn trained until it fits its training scenes (accuracy ``fit``, checked after each
    epoch) or ``epochs`` pass: a shortcut classifier fits within an epoch or two by the
    shortcut, as a classifier that found one does; the clean one needs about 30 to learn the kind."""
    import torch

    from synth_classify import small_cnn

    torch.manual_seed(seed)
    net = small_cnn(torch, 2, width=16, depth=3)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1
    yt = torch.from_numpy(y.astype(np.int64))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(xt), generator=g).split(64):
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if accuracy(net.eval(), x, y) >= fit:
            break
    return net.eval()


def shortcut_classifier(kind: str, seed: int, n: int, epochs: int):
    """The bench's classifier of one kind (colour, background, clean) and seed."""
    x, y, m = scenes(n, "train", 100 + seed)
    return train(plant(x, m, y, kind, 0.95, np.random.default_rng(seed)), y, seed, epochs)


def ship(which: str, folder: Path, n: int, epochs: int) -> None:
    from synth_classify import save_classifier

    kind, seed = which.rsplit("-", 1)
    net = shortcut_classifier(kind, int(seed), n, epochs)
    test_x, test_y, test_m = scenes(3000, "test", 0)
    for name, agree in (("as trained", 1.0), ("reversed", 0.0)):
        print(f"{which}: accuracy with the shortcut {name}: {accuracy(net, plant(test_x, test_m, test_y, kind, agree, np.random.default_rng(1)), test_y):.3f}")
    save_classifier(net, folder, list(KINDS), (32, 32), width=16, depth=3)
    print(f"saved to {folder}")


def accuracy(net, x, y) -> float:
    import torch

    with torch.inference_mode():
        p = net(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1).argmax(1).numpy()
    return float((p == y).mean())


MANIFEST = """
[dataset]
name = "{name}"
output = "{output}"
num_samples = {n}
seed = {seed}
classes = ["background", "circle", "square", "triangle"]

[generator]
name = "diffusers"
model = "{model}"
scheduler = "ddim"
steps = {steps}
{source}
[[stage]]
name = "generate"
{extra}
[discover]
classifier = {{ name = "torch", path = "{classifier}" }}
target = "square"
samples = {n}
candidates = {candidates}
hspace = {hspace}
alphas = [-{reach}, 0.0, {reach}]
show = 1
strip_images = 6
probe = {{ name = "shapes" }}
localise = {localise}
"""


def synth(*args) -> None:
    res = subprocess.run([sys.executable, "-m", "synth", *map(str, args)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"synth {' '.join(map(str, args))} failed: {res.stderr.strip().splitlines()[-1]}")


def spaces(args) -> dict[str, str]:
    """The manifest's model, its source's tags and [discover].hspace: the block's space, and the
    conditioning's with --condition."""
    block = f'{{ block = "{args.block}", start = {args.start}, until = {args.until}, step = {args.step} }}'
    both = f'[{block}, {{ block = "condition", start = 0.0, until = {args.condition_until}, step = {args.condition_step} }}]'
    # --single-kind: the tag model draws what the classifiers were trained on, scenes of one kind
    source = 'tags = [["circle"], ["square"]]\n' if args.single_kind else ""
    return {"model": args.model, "hspace": both if args.condition else block, "source": source, "localise": "true" if args.localise else "false"}


def realism_ratio(folder: Path, args, name: str, seed: int, classifier: Path, direction: str) -> float:
    """Median realism of the direction operator's children at the strip's ends over their parents'."""
    extra = (f'\n[[stage]]\nname = "direction"\nsaved = "{direction}"\nalphas = [-{args.reach}, {args.reach}]\n\n'
             f'[[stage]]\nname = "realism"\nreference = {{ source = {{ name = "shapes", split = "test" }}, count = 1000 }}\nmin = 0.0001\n')
    manifest = folder / f"{name}-realism.toml"
    manifest.write_text(MANIFEST.format(name=name, output=folder / f"{name}-cf", n=args.realism_samples, seed=seed, steps=args.steps, extra=extra,
                                        classifier=classifier, candidates=args.candidates, reach=args.reach, **spaces(args)))
    synth("run", manifest, "-q")
    parents, children = [], []
    for shard in sorted((folder / f"{name}-cf").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    rec = json.load(io.TextIOWrapper(tar.extractfile(m)))
                    (children if "_d" in m.name else parents).append(rec["scores"]["realism"])
    return float(np.median(children) / max(np.median(parents), 1e-9))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=48, help="generated images each discovery runs on")
    ap.add_argument("--candidates", type=int, default=6)
    ap.add_argument("--train", type=int, default=12000, help="world scenes rendered per classifier (about a third are single-kind circle or square)")
    ap.add_argument("--epochs", type=int, default=40, help="at most: each classifier trains until it fits 95%% of its training scenes (8 fixed epochs left the clean one at 0.52-0.60)")
    ap.add_argument("--steps", type=int, default=10, help="ddim steps of the generator")
    ap.add_argument("--block", default="up0")
    ap.add_argument("--start", type=float, default=0.0)
    ap.add_argument("--until", type=float, default=0.5)
    ap.add_argument("--step", type=float, default=1.0, help="the block's unit step, in its RMS")
    ap.add_argument("--reach", type=float, default=1.0)
    ap.add_argument("--model", default="builtin:shapes-32", help="the generator (builtin:shapes-32-tags for --condition)")
    ap.add_argument("--condition", action="store_true", help="also search the model's conditioning (a tag model's tag tokens), ranked with the block's candidates")
    ap.add_argument("--condition-until", type=float, default=1.0, help="the conditioning's shift window ends here (share of the steps)")
    ap.add_argument("--condition-step", type=float, default=1.0, help="the conditioning's unit step, in its RMS")
    ap.add_argument("--single-kind", action="store_true", help="a tag model's source draws scenes of one kind (tags circle, square in turn), "
                    "the classifiers' own domain, instead of the model's mix of kinds")
    ap.add_argument("--localise", action="store_true", help="judge each direction where the classifier looks in each image (localise = true)")
    ap.add_argument("--realism-samples", type=int, default=24)
    ap.add_argument("--kinds", nargs="+", default=["colour", "background", "clean"])
    ap.add_argument("--keep", type=Path, help="keep every run's folder (pages, strips) here")
    ap.add_argument("--ship", nargs=2, metavar=("KIND-SEED", "FOLDER"),
                    help="only train one classifier as the bench does (e.g. colour-2) and save it to FOLDER (how the shipped builtin:circle-or-square-red-blue was made)")
    args = ap.parse_args()

    if args.ship:
        return ship(args.ship[0], Path(args.ship[1]), args.train, args.epochs)
    started = time.time()
    root = args.keep or Path(tempfile.mkdtemp(prefix="synth-discover-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SYNTH_CACHE_DIR", str(root / "cache"))
    from synth_classify import save_classifier

    test_x, test_y, test_m = scenes(3000, "test", 0)
    rows = []
    print(f"discover bench: {args.kinds} x {args.seeds} seeds, {args.samples} generated images each of {args.model}, block {args.block} "
          f"[{args.start:g}, {args.until:g}] step {args.step:g}{f' and the conditioning [0, {args.condition_until:g}] step {args.condition_step:g}' if args.condition else ''}, reach {args.reach:g}", flush=True)
    print("| classifier | seed | clean acc | reversed acc | planted | its rank | top moves | flip rate | mnac | realism cf/parent |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for kind in args.kinds:
        for seed in range(args.seeds):
            net = shortcut_classifier(kind, seed, args.train, args.epochs)
            clean_acc = accuracy(net, plant(test_x, test_m, test_y, kind, 1.0, np.random.default_rng(1)), test_y)
            reversed_acc = accuracy(net, plant(test_x, test_m, test_y, kind, 0.0, np.random.default_rng(1)), test_y) if kind != "clean" else clean_acc
            name = f"{kind}-{seed}"
            clf = save_classifier(net, root / f"clf-{name}", list(KINDS), (32, 32), width=16, depth=3)
            manifest = root / f"{name}.toml"
            manifest.write_text(MANIFEST.format(name=name, output=root / name, n=args.samples, seed=seed, steps=args.steps, extra="", classifier=clf,
                                                candidates=args.candidates, reach=args.reach, **spaces(args)))
            synth("discover", manifest, "-q", "-o", root / f"{name}-discover")
            r = json.loads((root / f"{name}-discover" / "discover.json").read_text())
            planted = PLANTED[kind]
            rank = next((d["rank"] for d in r["ranked"] if d["moves"] == planted), None)
            top = r["directions"][0]
            realism = realism_ratio(root, args, name, seed, clf, top["name"])
            rows.append({"kind": kind, "seed": seed, "rank": rank, "flip": top["flip_rate"], "mnac": top["mnac"], "realism": realism})
            print(f"| {kind} | {seed} | {clean_acc:.3f} | {reversed_acc:.3f} | {planted} | {rank if rank else '-'} of {len(r['ranked'])} | {top['moves']} ({top['space']}) "
                  f"| {top['flip_rate']:.2f} | {top['mnac']:.2f} | {realism:.2f} |", flush=True)
    shortcut = [r for r in rows if r["kind"] != "clean"]
    clean = [r for r in rows if r["kind"] == "clean"]
    print(f"({time.time() - started:.0f} s; runs kept in {root})" if args.keep else f"({time.time() - started:.0f} s)", flush=True)
    print(f"planted first {sum(r['rank'] == 1 for r in shortcut)}/{len(shortcut)}; clean: shape first {sum(r['rank'] == 1 for r in clean)}/{len(clean)}; "
          f"flip rate {np.mean([r['flip'] for r in rows]):.2f}; mnac {np.mean([r['mnac'] for r in rows]):.2f}")


if __name__ == "__main__":
    main()
