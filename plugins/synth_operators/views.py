"""`views`: k samples in a ball of radius sigma around each sample's latent (GenRep's views, the
positives of contrastive learning), seeded and regenerable."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from synth.batch import Batch
from synth.expand import (
    child_index,
    child_rng,
    conditions,
    decode_children,
    drop_seg,
    interleave,
    mark,
    need_latents,
)
from synth.protocols import PluginConfig, Stage

from .common import mix
from .sigma_auto import AutoConfig, calibrate


class ViewsConfig(PluginConfig):
    k: int = Field(4, ge=1, le=256, description="Views per sample")
    sigma: float | Literal["auto"] = Field(0.2, description="Radius in (0, 1]: z' = sqrt(1 - s^2) z + s e; or \"auto\" (see auto)")
    auto: AutoConfig | None = Field(None, description="How sigma = \"auto\" calibrates")
    keep_parent: bool = Field(True, description="Keep each parent beside its views")

    @field_validator("sigma")
    @classmethod
    def _radius(cls, v):
        if v != "auto" and not 0 < v <= 1:
            raise ValueError("sigma must be in (0, 1] or \"auto\"")
        return v

    @model_validator(mode="after")
    def _auto_needs_a_labeller(self):
        if self.sigma == "auto" and self.auto is None:
            raise ValueError('sigma = "auto" needs auto = { labeller = { name = ... } }, e.g. the shapes world\'s shapes_classify')
        return self


class Views(Stage):
    """k views of every sample: latents in a ball of radius sigma around its own, decoded with
    its condition; class labels follow the parent."""

    name = "views"
    kind = "expand"
    Config = ViewsConfig
    requires = frozenset({"decode"})
    scores = frozenset()
    latents = "needs"
    seg = "drops"

    def setup(self) -> None:
        self.radii: dict[Any, float] = {}
        self.calibration: dict | None = None
        if self.config.sigma == "auto":

            self.calibration = calibrate(self.context, self.config.auto)
            self.radii = {k: v for k, v in self.calibration["radius"].items()}

    def share(self):
        return {"calibration": self.calibration} if self.calibration is not None else None

    def adopt(self, shared) -> None:
        self.calibration = shared["calibration"]
        self.radii = dict(self.calibration["radius"])

    def report(self) -> dict | None:
        return self.calibration

    def radius(self, label) -> float:
        if self.config.sigma != "auto":
            return float(self.config.sigma)
        key = "all" if label is None else str(label)
        return float(self.radii.get(key, self.radii.get("all", min(self.radii.values()))))

    def process(self, batch: Batch) -> Batch:
        gen, cfg, seed = self.context.generator, self.config, self.context.seed
        z = need_latents(batch, self.name)
        rows, keys, ops, lat, idx = [], [], [], [], []
        for r, (key, rec) in enumerate(zip(batch.keys, batch.records)):
            index = int(rec.get("index", 0))
            s = self.radius(rec.get("class"))
            for j in range(cfg.k):
                e = child_rng(seed, index, "views", key, j).standard_normal(z.shape[1:]).astype(np.float32)
                rows.append(r)
                keys.append(f"{key}_v{j}")
                ops.append({"op": "views", "sigma": round(s, 6), "view": j})
                lat.append(mix(z[r], e, s))
                idx.append(child_index(seed, index, "views", key, j))
        children = batch.derive(rows, keys, ops)
        children.latents = self.context.as_stored(np.stack(lat))
        children.images = decode_children(gen, children.latents, conditions(children), idx, seed)
        for rec, parent, i in zip(children.records, (batch.keys[r] for r in rows), idx):
            mark(rec, parent, i, seed)
        for key, rec in zip(batch.keys, batch.records):
            rec["group"] = rec.get("group") or key
        return drop_seg(interleave(batch, children, cfg.k, cfg.keep_parent))
