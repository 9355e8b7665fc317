"""`compose`: image A where a mask is, image B elsewhere, made by mask-blended denoising (A's own
trajectory inside the mask for the first part of sampling, then free denoising of the whole) so
the result is one coherent image, not a paste. Masks come from the sample's own labels (e.g. its
circles) or a mask file."""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field, model_validator

from synth.batch import Batch
from synth.errors import UsageError
from synth.expand import (
    child_index,
    conditions,
    drop_seg,
    interleave,
    mark,
    need_latents,
)
from synth.protocols import PluginConfig, Stage

from .partners import generated_partner


class ComposeConfig(PluginConfig):
    partner: Literal["random", "class"] = Field("random", description="Background sample B: a random other sample, or one of the same class")
    mask_classes: list[int] | None = Field(None, description="Mask = these class ids of the sample's own seg (a labeller must run before)")
    mask_file: str | None = Field(None, description="Or one mask for every sample: a grayscale PNG of the image size (white = A)")
    blend_until: float = Field(0.7, gt=0, le=1, description="Share of the sampling steps during which A is kept inside the mask")
    keep_parent: bool = True

    @model_validator(mode="after")
    def _one_mask(self):
        if (self.mask_classes is None) == (self.mask_file is None):
            raise ValueError("give mask_classes (from the sample's seg) or mask_file")
        return self


class Compose(Stage):
    """A child per sample: the sample (A) inside its mask, another sample (B) outside, denoised
    together."""

    name = "compose"
    kind = "expand"
    Config = ComposeConfig
    requires = frozenset({"decode", "sample", "compose"})
    scores = frozenset()
    latents = "needs"
    seg = "drops"

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        if config.mask_file is not None:
            path = plan.resolve_path(config.mask_file)
            if not path.is_file():
                return [f"mask_file: no such file {path}"]
            shape = (plan.generator.cls.static_info(plan.generator.config, plan) or {}).get("image_shape") if plan.generator else None
            with Image.open(path) as m:
                size = m.size
            if shape is not None and (size[1], size[0]) != tuple(shape[:2]):
                return [f"mask_file: {path.name} is {size[0]}x{size[1]}, the generator makes {shape[1]}x{shape[0]} images"]
        bad = [c for c in config.mask_classes or [] if not 0 <= c < len(plan.classes)]
        if bad:
            return [f"mask_classes: class id {bad[0]} is not one of the {len(plan.classes)} classes of [dataset].classes (ids 0..{len(plan.classes) - 1})"]
        if config.mask_classes is not None and not any(getattr(s.cls, "seg", None) == "makes" for s in plan.earlier()):
            return ["mask_classes needs the sample's labels: put a labeller (e.g. pixelhead) before compose, or give mask_file"]
        return []

    def setup(self) -> None:
        self.mask = None
        if self.config.mask_file is not None:
            with Image.open(self.context.resolve_path(self.config.mask_file)) as m:
                self.mask = (np.asarray(m.convert("L")) >= 128).astype(np.float32)

    def _masks(self, batch: Batch) -> np.ndarray:
        n, h, w = len(batch), batch.images.shape[1], batch.images.shape[2]
        if self.mask is not None:
            if self.mask.shape != (h, w):
                raise UsageError(f"stage 'compose'.mask_file is {self.mask.shape[1]}x{self.mask.shape[0]}, samples are {w}x{h}")
            return np.broadcast_to(self.mask, (n, h, w)).copy()
        if batch.seg is None:
            raise UsageError("stage 'compose': mask_classes needs the samples' seg (a labeller before compose)")
        return np.isin(batch.seg, self.config.mask_classes).astype(np.float32)

    def process(self, batch: Batch) -> Batch:
        gen, cfg, seed = self.context.generator, self.config, self.context.seed
        za = need_latents(batch, self.name)
        masks = self._masks(batch)
        zb, partners, idx = [], [], []
        for key, rec in zip(batch.keys, batch.records):
            index = int(rec.get("index", 0))
            if not (rec.get("lineage") or [{}])[0].get("op") == "generate":
                raise UsageError(f"stage 'compose': sample {key} was not generated here; partner latents are recomputed from seeds")
            j = generated_partner(gen, seed, self.context.num_samples, index, key, "compose", cfg.partner == "class", rec.get("class"))
            zb.append(gen.sample_latents([j], seed)[0])
            partners.append(f"s{j:08d}")
            idx.append(child_index(seed, index, "compose", key, 0))
        rows = list(range(len(batch)))
        keys = [f"{k}_c0" for k in batch.keys]
        ops = [{"op": "compose", "partner": p, "mask": cfg.mask_classes if cfg.mask_classes is not None else cfg.mask_file, "blend_until": cfg.blend_until} for p in partners]
        children = batch.derive(rows, keys, ops)
        children.images = gen.compose(za, np.stack(zb), masks, conditions(batch), idx, seed, cfg.blend_until)
        for rec, key in zip(children.records, batch.keys):
            mark(rec, key, None, seed)  # two latents and a mask: no single decode regenerates it
        for key, rec in zip(batch.keys, batch.records):
            rec["group"] = rec.get("group") or key
        return drop_seg(interleave(batch, children, 1, cfg.keep_parent))
