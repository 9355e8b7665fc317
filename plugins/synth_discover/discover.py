"""`synth discover MANIFEST`: which attributes a classifier relies on, as directions in the
generator's h-space that change its decision most.

The space: h-space (a UNet block's output, shifted while the sampler is in its noisiest steps),
because one shift there edits every image alike (Asyrp): a direction found on some images means
the same on others, and the `direction` operator can make counterfactual data from it. Not the
initial noise, whose principal components are noise. Or a model's conditioning (`block =
"condition"`: a tag model's tag tokens, a prompt's embedding), where a shift changes what the
image is said to show (on the shapes tag model: which kinds are drawn). Several spaces may be searched at once:
their candidates are ranked together, each stepped in its own space's unit.

The candidates: the principal components of the per-image gradients of the target class's
log-odds with respect to each image's own shift (through the whole sampling loop), each
gradient scaled to unit length first, so that every image votes once. They point where the
classifier's decision moves, and the components keep what many images share.

The ranking (StylEx's AttFind, greedy): each candidate's effect is the mean change of the
target's log-odds per unit step over the images still unexplained; the best is taken, the images
whose decision it flips are explained, and the next is chosen on the rest. A counterfactual is
the image stepped toward the other decision by the least of a few steps (up to the largest strip
step) that flips it; the flip rate is the share of images some step flips. A probe names what
each direction moves (the attribute changed in most images from one end of its strip to the
other; of attributes tied there, the one that changes first at a half or a quarter of the step)
and counts what else a counterfactual changes (MNAC: attributes changed besides that one, over
the counterfactuals that flip).
Beside them, the same for a few random directions of the same step (the baseline): a share of 0.4
means little when any shift that large moves 0.3, and much when it moves 0.
With ``localise = true``, all of these are judged on each image's shift kept where that
image's classifier gradient is (ACE localises its edits likewise): a direction shared by all
images also moves what the classifier does not read (a colour direction that tints the background
too), and the name and MNAC should say what the classifier reads. The strips and the saved
direction stay the direction everywhere, as the `direction` operator applies it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synth import classifiers, directions
from synth.errors import UsageError
from synth.expand import child_index, conditions
from synth.extractors import resolve_named
from synth.protocols import PlanContext
from synth.seeding import sample_rng

from .config import DiscoverConfig


COUNTERFACTUAL_STEPS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Candidate:
    """A candidate direction: its space (an h-space spec), that space's unit, the direction, and
    where each source image's classifier looks in that space (None: the direction everywhere)."""

    spec: Any
    unit: float
    w: np.ndarray
    where: np.ndarray | None = None


def log_odds(logits: np.ndarray, k: int) -> np.ndarray:
    """log p_k - log(1 - p_k) of softmax(logits), stable."""
    logits = np.asarray(logits, np.float64)
    others = np.delete(logits, k, axis=1)
    m = others.max(1, keepdims=True)
    return logits[:, k] - (m[:, 0] + np.log(np.exp(others - m).sum(1)))


def candidates(grads: np.ndarray, count: int) -> np.ndarray:
    """(count, D) unit-RMS directions: principal components of the unit-length gradients (not
    centred: a direction every gradient shares is the first), each signed to raise the target."""
    g = np.asarray(grads, np.float64).reshape(len(grads), -1)
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    g = g[norms[:, 0] > 0] / norms[norms[:, 0] > 0]
    if len(g) == 0:
        raise UsageError("discover: the classifier's decision does not move with the generator's h-space on these images (every gradient is zero)")
    _, _, vt = np.linalg.svd(g, full_matrices=False)
    out = vt[: min(count, len(vt))]
    signs = np.sign((g @ out.T).mean(0))
    signs[signs == 0] = 1.0
    out = out * signs[:, None]
    return (out * np.sqrt(out.shape[1])).astype(np.float32)


