"""A second procedural world, unlike shapes: cells under a microscope. Each scene is a textured
background with 1-4 cells; a cell is an irregular blob (a radius perturbed by a few random
harmonics) with grainy cytoplasm and a darker nucleus nested inside it, off-centre. Masks: 0
background, 1 cytoplasm, 2 nucleus. Every scene derives from (seed, index, split) only.

It exists to check that `synth fit`'s defaults are not tuned to the shapes world: smooth nested
outlines and texture instead of straight edges and flat colour.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from pydantic import Field

from synth.batch import Batch
from synth.protocols import PluginConfig
from synth.records import sample_key
from synth.seeding import sample_rng

from .source import WorldSource

CELL_CLASSES = ("background", "cytoplasm", "nucleus")


def _blob(rng, xx, yy, cx, cy, r, harmonics: int = 4, wobble: float = 0.18):
    """Inside of a star-shaped blob: radius r * (1 + sum of a few random cosines of the angle)."""
    ang = np.arctan2(yy - cy, xx - cx)
    rad = np.ones_like(ang)
    for k in range(2, 2 + harmonics):
        rad += (wobble / k) * rng.uniform(-1, 1) * np.cos(k * ang + rng.uniform(0, 2 * np.pi))
    return np.hypot(xx - cx, yy - cy) <= r * rad


def _smooth_noise(rng, size: int, cells: int) -> np.ndarray:
    coarse = rng.standard_normal((cells + 1, cells + 1))
    pos = np.arange(size) * cells / size
    idx = np.minimum(pos.astype(int), cells - 1)
    frac = pos - idx
    rows = coarse[idx] * (1 - frac)[:, None] + coarse[idx + 1] * frac[:, None]
    return rows[:, idx] * (1 - frac) + rows[:, idx + 1] * frac


def render_cells(seed: int, index: int, size: int = 32, split: str = "train", supersample: int = 4):
    """One scene: (image uint8 HxWx3, mask uint8 HxW with ids into CELL_CLASSES)."""
    rng = sample_rng(seed, index, f"cells:{split}")
    fine = size * supersample
    yy, xx = (np.mgrid[0:fine, 0:fine] + 0.5) / fine
    stain = rng.uniform(0.55, 0.95, 3)  # the slide's tint
    img = stain[None, None, :] + 0.06 * _smooth_noise(rng, fine, 4)[..., None]
    label = np.zeros((fine, fine), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        r = rng.uniform(0.14, 0.26)
        cx, cy = rng.uniform(r, 1 - r, 2)
        cell = _blob(rng, xx, yy, cx, cy, r)
        body = np.clip(stain * rng.uniform(0.45, 0.75) + rng.uniform(-0.08, 0.08, 3), 0, 1)
        grain = 0.08 * _smooth_noise(rng, fine, 12)[..., None]
        img = np.where(cell[..., None], body[None, None, :] + grain, img)
        label[cell] = 1
        nr = r * rng.uniform(0.35, 0.55)
        off = (r - nr) * 0.5 * rng.uniform(-1, 1, 2)
        nucleus = _blob(rng, xx, yy, cx + off[0], cy + off[1], nr, harmonics=2, wobble=0.12) & cell
        dark = np.clip(body * rng.uniform(0.3, 0.55), 0, 1)
        img = np.where(nucleus[..., None], dark[None, None, :] + 0.5 * grain, img)
        label[nucleus] = 2
    ss = supersample
    img = img.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    blocks = label.reshape(size, ss, size, ss).transpose(0, 2, 1, 3).reshape(size, size, ss * ss)
    mask = np.stack([(blocks == k).sum(-1) for k in range(len(CELL_CLASSES))], -1).argmax(-1).astype(np.uint8)
    img = img + rng.normal(0, 0.015, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), mask


class CellsConfig(PluginConfig):
    size: int = Field(32, ge=16, le=256, description="Image side in pixels")
    split: Literal["train", "test", "val"] = "train"


class CellsSource(WorldSource):
    """Procedural microscopy-like scenes (background, cytoplasm, nucleus) with exact masks."""

    name = "cells"
    Config = CellsConfig
    classes = CELL_CLASSES

    def produce(self, indices: Sequence[int]) -> Batch:
        pairs = [render_cells(self.context.seed, i, self.config.size, self.config.split) for i in indices]
        records = [{"index": i, "source": {"kind": "cells", "split": self.config.split}, "lineage": [{"op": "read", "source": "cells", "split": self.config.split}]} for i in indices]
        return Batch(keys=[sample_key(i) for i in indices], images=np.stack([p[0] for p in pairs]), records=records, seg=np.stack([p[1] for p in pairs]))
