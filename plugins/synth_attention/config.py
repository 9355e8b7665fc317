"""The attention labeller's manifest table."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synth.annotations import AnnotationsConfig
from synth.protocols import PluginConfig


class AttentionConfig(PluginConfig):
    method: Literal["attention", "contrast"] = Field(
        "attention",
        description="attention: each class token's cross-attention (DAAM); contrast: where the UNet's prediction moves "
        "when the class leaves the condition (DiffEdit), for models without cross-attention",
    )
    timesteps: list[int] | None = Field(
        None,
        description="Training-schedule timesteps whose maps count (the nearest sampler steps of a sample's path); "
        "default: every step (attention), the noised timesteps (contrast)",
    )
    noised_timesteps: list[int] | None = Field(
        None, min_length=1, description="Images without a path (real ones) are noised to these (default: 10, 20, 30 and 40% of the training schedule)"
    )
    blocks: list[Literal["down", "mid", "up"]] | None = Field(None, description="Cross-attention layers of these UNet parts only (default: all)")
    self_attention: int = Field(
        0, ge=0, le=128,
        description="Refine the class maps by the self-attention of the layers of this side (e.g. 16), raised to "
        "self_power, as Dataset Diffusion does; 0: off",
    )
    self_power: int = Field(1, ge=1, le=8, description="Power of the self-attention refinement")
    background: str = Field("background", description="The class of pixels no named class takes")
    background_from: Literal["null", "threshold"] = Field(
        "null",
        description="null: a pixel is background when the null token's attention beats every named class's (tag models); "
        "threshold: when no class map, stretched to 0..1 over the image (min to max), reaches threshold",
    )
    threshold: float = Field(0.4, gt=0, lt=1, description="With background_from = threshold: where between its minimum (0) and maximum (1) a class map must reach")
    class_thresholds: dict[str, float] | None = Field(None, description="Per-class thresholds (override threshold), e.g. {circle = 0.35}")
    calibrate: AnnotationsConfig | None = Field(
        None,
        description="A few labelled images (real, or annotated generated samples) to choose background_from and the per-class "
        "thresholds by, each class's best IoU on them",
    )
    tokens: int = Field(
        0, ge=0, le=5000,
        description="With calibrate: optimise one attribution token per class for this many steps, so its attention on the "
        "labelled images matches their masks (OVAM); the classes are then read from these tokens (the model and its images "
        "are unchanged); 0: off",
    )
    token_lr: float = Field(0.05, gt=0, le=1, description="Adam's step size for the attribution tokens")
    regions_from: Literal["attention", "labels"] = Field(
        "attention",
        description="attention: the maps draw the regions too; labels: keep the regions an earlier labeller drew (e.g. "
        "pixelhead's outline, sam's masks) and give each connected region the class its attention favours",
    )
    top_fraction: float = Field(0.1, gt=0, le=1, description="Per-image uncertainty: mean of this top share of pixel scores")
    batch: int = Field(16, ge=1, description="Images per replay of their paths")

    @model_validator(mode="after")
    def _thresholds(self):
        for name, t in (self.class_thresholds or {}).items():
            if not 0 < t < 1:
                raise ValueError(f"class_thresholds.{name}: {t} is not between 0 and 1")
        if self.tokens and self.calibrate is None:
            raise ValueError("tokens: optimising attribution tokens needs calibrate (the labelled images they are fitted to)")
        if self.tokens and self.method != "attention":
            raise ValueError(f"tokens: attribution tokens are read from cross-attention; method {self.method!r} has none")
        if any(t < 0 for t in (self.timesteps or []) + (self.noised_timesteps or [])):
            raise ValueError("timesteps must be >= 0")
        return self
