"""`pixelhead`: label every pixel with an ensemble trained on a few annotations;
`drop_uncertain`: drop the samples whose labels the ensemble disagrees on most."""

from __future__ import annotations

import json
import math
import sys

import numpy as np

from synth.batch import Batch
from synth.errors import UsageError
from synth.protocols import Stage

from synth.annotations import load_examples, replayable
from synth.paths import cached_or_shipped
from synth.regions import vote_each

from .config import DropUncertainConfig, PixelHeadConfig
from .coverage import class_coverage, thin_classes
from .extraction import feature_groups
from .head import Ensemble, image_uncertainty
from .memory import check as memory_check
from .memory import labelling_bytes
from .training import cache_root, calibrate, head_key, load_head, save_head, train_head

SCORE = "label_uncertainty"


class PixelHead(Stage):
    """Per-pixel labels (seg.png) from the generator's own features, with uncertainty."""

    name = "pixelhead"
    kind = "transform"
    Config = PixelHeadConfig
    requires = frozenset({"features"})
    scores = frozenset({SCORE})
    seg = "makes"

    @classmethod
    def check_plan(cls, config: PixelHeadConfig, plan) -> list[str]:
        problems = cls._check_classes(config, plan.classes)
        if config.head is not None and not (plan.resolve_path(config.head) / "head.json").is_file():
            problems.append(f"head: {plan.resolve_path(config.head)} is not a trained head (no head.json)")
        gen = plan.generator
        if gen is not None and config.head is None:
            options = {"blocks": config.blocks, "timesteps": config.timesteps}
            problems += gen.cls.check_feature_options(gen.config, options, plan)
        return problems

    @staticmethod
    def _check_classes(config: PixelHeadConfig, classes: list[str]) -> list[str]:
        if len(classes) < 2:
            return ["pixelhead needs [dataset].classes: the label names, class id = position (at least 2)"]
        vote = config.region_vote
        if vote is not None and vote.background not in classes:
            return [f"region_vote.background: {vote.background!r} is not one of [dataset].classes {classes}"]
        return []

    def setup(self) -> None:
        cfg, ctx = self.config, self.context
        gen = ctx.generator
        where = "stage 'pixelhead'"
        if cfg.head is not None:
            folder = ctx.resolve_path(cfg.head)
            self.ensemble, self.info = load_head(folder, f"{where}.head")
            self._check_loaded(folder)
            # a saved head was trained with its own blocks, timesteps and shared noise: use exactly those
            self.spec = gen.feature_spec(self.info["spec"])
            self._say_memory(self.info["hidden"])
            self.head_id = self.info.get("key", "")[:16]
        else:
            options = {"blocks": cfg.blocks, "timesteps": cfg.timesteps, "source": cfg.features_from, "inversion_steps": cfg.inversion_steps}
            self.spec = gen.feature_spec(options)
            self._say_memory(cfg.hidden)  # before training: a refusal costs nothing
            examples = load_examples(cfg.annotations, ctx, where)
            if "tags" in gen.condition(0):  # a tag model's features of a labelled image need its tags
                examples = examples.with_tags(f"{where}.annotations", gen.describe().get("model", gen.name))
            key = head_key(examples, gen.fingerprint(), self.spec, cfg, ctx.classes, ctx.seed)
            folder = cache_root(cfg, ctx) / "pixelheads" / key[:32]
            # the cache first, then heads the model ships: either only under the same full key (same
            # annotations, weights, feature and head settings, classes, seed)
            self.head_source = "trained"
            for candidate in cached_or_shipped(folder, gen, "pixelheads"):
                if (candidate / "head.json").is_file():
                    ensemble, info = load_head(candidate, f"{where} cache")
                    if info.get("key") == key:
                        self.ensemble, self.info = ensemble, info
                        self.head_source = "cache" if candidate == folder else "bundled"
                        break
            if self.head_source == "trained":
                self.ensemble, self.info = self._train(examples, key)
                save_head(folder, self.ensemble, self.info)
            self.head_id = key[:16]
            if cfg.save_to:
                save_head(ctx.resolve_path(cfg.save_to), self.ensemble, self.info)
        self._ready()

    def _ready(self) -> None:
        ctx = self.context
        self.ensemble.to(ctx.generator.device)  # label where the features are
        calibration = self.info.get("calibration", {}).get(SCORE, [])
        ctx.extra.setdefault("score_calibration", {})[SCORE] = calibration
        self.top_fraction = self.info.get("top_fraction", self.config.top_fraction)

    def _say_memory(self, hidden: list[int]) -> None:
        """The labelling memory, from the generator's feature shapes; refused over max_memory_gb."""
        gen, cfg = self.context.generator, self.config
        shapes = gen.feature_shapes(self.spec)
        if shapes is None:
            return
        h, w, _ = gen.image_shape()
        dtype_bytes = gen.torch.finfo(gen.dtype).bits // 8 if hasattr(gen, "torch") else 4
        per = labelling_bytes(shapes, dtype_bytes, (h, w), list(hidden), len(self.context.classes))
        line = memory_check(per, cfg.feature_batch, cfg.max_memory_gb, (h, w))
        if not self.context.quiet:
            print(f"synth: pixelhead: {line}", file=sys.stderr)

    def share(self) -> dict:
        """The trained (or loaded) head itself, so other processes label with exactly this head
        and its calibration, without looking for it, training it or calibrating again."""
        state = {k: v.cpu().numpy() for k, v in self.ensemble.state().items()}
        return {"state": state, "info": self.info, "head_id": self.head_id}

    def adopt(self, shared: dict) -> None:
        import torch

        gen = self.context.generator
        self.info, self.head_id, self.head_source = shared["info"], shared["head_id"], "shared"
        state = {k: torch.from_numpy(v) for k, v in shared["state"].items()}
        self.ensemble = Ensemble.from_state(state, self.info["hidden"], len(self.info["classes"]), self.info["ensemble"])
        self.spec = gen.feature_spec(self.info["spec"])
        self._ready()

    def _check_loaded(self, folder) -> None:
        classes = self.context.classes
        if self.info["classes"] != classes:
            raise UsageError(f"stage 'pixelhead'.head: {folder} labels {self.info['classes']}, [dataset].classes is {classes}")
        saved = json.loads(self.info.get("generator", "{}"))
        ours = json.loads(self.context.generator.fingerprint())
        weights = lambda d: {k: v for k, v in d.items() if k.startswith("sha256:") or k == "model"}  # noqa: E731
        if saved and weights(saved) != weights(ours):
            raise UsageError(
                f"stage 'pixelhead'.head: {folder} was trained on the features of {saved.get('model')!r}; "
                f"this manifest's generator is {ours.get('model')!r} (or different weights)"
            )

    def _train(self, examples, key: str):
        from synth.bars import progress_bar

        cfg, ctx, gen = self.config, self.context, self.context.generator
        print(f"synth: training the pixel head on {len(examples.keys)} labelled {examples.kind} images (cached for later runs)", file=sys.stderr)
        pixels, regions = class_coverage(examples.masks, len(ctx.classes))
        for problem in thin_classes(pixels, regions, ctx.classes):
            print(f"synth: warning: stage 'pixelhead': {problem}", file=sys.stderr)

        def bars(total, desc, unit):
            return progress_bar(total, desc, unit, leave=False, disable=ctx.quiet)

        ensemble, info = train_head(gen, self.spec, examples, cfg, ctx.classes, ctx.seed, bars)
        info["key"] = key
        info["trained_on"]["class_regions"] = regions
        info["generator"] = gen.fingerprint()
        info["calibration"] = {SCORE: calibrate(gen, ensemble, self.spec, cfg, ctx.seed, bars)}
        return ensemble, info

    def process(self, batch: Batch) -> Batch:
        gen = self.context.generator
        n, h, w = len(batch), batch.images.shape[1], batch.images.shape[2]
        labels = np.empty((n, h, w), np.int64)
        scores = np.empty(n)
        step = self.config.feature_batch
        vote = self.config.region_vote
        background = self.context.classes.index(vote.background) if vote is not None else None
        for start in range(0, n, step):
            rows = np.arange(start, min(start + step, n))
            records = [batch.records[i] for i in rows]
            conds = [_condition(r) for r in records]
            latents = None
            if batch.latents is not None:
                latents = [batch.latents[i] if replayable(r) else None for i, r in zip(rows, records)]
            decode = [r.get("decode") for r in records]
            for group, pyramid in feature_groups(gen, self.spec, batch.images[rows], conds, latents, decode):
                lab, js = self.ensemble.predict(pyramid, (h, w))
                if vote is not None:
                    lab = vote_each(batch.images[rows[group]], lab, vote.tolerance, background)
                labels[rows[group]] = lab
                scores[rows[group]] = image_uncertainty(js, self.top_fraction)
        batch.seg = labels
        for rec, s in zip(batch.records, scores):
            rec.setdefault("scores", {})[SCORE] = round(float(s), 6)
            rec["labels"] = {"by": "pixelhead", "head": self.head_id}
            if vote is not None:
                rec["labels"]["region_vote"] = vote.tolerance
        return batch


