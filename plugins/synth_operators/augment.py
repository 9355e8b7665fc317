"""`augment`: classic image-space augmentation (flips, crops, colour jitter), the baseline every
latent operator is compared against. Geometry changes are applied to seg.png too."""

from __future__ import annotations

import numpy as np
from PIL import Image
from pydantic import Field

from synth.batch import Batch
from synth.expand import child_rng, interleave
from synth.protocols import PluginConfig, Stage


class AugmentConfig(PluginConfig):
    copies: int = Field(4, ge=1, le=256, description="Augmented copies per sample")
    keep_parent: bool = Field(True, description="Keep each original beside its copies (false with copies = 1: a transform)")
    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip")
    vflip: float = Field(0.0, ge=0, le=1, description="Probability of a vertical flip")
    crop: tuple[float, float] = Field((0.7, 1.0), description="Random crop keeping this range of the side, resized back")
    brightness: float = Field(0.2, ge=0, le=1, description="Brightness factor in 1 +- this")
    contrast: float = Field(0.2, ge=0, le=1)
    saturation: float = Field(0.2, ge=0, le=1)


def _jitter(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    x = img.astype(np.float32) / 255.0
    x = x * rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    gray = x.mean(axis=-1, keepdims=True)
    x = (x - gray) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation) + gray
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def augment_one(img: np.ndarray, seg: np.ndarray | None, rng: np.random.Generator, cfg: AugmentConfig):
    h, w = img.shape[:2]
    side = rng.uniform(*cfg.crop)
    ch, cw = max(1, int(round(h * side))), max(1, int(round(w * side)))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    flip_h, flip_v = rng.random() < cfg.hflip, rng.random() < cfg.vflip
    out = Image.fromarray(img[top : top + ch, left : left + cw]).resize((w, h), Image.BICUBIC)
    out = np.asarray(out)
    s = None
    if seg is not None:
        s = np.asarray(Image.fromarray(seg[top : top + ch, left : left + cw].astype(np.int32)).resize((w, h), Image.NEAREST)).astype(seg.dtype)
    if flip_h:
        out, s = out[:, ::-1], None if s is None else s[:, ::-1]
    if flip_v:
        out, s = out[::-1], None if s is None else s[::-1]
    params = {"crop": [top, left, ch, cw], "hflip": bool(flip_h), "vflip": bool(flip_v)}
    return _jitter(np.ascontiguousarray(out), rng, cfg), (None if s is None else np.ascontiguousarray(s)), params


class Augment(Stage):
    """Augmented copies of every sample (crop, flips, colour jitter); labels follow, seg.png is
    cropped and flipped with the image. Latents are dropped: an augmented image is no decode."""

    name = "augment"
    kind = "expand"
    Config = AugmentConfig
    scores = frozenset()
    latents = "drops"

    def process(self, batch: Batch) -> Batch:
        cfg, seed = self.config, self.context.seed
        rows, keys, ops, images, segs = [], [], [], [], []
        for r, (key, rec) in enumerate(zip(batch.keys, batch.records)):
            for j in range(cfg.copies):
                rng = child_rng(seed, int(rec.get("index", 0)), "augment", key, j)
                img, s, params = augment_one(batch.images[r], None if batch.seg is None else batch.seg[r], rng, cfg)
                rows.append(r)
                keys.append(f"{key}_a{j}")
                ops.append({"op": "augment", "copy": j, **params})
                images.append(img)
                segs.append(s)
        children = batch.derive(rows, keys, ops)
        children.images = np.stack(images)
        if batch.seg is not None:
            children.seg = np.stack(segs)
        for rec, r in zip(children.records, rows):
            rec["group"] = batch.keys[r]
            rec["decode"] = None
        for key, rec in zip(batch.keys, batch.records):
            rec["group"] = rec.get("group") or key
        out = interleave(batch, children, cfg.copies, cfg.keep_parent)
        out.latents = None
        return out