def where_it_looks(grads: np.ndarray, mass: float = 0.9) -> np.ndarray | None:
    """(n, 1, H, W) float32 masks, one per image, of where the classifier's decision on that image
    moves with the shift: the fewest places that hold ``mass`` of the image's squared gradient
    (what a step along its own gradient would change the log-odds by, to first order), grown by
    one place each way so that a shape's rim is kept. A gradient on a few shapes keeps those; one
    spread thin over the whole background keeps most of it. None for a space without places (a
    conditioning's tokens)."""
    g = np.asarray(grads, np.float64)
    if g.ndim != 4:
        return None
    s = (g**2).sum(1).reshape(len(g), -1)
    order = np.argsort(-s, axis=1, kind="stable")
    held = np.cumsum(np.take_along_axis(s, order, 1), 1)
    total = held[:, -1:]
    # a place is kept while the places before it in the order hold less than ``mass``
    keep_sorted = np.concatenate([np.ones((len(s), 1), bool), held[:, :-1] < mass * total], 1) & (total > 0)
    hot = np.zeros_like(keep_sorted)
    np.put_along_axis(hot, order, keep_sorted, 1)
    hot = hot.reshape(g.shape[0], *g.shape[2:])
    from scipy import ndimage  # with the diffusers extra, which every h-space generator needs

    grown = ndimage.binary_dilation(hot, structure=np.ones((1, 3, 3), bool))  # each image alone
    return grown[:, None].astype(np.float32)


def name_of(shares_by_step: list[dict[str, float]], attributes: list[str]) -> str:
    """The attribute a direction moves: the one changed in most images between the strip's ends
    (the first shares); attributes tied there are told apart by the shares at the smaller steps
    that follow (what changes first), and only then by the probe's order of attributes."""
    tied = list(attributes)
    for shares in shares_by_step:
        tied = still_tied(tied, shares)
        if len(tied) == 1:
            break
    return tied[0]


def still_tied(tied: list[str], shares: dict[str, float]) -> list[str]:
    """Of the ``tied`` attributes, those changed in the most images by these shares."""
    top = max(shares[a] for a in tied)
    return [a for a in tied if shares[a] == top]


def attfind_order(effects: np.ndarray, flips: np.ndarray) -> list[int]:
    """Greedy ranking of candidates (rows) by their mean effect on the images not yet explained;
    an image is explained once a chosen candidate flips it. Ties go to the lower index."""
    left = np.ones(effects.shape[1], bool)
    todo, order = list(range(len(effects))), []
    while todo:
        cols = left if left.any() else np.ones_like(left)
        best = max(todo, key=lambda c: (effects[c, cols].mean(), -c))
        order.append(best)
        todo.remove(best)
        left &= ~flips[best]
    return order


