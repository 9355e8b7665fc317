"""The `sam` stage's settings: which SAM (backend, weights), and what it is asked (mode)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synth.protocols import PluginConfig

from .architecture import SamArchitecture


class Prompt(PluginConfig):
    """One object to segment: a box [x0, y0, x1, y1] and/or points (x, y) in the sample's pixels,
    points labelled 1 (on the object, the default) or 0 (not on it); optionally its class."""

    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float]] = []
    labels: list[Literal[0, 1]] | None = None
    class_: str | int | None = Field(None, alias="class")

    @model_validator(mode="after")
    def _check(self):
        if self.box is None and not self.points:
            raise ValueError("a prompt needs a box or points")
        if self.labels is not None and len(self.labels) != len(self.points):
            raise ValueError(f"{len(self.labels)} labels for {len(self.points)} points")
        if self.box is not None and (self.box[0] > self.box[2] or self.box[1] > self.box[3]):
            raise ValueError(f"box {list(self.box)} is not [x0, y0, x1, y1] with x0 <= x1 and y0 <= y1")
        return self


class SamStageConfig(PluginConfig):
    # -- which SAM ---------------------------------------------------------------------------
    backend: Literal["segment-anything", "transformers"] = "segment-anything"
    checkpoint: str | None = Field(None, description="segment-anything: the .pth (or .safetensors) file, e.g. sam_vit_h_4b8939.pth")
    model_type: Literal["vit_h", "vit_l", "vit_b"] | None = Field(None, description="segment-anything: the checkpoint's encoder")
    architecture: SamArchitecture | None = Field(None, description="segment-anything: any other shape, spelled out (instead of model_type)")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="Checked before the checkpoint loads")
    model: str | None = Field(None, description="transformers: hub id (e.g. facebook/sam-vit-base) or local folder")
    revision: str | None = None
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    encoder_batch_size: int = Field(4, ge=1, le=256, description="Images per image-encoder call")

    # -- what it is asked ---------------------------------------------------------------------
    mode: Literal["auto", "prompted", "refine"] = "auto"
    # auto: segment everything from a grid of point prompts
    points_per_side: int = Field(32, ge=1, le=128)
    points_per_batch: int = Field(64, ge=1, le=4096)
    pred_iou_thresh: float = Field(0.88, ge=0, le=1)
    stability_score_thresh: float = Field(0.95, ge=0, le=1)
    stability_score_offset: float = Field(1.0, ge=0)
    box_nms_thresh: float = Field(0.7, gt=0, le=1)
    min_mask_region_area: int = Field(0, ge=0, description="Islands and holes smaller than this (pixels, at the sample's size) are removed")
    classes_from: Literal["none", "seg", "sample"] = Field(
        "none", description="auto / prompted: an instance's class: none, the earlier labeller's majority inside it (seg), or the sample's own class"
    )
    # prompted
    prompts_from: Literal["manifest", "record", "seg"] = Field("manifest", description="manifest: `prompts`; record: the sample json's `record_field`; seg: boxes of the earlier labeller's regions")
    prompts: list[Prompt] = []
    record_field: str = Field("prompts", pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
    multimask: bool = Field(True, description="Point-only prompts: ask for three masks and keep the best by predicted IoU")
    # refine (and prompts_from = "seg")
    iou_threshold: float = Field(0.5, ge=0, le=1, description="refine: keep SAM's mask when its IoU with the head's region is at least this")
    interior_points: int = Field(1, ge=0, le=16, description="Points inside each region, besides its box")
    min_region_area: int = Field(4, ge=1, description="Regions of the labeller smaller than this (pixels) are not prompted")
    background: int = Field(0, ge=0, description="The class id that is not a region")

    @model_validator(mode="after")
    def _check(self):
        if self.backend == "segment-anything":
            if self.checkpoint is None:
                raise ValueError("backend 'segment-anything' needs checkpoint = path of the .pth file")
            if (self.model_type is None) == (self.architecture is None):
                raise ValueError("backend 'segment-anything' needs one of model_type (vit_h, vit_l, vit_b) or architecture")
        elif self.model is None:
            raise ValueError("backend 'transformers' needs model = hub id or local folder")
        if self.mode == "prompted" and self.prompts_from == "manifest" and not self.prompts:
            raise ValueError("mode 'prompted' with prompts_from = 'manifest' needs prompts = [{ box = [...] }, ...]")
        if self.prompts and not (self.mode == "prompted" and self.prompts_from == "manifest"):
            raise ValueError("prompts are used only by mode = 'prompted' with prompts_from = 'manifest'")
        return self

    def needs_seg(self) -> bool:
        return self.mode == "refine" or self.classes_from == "seg" or (self.mode == "prompted" and self.prompts_from == "seg")
