"""The `region_class` stage's manifest table."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synth.annotations import AnnotationsConfig
from synth.protocols import PluginConfig


class RegionClassConfig(PluginConfig):
    annotations: AnnotationsConfig = Field(description="The labelled examples whose instances the classifier learns from (the pixel head's table)")
    background: str = Field("background", description="The class whose pixels bound the regions; it is never given to a region")
    tolerance: int = Field(25, ge=0, le=255, description="Neighbouring labelled pixels form one region when no colour channel (0-255) differs by more")
    input: Literal["mask", "image"] = Field(
        "mask", description="What the classifier sees of a region: its silhouette, or its pixels too (colour-jittered in training, so colour alone cannot decide)"
    )
    prior: float = Field(
        0.5, ge=0, le=10, description="Weight of the earlier labeller's pixel votes inside a region (log of their smoothed shares); 0: the classifier alone"
    )
    crop: int = Field(24, ge=8, le=128, description="Side of the square crop (pixels) a region is resampled to")
    min_pixels: int = Field(3, ge=1, description="Labelled instances smaller than this are not learnt from; regions smaller keep their label")
    ensemble: int = Field(5, ge=1, le=32, description="Classifiers trained; their probabilities (over four quarter turns) are averaged")
    steps: int = Field(800, ge=1, le=100000, description="Optimiser steps per classifier")
    cache_dir: str | None = Field(None, description="Where trained classifiers are cached (default $SYNTH_CACHE_DIR or ~/.cache/synth)")