class Discovery:
    """One `synth discover` run: set up from a manifest with a [discover] table."""

    def __init__(self, manifest, out: Path, quiet: bool = False, threads: int | None = None):
        from synth.pipeline import Pipeline

        self.manifest, self.out = manifest, out
        cfg = manifest.tables.get("discover")
        if cfg is None:
            raise UsageError(f"{manifest.path.name}: no [discover] table (classifier, target; see docs/guide/discover.md)")
        self.cfg: DiscoverConfig = cfg
        if manifest.generator is None:
            raise UsageError(f"{manifest.path.name}: discover needs a [generator] with an h-space")
        plan = PlanContext(manifest_dir=manifest.folder, classes=list(manifest.dataset.classes), num_samples=manifest.dataset.num_samples,
                           registry=manifest.registry, generator=manifest.generator, stages=list(manifest.stages))
        problems = classifiers.check(plan, cfg.classifier, "discover.classifier")
        found = resolve_named(manifest.registry.probe, cfg.probe, "discover.probe", problems)
        if found is not None:
            problems += [f"discover.probe.{p}" for p in found[0].check_plan(found[1], plan)]
            self.probe_cls, self.probe_config = found
        info = manifest.generator.cls.static_info(manifest.generator.config, plan) or {}
        if "capabilities" in info and "hspace" not in info["capabilities"]:
            problems.append(f"generator: {manifest.generator.name!r} with this model has no h-space (capability hspace), which discover searches")
        if problems:
            raise UsageError(problems[0])
        self.say = (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr))
        self.pipeline = Pipeline(manifest, quiet=True, threads=threads)
        self.context = self.pipeline.context
        self.seed = manifest.dataset.seed

    # -- set-up and checks --------------------------------------------------------------------------
    def _setup(self):
        cfg = self.cfg
        self.pipeline.setup()
        self.gen = self.pipeline.generator
        if not self.gen.supports("hspace"):
            raise UsageError(f"generator {self.gen.name!r} has no h-space (capability hspace), which discover searches")
        self.specs = [self.gen.hspace_spec(options) for options in cfg.generator_options()]
        self.clf = classifiers.get(self.context, cfg.classifier)
        classes = [c for c in self.manifest.dataset.classes]
        if classes and any(c not in classes for c in self.clf.classes):
            raise UsageError(f"discover.classifier: its classes {self.clf.classes} do not match [dataset].classes {classes}")
        if cfg.target not in self.clf.classes:
            raise UsageError(f"discover.target: {cfg.target!r} is not one of the classifier's classes ({', '.join(self.clf.classes)})")
        self.k = self.clf.classes.index(cfg.target)
        shape = self.gen.image_shape()
        if self.clf.image_size is not None and shape is not None and tuple(self.clf.image_size) != tuple(shape[:2]):
            h, w = self.clf.image_size
            raise UsageError(f"discover.classifier: it takes {w}x{h} images, the generator makes {shape[1]}x{shape[0]}")
        self.probe = self.probe_cls(self.probe_config, self.context)
        self.probe.setup()

    def _source(self):
        """The source's images with the latents that decode to them (inverted when it has none)."""
        batch = self.pipeline.run_batch(list(range(self.cfg.samples)))
        if len(batch) == 0:
            raise UsageError(f"discover: the source ({self.manifest.stages[0].name}) gave no images")
        conds = conditions(batch)
        if batch.latents is None:
            if not self.gen.supports("invert"):
                raise UsageError(f"discover: the source's images have no latents and generator {self.gen.name!r} cannot invert them")
            self.say(f"discover: inverting {len(batch)} source images")
            latents = self.gen.invert(batch.images, conds)
        else:
            latents = np.asarray(batch.latents, np.float32)
        indices = [int(((r.get("decode") or {}).get("index", r.get("index", i)))) for i, r in enumerate(batch.records)]
        return batch, np.asarray(latents, np.float32), conds, indices

    # -- the search ---------------------------------------------------------------------------------
    def _odds(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = self.clf.logits(images)
        return log_odds(logits, self.k), logits.argmax(1) == self.k

    def _shifted(self, z, conds, indices, cand: "Candidate", a: float, rows=None) -> np.ndarray:
        """The images ``z`` decoded with the candidate stepped by ``a``: everywhere, or with
        ``rows`` (the source images' rows of ``z``) only where each one's classifier looks."""
        shifts = np.broadcast_to(directions.shift(cand.w, {"unit": cand.unit}, a), (len(z), *cand.w.shape))
        if rows is not None and cand.where is not None:
            shifts = shifts * cand.where[rows]
        return self.gen.decode_shifted(z, conds, indices, self.seed, shifts, cand.spec)

    def _local(self, z, conds, indices, cand, a) -> np.ndarray:
        """The source images with the candidate stepped by ``a`` where the classifier looks
        (``localise``), or everywhere: what the ranking, the names and the counterfactuals see."""
        return self._shifted(z, conds, indices, cand, a, np.arange(len(z)) if self.cfg.localise else None)

    def run(self) -> dict[str, Any]:
        import torch

        cfg = self.cfg
        self._setup()
        batch, z, conds, indices = self._source()
        n = len(z)
        base = self.gen.decode(z, conds, indices, self.seed)  # what the directions start from
        odds0, is_target = self._odds(base)
        k = self.k

        def objective(pixels):
            logits = self.clf.differentiable(pixels).float()
            others = torch.cat([logits[:, :k], logits[:, k + 1 :]], 1)
            return logits[:, k] - torch.logsumexp(others, 1)

        cands, self.units, self.rms, self.where = [], {}, {}, {}
        for spec, step in zip(self.specs, cfg.steps()):  # each space's candidates, ranked together below
            self.say(f"discover: gradients of {cfg.target!r} in h-space ({spec.block}) on {n} images")
            grads, rms = self.gen.hspace_gradients(z, conds, indices, self.seed, spec, objective)
            # the space's unit step: its block's RMS times the step asked for (spaces differ in how
            # far a shift must go to change what is drawn), so alphas mean the same in each
            self.rms[spec.block], unit = rms, float(rms) * step
            self.units[spec.block] = unit
            where = where_it_looks(grads) if cfg.localise else None
            self.where[spec.block] = where
            cands += [Candidate(spec, unit, w, where) for w in candidates(grads, cfg.candidates).reshape(-1, *grads.shape[1:])]
        reach = cfg.reach()
        self.say(f"discover: ranking {len(cands)} candidates (2 x {n} images each)")
        effects, flips, ends = [], [], []
        for w in cands:
            plus, minus = self._local(z, conds, indices, w, reach), self._local(z, conds, indices, w, -reach)
            o_plus, t_plus = self._odds(plus)
            o_minus, t_minus = self._odds(minus)
            effects.append((o_plus - o_minus) / (2 * reach))
            flips.append(np.where(is_target, ~t_minus, t_plus))  # toward the other decision
            ends.append((minus, plus))
        effects, flips = np.stack(effects), np.stack(flips)
        order = attfind_order(effects, flips)
        before = self.probe.measure(base)
        named = {c: self._named(z, conds, indices, cands[c], ends[c]) for c in order}
        shown = []
        for rank, c in enumerate(order[: cfg.show], start=1):
            main, shares = named[c]
            # what else a counterfactual changes: the attributes besides that one (MNAC)
            cf, flipped, steps = self._counterfactuals(z, conds, indices, cands[c], is_target)
            changed = self.probe.changed(before, self.probe.measure(cf))
            others = np.sum([changed[a] for a in self.probe.attributes if a != main], axis=0) if len(changed) > 1 else np.zeros(n)
            # MNAC over the counterfactuals that flip (all of them when none does)
            counted = flipped if flipped.any() else np.ones(n, bool)
            m = min(cfg.strip_images, n)
            shown.append({
                "rank": rank, "candidate": int(c), "space": cands[c].spec.block, "effect": float(effects[c].mean()), "flip_rate": float(flipped.mean()),
                "moves": main, "changed": shares, "mnac": float(np.mean(others[counted])),
                "counterfactual_changed": {a: float(np.mean(changed[a][counted])) for a in self.probe.attributes},
                "mean_step": float(np.mean(np.abs(steps[flipped]))) if flipped.any() else None,
                "counterfactual_steps": [float(s) for s in steps[:m]], "counterfactual_flipped": [bool(f) for f in flipped[:m]],
                "_pair": np.stack([base[:m], cf[:m]], 1),  # drawn by _write, not saved in the json
            })
        baseline = {spec.block: self._baseline(z, conds, indices, spec) for spec in self.specs} if cfg.baseline else None
        ranked = [{"rank": r, "candidate": int(c), "space": cands[c].spec.block, "effect": float(effects[c].mean()), "moves": named[c][0]} for r, c in enumerate(order, start=1)]
        return self._write(batch, z, conds, cands, order, shown, ranked, effects, n, baseline)

    def _baseline(self, z, conds, indices, spec) -> dict[str, Any]:
        """What random directions of a space (unit RMS, drawn from the manifest's seed) change from
        one end of a strip to the other, and their mean effect on the target's log-odds: the
        yardstick for its candidates' shares and effects."""
        count, reach = self.cfg.baseline, self.cfg.reach()
        shape = self.gen.hspace_shape(spec)
        shares, effects = [], []
        for r in range(count):
            w = sample_rng(self.seed, r, f"discover-baseline-{spec.block}").standard_normal(shape).astype(np.float32)
            w /= np.float32(np.sqrt(np.mean(w.astype(np.float64) ** 2)))
            cand = Candidate(spec, self.units[spec.block], w, self.where[spec.block])
            minus, plus = self._local(z, conds, indices, cand, -reach), self._local(z, conds, indices, cand, reach)
            shares.append(self._moves(minus, plus)[1])
            effects.append(float(np.mean(self._odds(plus)[0] - self._odds(minus)[0]) / (2 * reach)))
        return {"directions": count, "changed": {a: float(np.mean([s[a] for s in shares])) for a in self.probe.attributes},
                "effect": float(np.mean(effects))}

    def _named(self, z, conds, indices, cand, ends) -> tuple[str, dict[str, float]]:
        """What a candidate moves and its shares at the strip's ends (``_moves``). Where two
        attributes change in as many images there (a large step saturates: a tint of everything
        changes every shape's colour and every background), the candidate is stepped by a half and
        a quarter of the step to see which changes first; only tied candidates pay for that."""
        main, shares = self._moves(*ends)
        tied = still_tied(list(self.probe.attributes), shares)
        if len(tied) == 1 or shares[main] == 0:  # nothing changed: a smaller step changes no more
            return main, shares
        reach, steps = self.cfg.reach(), [shares]
        for share in (0.5, 0.25):  # the quarter only while the half leaves a tie
            steps.append(self._moves(self._local(z, conds, indices, cand, -share * reach), self._local(z, conds, indices, cand, share * reach))[1])
            tied = still_tied(tied, steps[-1])
            if len(tied) == 1:
                break
        return name_of(steps, self.probe.attributes), shares

    def _moves(self, minus: np.ndarray, plus: np.ndarray) -> tuple[str, dict[str, float]]:
        """What a direction moves: the attribute changed in most images from one end of its strip
        to the other, and the share of images each attribute changed in."""
        moved = self.probe.changed(self.probe.measure(minus), self.probe.measure(plus))
        shares = {a: float(np.mean(moved[a])) for a in self.probe.attributes}
        return max(self.probe.attributes, key=lambda a: (shares[a], -self.probe.attributes.index(a))), shares

    def _counterfactuals(self, z, conds, indices, cand, is_target):
        """Each image stepped toward the other decision by the smallest of COUNTERFACTUAL_STEPS
        (shares of the largest strip step) that flips it, or by the largest when none does (DiME
        and ACE also stop at the flip: what else changes is judged at the least change that works)."""
        reach, n = self.cfg.reach(), len(z)
        sign = np.where(is_target, -1.0, 1.0)
        out, flipped, steps = None, np.zeros(n, bool), np.full(n, reach)
        local = self.cfg.localise
        for share in COUNTERFACTUAL_STEPS:
            a = share * reach
            imgs = np.concatenate([self._shifted(z[rows], [conds[i] for i in rows], [indices[i] for i in rows], cand, a * s, rows if local else None)
                                   for s, rows in ((1.0, np.flatnonzero(sign > 0)), (-1.0, np.flatnonzero(sign < 0))) if len(rows)])
            order = np.concatenate([np.flatnonzero(sign > 0), np.flatnonzero(sign < 0)])
            images = np.empty_like(imgs)
            images[order] = imgs
            _, now_target = self._odds(images)
            now = now_target != is_target
            if out is None:
                out = images.copy()
            take = now & ~flipped | (share == COUNTERFACTUAL_STEPS[-1]) & ~flipped
            out[take] = images[take]
            steps[take] = a * sign[take]
            flipped |= now
        return out, flipped, steps

    # -- what it writes -----------------------------------------------------------------------------
    def _write(self, batch, z, conds, cands, order, shown, ranked, effects, n, baseline) -> dict[str, Any]:
        from .page import strip_png, write_page

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "strips").mkdir(exist_ok=True)
        prefix = cfg.save_as or self.manifest.dataset.name
        m = min(cfg.strip_images, n)
        keys = batch.keys[:m]
        parent_index = [int(r.get("index", i)) for i, r in enumerate(batch.records[:m])]
        for d in shown:
            cand = cands[d["candidate"]]
            spec = cand.spec
            name = f"{prefix}-{cfg.target}-{d['rank']}"
            d["name"] = name
            meta = {
                "from": "discover", "space": "h", "hspace": {"block": spec.block, "start": spec.start, "until": spec.until}, "unit": cand.unit,
                "target": cfg.target, "classifier": self.clf.describe(), "rank": d["rank"], "effect": d["effect"], "moves": d["moves"],
                "generator": json.loads(self.gen.fingerprint()),
            }
            directions.save(name, cand.w, meta)
            directions.save(name, cand.w, meta, self.out / "directions")
            cells, probs = [], []
            for j, a in enumerate(cfg.alphas):
                # each cell decoded as the direction operator decodes its child j: same bytes
                idx = [child_index(self.seed, parent_index[i], "direction", keys[i], j) for i in range(m)]
                img = self._shifted(z[:m], conds[:m], idx, cand, a)
                cells.append(img)
                probs.append(_softmax(self.clf.logits(img))[:, self.k])
            strip = np.stack(cells, 1)  # (images, steps, H, W, 3)
            np.save(self.out / "strips" / f"{name}.npy", strip, allow_pickle=False)
            strip_png(strip, np.stack(probs, 1), cfg.alphas, self.out / "strips" / f"{name}.png")
            d["strip"] = f"strips/{name}.png"
            d["probabilities"] = np.round(np.stack(probs, 1), 4).tolist()
            # each strip image beside its counterfactual, as the flip rate and MNAC judged it
            pair = d.pop("_pair")
            pair_probs = np.stack([_softmax(self.clf.logits(pair[:, j]))[:, self.k] for j in range(2)], 1)
            (self.out / "counterfactuals").mkdir(exist_ok=True)
            strip_png(pair, pair_probs, ["source", "counterfactual"], self.out / "counterfactuals" / f"{name}.png")
            d["counterfactuals"] = f"counterfactuals/{name}.png"
        result = {
            "manifest": str(self.manifest.path), "manifest_hash": self.manifest.hash, "target": cfg.target,
            "classifier": self.clf.describe(), "classes": self.clf.classes, "generator": self.gen.describe(),
            "spaces": [{"kind": "h", "block": s.block, "start": s.start, "until": s.until, "step": step, "rms": self.rms[s.block], "unit": self.units[s.block]}
                       for s, step in zip(self.specs, cfg.steps())],
            "source": self.manifest.stages[0].name, "images": n, "probe": self.probe.name, "attributes": list(self.probe.attributes),
            "candidates": len(cands), "order": [int(c) for c in order], "candidate_effects": [float(e.mean()) for e in effects],
            "step": cfg.reach(), "alphas": list(cfg.alphas), "directions": shown,
            # the share of each block's places kept where the classifier looks (localise)
            "localise": cfg.localise, "where": {b: float(w.mean()) for b, w in self.where.items() if w is not None},
            "ranked": ranked,  # every candidate, named: where an attribute ranks
            "baseline": baseline,  # random directions of the same step: what any shift moves
            "strip_keys": list(keys),
        }
        (self.out / "discover.json").write_text(json.dumps(result, indent=1, default=str))
        write_page(result, self.out / "discover.html")
        result["folder"] = str(self.out)
        return result


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def discover(manifest_path: Path, out: Path | None = None, quiet: bool = False, threads: int | None = None) -> dict[str, Any]:
    from synth.manifest import load_manifest

    manifest = load_manifest(Path(manifest_path).expanduser().resolve())
    folder = out or manifest.output_dir().with_name(manifest.output_dir().name + "-discover")
    return Discovery(manifest, Path(folder), quiet=quiet, threads=threads).run()

