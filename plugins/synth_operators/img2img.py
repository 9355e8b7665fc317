"""`img2img`: SDEdit (Meng et al.): each image, real or generated, noised part-way along the
generator's path and denoised under its condition: variants that keep the layout and change the
look (low strength) or keep only the gist (high). For a dataset of real images it is the cheapest
way to put the generator's look on them without inverting."""

from __future__ import annotations

from pydantic import Field, field_validator

from synth.batch import Batch
from synth.expand import child_index, conditions, drop_seg, interleave, mark
from synth.protocols import PluginConfig, Stage


class Img2ImgConfig(PluginConfig):
    strengths: list[float] = Field([0.5], min_length=1, max_length=64, description="How far along the path each child is noised: (0, 1], 1 = from pure noise")
    keep_parent: bool = True

    @field_validator("strengths")
    @classmethod
    def _in_range(cls, v):
        for s in v:
            if not 0 < s <= 1:
                raise ValueError(f"strength {s:g} is outside (0, 1]")
        return v


class Img2Img(Stage):
    """One child per strength, under the parent's condition (for a real image: the generator's
    own for its class, as invert takes it); parent and children share a group key."""

    name = "img2img"
    kind = "expand"
    Config = Img2ImgConfig
    requires = frozenset({"edit"})
    scores = frozenset()
    seg = "drops"

    def process(self, batch: Batch) -> Batch:
        gen, cfg, seed = self.context.generator, self.config, self.context.seed
        conds = [gen.inversion_condition(c, int(r.get("index", 0)), "plain") for c, r in zip(conditions(batch), batch.records)]
        per = len(cfg.strengths)
        rows = [r for r in range(len(batch)) for _ in range(per)]
        keys = [f"{k}_e{j}" for k in batch.keys for j in range(per)]
        ops = [{"op": "img2img", "strength": s} for _ in range(len(batch)) for s in cfg.strengths]
        children = batch.derive(rows, keys, ops)
        images = []
        for j, strength in enumerate(cfg.strengths):
            idx = [child_index(seed, int(rec.get("index", 0)), "img2img", key, j) for key, rec in zip(batch.keys, batch.records)]
            images.append(gen.edit(batch.images, conds, idx, seed, strength))
        children.images = batch.images[rows].copy()
        for j in range(per):
            children.images[j::per] = images[j]
        for rec, r in zip(children.records, rows):
            cond = {k: v for k, v in conds[r].items() if k != "class"}
            if cond:
                rec["condition"] = cond
            mark(rec, batch.keys[r], None, seed)  # an image in, not a latent: no decode makes it again
        for key, rec in zip(batch.keys, batch.records):
            rec["group"] = rec.get("group") or key
        return drop_seg(interleave(batch, children, per, cfg.keep_parent))
