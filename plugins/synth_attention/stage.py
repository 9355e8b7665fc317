"""`attention`: per-pixel labels from the generator's conditioning, with no or few labelled pixels.

For each sample, the generator reports, per class its condition names (a tag model's tags, a
prompt's class words), where that class acts: its token's cross-attention (``method =
"attention"``), or where the UNet's prediction moves when the class is taken out of the condition
(``"contrast"``, for class-conditional models without cross-attention). A generated sample is
read along its own denoising path (replayed from its latent, so its image is untouched); an image
without one (real, or changed since it was generated) is noised to a few timesteps instead. Each
pixel then takes the named class that acts on it most, or background (see labels.py).
"""

from __future__ import annotations

import sys

import numpy as np

from synth.annotations import load_examples, replayable
from synth.batch import Batch
from synth.errors import UsageError
from synth.protocols import Stage

from .config import AttentionConfig
from .labels import Rule, calibrate, classes_of_regions, image_uncertainty, label, refine

SCORE = "attention_uncertainty"
# How many of the run's first samples' conditions are checked before anything runs: enough to go
# round every prompt or tag list a manifest gives in turn.
CHECKED_CONDITIONS = 256


class AttentionLabels(Stage):
    """Per-pixel labels (seg.png) from where each class of the condition acts: no labelled pixels."""

    name = "attention"
    kind = "transform"
    Config = AttentionConfig
    requires = frozenset({"decode"})
    scores = frozenset({SCORE})
    seg = "makes"

    @staticmethod
    def _check_classes(config: AttentionConfig, classes: list[str]) -> list[str]:
        if len(classes) < 2:
            return ["attention needs [dataset].classes: the label names, class id = position (at least 2)"]
        problems = []
        if config.background not in classes:
            problems.append(f"background: {config.background!r} is not one of [dataset].classes {classes}")
        for name in config.class_thresholds or {}:
            if name not in classes:
                problems.append(f"class_thresholds: {name!r} is not one of [dataset].classes {classes}")
        return problems

    @classmethod
    def check_plan(cls, config: AttentionConfig, plan) -> list[str]:
        problems = cls._check_classes(config, plan.classes)
        gen = plan.generator
        if gen is None:
            return problems + ["attention needs a [generator]: it reads the generator's own conditioning"]
        info = gen.cls.static_info(gen.config, plan) or {}
        caps = info.get("capabilities")
        if caps is not None and config.method not in caps:
            what = "class tokens to attend to" if config.method == "attention" else "a class or tag condition to contrast"
            hint = ' (a tag model of `synth fit` with [fit] tags, or Stable Diffusion)' if config.method == "attention" else ""
            problems.append(f"method {config.method!r}: the generator {gen.label()!r} has no {what}{hint}")
        elif caps is not None and config.tokens and "attention_tokens" not in caps:
            problems.append(f"tokens: the generator {gen.label()!r} cannot fit attribution tokens")
        return problems

    def setup(self) -> None:
        cfg, ctx = self.config, self.context
        gen = ctx.generator
        if gen is None or not gen.supports(cfg.method):
            raise UsageError(f"stage 'attention': the generator cannot give {cfg.method} maps")
        self.background = ctx.classes.index(cfg.background)
        self._check_conditions(gen)
        if cfg.tokens and not gen.supports("attention_tokens"):
            raise UsageError(f"stage 'attention'.tokens: the generator {gen.name!r} cannot fit attribution tokens")
        self.spec = gen.attention_spec(self._options())
        thresholds = tuple((cfg.class_thresholds or {}).get(c, cfg.threshold) for c in ctx.classes)
        self.rule = Rule(self.background, cfg.background_from == "null" and cfg.method == "attention", thresholds)
        self.calibration = None
        self.tokens = None  # (C, D) attribution tokens once fitted (calibrate with tokens)
        if cfg.calibrate is not None:
            self._calibrate()

    def _options(self, tokens=None) -> dict:
        cfg = self.config
        return {"timesteps": cfg.timesteps, "noised_timesteps": cfg.noised_timesteps, "blocks": cfg.blocks, "self_attention": cfg.self_attention, "tokens": tokens}

    def _check_conditions(self, gen) -> None:
        """Every condition must name a class (else every pixel would be background): checked on the
        run's first samples before any is made, naming the sample and what it was given."""
        count = min(self.context.num_samples or CHECKED_CONDITIONS, CHECKED_CONDITIONS)
        conditions = [gen.condition(i) for i in range(count)]
        named = gen.named_classes(conditions)
        named[:, self.background] = False
        for i in np.flatnonzero(~named.any(1)):
            said = conditions[i].get("prompt", conditions[i].get("tags"))
            raise UsageError(
                f"stage 'attention': sample {i}'s condition {said!r} names none of the classes {[c for k, c in enumerate(self.context.classes) if k != self.background]}; "
                "every prompt or tag list needs a class word"
            )

    def _calibrate(self) -> None:
        """Choose the rule on a few labelled images: the null token or per-class thresholds."""
        ctx = self.context
        where = "stage 'attention'.calibrate"
        examples = load_examples(self.config.calibrate, ctx, where)
        conditions = [dict(c) for c in examples.conditions]
        for cond, mask in zip(conditions, examples.masks):
            # a real labelled image's tags are the classes its mask shows
            if "tags" not in cond and "prompt" not in cond:
                present = np.unique(mask)
                cond["tags"] = [ctx.classes[k] for k in present if k != self.background]
        latents = examples.latents if examples.latents is not None else [None] * len(conditions)
        maps = self._maps(examples.images, conditions, latents, examples.decode)
        rule, scores = calibrate(maps[0], maps[1], maps[2], examples.masks, self.background)
        tokens = None
        if self.config.tokens:
            tokens = self._fit_tokens(examples, conditions, latents)
            maps = self._maps(examples.images, conditions, latents, examples.decode)
            tokens["miou_before"] = scores
            rule, scores = calibrate(maps[0], maps[1], maps[2], examples.masks, self.background)
        self.rule = rule
        self.calibration = {"examples": len(examples.keys), "kind": examples.kind, "miou": scores, "chose": "null" if rule.by_null else "threshold"}
        if tokens is not None:
            self.calibration["tokens"] = tokens
        if not rule.by_null:
            self.calibration["thresholds"] = {c: t for k, (c, t) in enumerate(zip(ctx.classes, rule.thresholds)) if k != self.background}
        fitted = (
            f", tokens fitted {self.config.tokens} steps on {tokens['queries_mib']} MiB of queries (loss {tokens['loss'][0]} -> {tokens['loss'][1]})"
            if tokens is not None else ""
        )
        print(f"synth: stage 'attention': calibrated on {len(examples.keys)} labelled images: {self.calibration['chose']} rule (mIoU {scores}){fitted}", file=sys.stderr)

    def _fit_tokens(self, examples, conditions: list[dict], latents: list) -> dict:
        """Fit one attribution token per class to the labelled examples and read with them from
        now on; returns what the fit measured. Examples with a path are fitted along it, the
        others (real images) at the noised timesteps."""
        gen, cfg = self.context.generator, self.config
        tokens, info = gen.attention_tokens(
            examples.images, conditions, examples.masks, self.spec, latents=latents, decode=examples.decode,
            background=self.background, steps=cfg.tokens, lr=cfg.token_lr, batch=cfg.batch,
        )
        self.spec = gen.attention_spec(self._options(tokens))
        self.tokens = tokens
        return info

    def report(self) -> dict | None:
        return {"calibration": self.calibration} if self.calibration else None

    def share(self):
        return {"rule": self.rule, "calibration": self.calibration, "tokens": self.tokens}

    def adopt(self, shared) -> None:
        gen = self.context.generator
        self.background = self.context.classes.index(self.config.background)
        self.tokens = shared["tokens"]
        self.spec = gen.attention_spec(self._options(self.tokens))
        self.rule, self.calibration = shared["rule"], shared["calibration"]

    def _maps(self, images: np.ndarray, conditions: list[dict], latents: list, decode) -> tuple:
        """(classes, named, null) maps of these rows, each read along its own path when it has a
        latent (grouped so a row's maps never depend on which rows came with it), refined."""
        gen, cfg = self.context.generator, self.config
        read = gen.attention if cfg.method == "attention" else gen.contrast
        n, (h, w) = len(images), images.shape[1:3]
        classes = np.zeros((n, len(self.context.classes), h, w), np.float32)
        named = np.zeros((n, len(self.context.classes)), bool)
        null = np.zeros((n, h, w), np.float32)
        with_latent = [i for i in range(n) if latents[i] is not None]
        without = [i for i in range(n) if latents[i] is None]
        for rows, z in ((with_latent, True), (without, False)):
            for start in range(0, len(rows), cfg.batch):
                part = rows[start : start + cfg.batch]
                if not part:
                    continue
                got = read(
                    images[part], [conditions[i] for i in part], self.spec,
                    latents=np.stack([latents[i] for i in part]) if z else None,
                    decode=[decode[i] for i in part] if z and decode is not None else None,
                )
                c, nul = got.classes, got.null
                if got.self_attention is not None and cfg.self_attention:
                    c, nul = refine(c, nul, got.self_attention, got.self_size, cfg.self_power)
                classes[part], named[part], null[part] = c, got.named, nul
        return classes, named, null

    def process(self, batch: Batch) -> Batch:
        cfg = self.config
        conditions = [_condition(r) for r in batch.records]
        latents = [batch.latents[i] if batch.latents is not None and replayable(r) else None for i, r in enumerate(batch.records)]
        decode = [r.get("decode") for r in batch.records]
        classes, named, null = self._maps(batch.images, conditions, latents, decode)
        labels, pixel_uncertainty = label(classes, named, null, self.rule)
        if cfg.regions_from == "labels":
            if batch.seg is None:
                raise UsageError("stage 'attention': regions_from = \"labels\" needs an earlier labeller (pixelhead, sam) whose regions it classifies")
            labels = classes_of_regions(batch.seg, classes, named, self.background)
        scores = image_uncertainty(pixel_uncertainty, cfg.top_fraction)
        batch.seg = labels
        settings = {"by": "attention", "method": cfg.method, "rule": "null" if self.rule.by_null else "threshold"}
        if self.tokens is not None:
            settings["tokens"] = cfg.tokens
        if cfg.regions_from == "labels":
            settings["regions_from"] = "labels"
        for rec, s in zip(batch.records, scores):
            rec.setdefault("scores", {})[SCORE] = round(float(s), 6)
            rec["labels"] = settings
        return batch


def _condition(record: dict) -> dict:
    cond = dict(record.get("condition") or {})
    if record.get("class") is not None:
        cond.setdefault("class", record["class"])
    return cond