def _condition(record: dict) -> dict:
    cond = dict(record.get("condition") or {})
    if record.get("class") is not None:
        cond.setdefault("class", record["class"])
    return cond


def drop_share_band(fraction: float, calibration: int, samples: int | None = None) -> float:
    """Half-width of the 95% band of the share drop_uncertain drops, around ``fraction``.

    The threshold is an empirical quantile of ``calibration`` scores, so the probability mass
    above it is itself uncertain (variance about f(1-f)/(n+2), the order statistic's Beta law);
    a run of ``samples`` adds binomial noise f(1-f)/N on top. 128 calibration samples: ±5.2%;
    512: ±2.6%; 1024: ±1.8% (plus the run's own noise when ``samples`` is given)."""
    var = fraction * (1 - fraction) / (calibration + 2)
    if samples:
        var += fraction * (1 - fraction) / samples
    return 1.96 * math.sqrt(var)


class DropUncertain(Stage):
    """Drop samples whose label uncertainty is above a quantile of the head's calibration."""

    name = "drop_uncertain"
    kind = "filter"
    Config = DropUncertainConfig
    scores = frozenset()

    @classmethod
    def check_plan(cls, config: DropUncertainConfig, plan) -> list[str]:
        return plan.check_score_recorded(config.score)

    def setup(self) -> None:
        cfg = self.config
        if cfg.max is not None:
            self.threshold = cfg.max
            self.reason = f"{cfg.score} > max {cfg.max}"
            return
        calibration = self.context.extra.get("score_calibration", {}).get(cfg.score)
        if not calibration:
            raise UsageError(
                f"stage 'drop_uncertain': no calibration for score {cfg.score!r}; put it after a labeller that "
                f"calibrates it (pixelhead with calibration_samples > 0) or give max = ..."
            )
        q = 1 - cfg.fraction
        self.threshold = float(np.quantile(np.asarray(calibration), q))
        band = drop_share_band(cfg.fraction, len(calibration))
        self.reason = f"{cfg.score} above the {q:.0%} quantile of {len(calibration)} calibration samples (share {cfg.fraction:.0%} ± {band:.1%} from calibration alone)"
        self.calibration_samples = len(calibration)

    def report(self) -> dict:
        rep = {"score": self.config.score, "threshold": round(self.threshold, 6), "fraction": self.config.fraction if self.config.max is None else None}
        if self.config.max is None:  # what the summary checks the dropped share against
            f = self.config.fraction
            rep["expected_drop_share"] = f
            rep["expected_drop_variance"] = round(f * (1 - f) / (self.calibration_samples + 2), 8)
        return rep

    def process(self, batch: Batch) -> Batch:
        key = self.config.score
        values = []
        for k, rec in zip(batch.keys, batch.records):
            v = rec.get("scores", {}).get(key)
            if v is None:
                raise UsageError(f"stage 'drop_uncertain': sample {k} has no score {key!r}")
            values.append(float(v))
        keep = [v <= self.threshold for v in values]
        details = [f"{v:.4f} > {self.threshold:.4f}" for v in values]
        return batch.keep(keep, self.name, self.reason, details)
