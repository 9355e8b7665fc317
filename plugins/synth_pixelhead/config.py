"""Manifest tables of the pixel-head stages."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synth.annotations import AnnotationsConfig
from synth.protocols import PluginConfig


class RegionVoteConfig(PluginConfig):
    """One class per colour region of the head's foreground (see regions.py)."""

    tolerance: int = Field(25, ge=0, le=255, description="Neighbouring pixels join a region when no colour channel (0-255) differs by more")
    background: str = Field("background", description="The class not voted on: its pixels bound the regions and keep their label")


class PixelHeadConfig(PluginConfig):
    head: str | None = Field(None, description="A trained head folder (head.json + head.safetensors) to reuse")
    annotations: AnnotationsConfig | None = Field(None, description="Train a head from these (cached)")
    blocks: list[str] | None = Field(None, description="UNet blocks: 'mid', 'upN', 'downN' (default: mid + every up block)")
    timesteps: list[int] | None = Field(None, description="Noise levels to read features at (default 50, 150, 250)")
    features_from: Literal["noised", "inverted", "trajectory"] = Field(
        "noised",
        description="Where x_t comes from: the image noised to t with one shared noise (ddpm-segmentation); "
        "its DDIM inversion to t; or a generated sample's own denoising path (real images are inverted)",
    )
    inversion_steps: int = Field(20, ge=1, le=1000, description="DDIM inversion grid between 0 and the largest timestep")
    ensemble: int = Field(10, ge=1, le=64, description="Number of pixel MLPs; label = majority vote")
    hidden: list[int] = Field([128, 32], min_length=1, max_length=4, description="Hidden widths of each MLP")
    steps: int = Field(1500, ge=1, description="Optimiser steps per MLP")
    batch_pixels: int = Field(2048, ge=16, description="Pixels per optimiser step")
    lr: float = Field(1e-3, gt=0)
    balance: float = Field(0.0, ge=0, le=1, description="Class balance of training batches: 0 = pixels as they come, 1 = every class equally often")
    bank_mb: int = Field(1024, ge=16, description="Memory for training pixels (fp16); bounds RAM whatever the image count")
    top_fraction: float = Field(0.1, gt=0, le=1, description="Per-image uncertainty: mean of this top share of pixel scores")
    calibration_samples: int = Field(
        512, ge=0, description="Generated samples scored after training to calibrate drop_uncertain (its drop share is within about 2/sqrt(n) of the fraction asked)"
    )
    feature_batch: int = Field(16, ge=1, description="Images per UNet pass when extracting features")
    max_memory_gb: float | None = Field(
        None, gt=0, description="Refuse to start when labelling a feature_batch would take more than this (the estimate is printed at the start of every run)"
    )
    region_vote: RegionVoteConfig | None = Field(
        None, description="Give each colour region of non-background pixels the class most of its pixels got (e.g. {} or {tolerance = 25})"
    )
    cache_dir: str | None = Field(None, description="Where trained heads are cached (default $SYNTH_CACHE_DIR or ~/.cache/synth)")
    save_to: str | None = Field(None, description="Also copy the trained head to this folder, for `head = ...` elsewhere")

    @model_validator(mode="after")
    def _head_or_annotations(self):
        if (self.head is None) == (self.annotations is None):
            raise ValueError("give either head (a trained head folder) or annotations (to train one)")
        if self.timesteps is not None and any(t < 0 for t in self.timesteps):
            raise ValueError("timesteps must be >= 0")
        return self


class DropUncertainConfig(PluginConfig):
    fraction: float = Field(0.1, gt=0, lt=1, description="Drop samples above this quantile of the head's calibration scores")
    max: float | None = Field(None, gt=0, description="Or an absolute bound on the score instead")
    score: str = Field("label_uncertainty", description="The score to filter on")
