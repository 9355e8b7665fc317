"""Cheap per-image scores and a threshold filter on any score (each drop gets a reason)."""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from synth.batch import Batch
from synth.protocols import PlanContext, PluginConfig, Stage


class ImageStatsConfig(PluginConfig):
    pass


class ImageStats(Stage):
    """Record brightness, contrast and saturation (0..1) of each image under scores."""

    name = "image_stats"
    kind = "transform"
    Config = ImageStatsConfig
    scores = frozenset({"brightness", "contrast", "saturation"})

    def process(self, batch: Batch) -> Batch:
        x = batch.images.astype(np.float32) / 255.0
        gray = x.mean(axis=-1)
        brightness = gray.mean(axis=(1, 2))
        contrast = gray.std(axis=(1, 2))
        saturation = (x.max(axis=-1) - x.min(axis=-1)).mean(axis=(1, 2))
        for i, rec in enumerate(batch.records):
            rec.setdefault("scores", {}).update(
                brightness=round(float(brightness[i]), 6),
                contrast=round(float(contrast[i]), 6),
                saturation=round(float(saturation[i]), 6),
            )
        return batch


class ThresholdConfig(PluginConfig):
    score: str = Field(description="Name of a score an earlier stage recorded, e.g. 'contrast'")
    min: float | None = Field(None, description="Drop samples whose score is below this")
    max: float | None = Field(None, description="Drop samples whose score is above this")

    @model_validator(mode="after")
    def _bounds(self):
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class Threshold(Stage):
    """Keep samples whose score lies within [min, max]; every drop records why."""

    name = "threshold"
    kind = "filter"
    Config = ThresholdConfig
    scores = frozenset()

    @classmethod
    def bounds(cls, config):
        return {"score": config.score, **{k: v for k, v in (("min", config.min), ("max", config.max)) if v is not None}}

    @classmethod
    def check_plan(cls, config, plan: PlanContext) -> list[str]:
        return plan.check_score_recorded(config.score)

    def process(self, batch: Batch) -> Batch:
        cfg = self.config
        keep, reasons, details = [], [], []
        for key, rec in zip(batch.keys, batch.records):
            value = rec.get("scores", {}).get(cfg.score)
            if value is None:
                raise ValueError(f"sample {key} has no score {cfg.score!r}; add the stage that computes it before this one")
            if cfg.min is not None and value < cfg.min:
                keep.append(False)
                reasons.append(f"{cfg.score} < min {cfg.min:g}")
            elif cfg.max is not None and value > cfg.max:
                keep.append(False)
                reasons.append(f"{cfg.score} > max {cfg.max:g}")
            else:
                keep.append(True)
                reasons.append("")
            details.append(f"{cfg.score}={value:.4g}")
        return batch.keep(keep, self.name, reasons, details)
