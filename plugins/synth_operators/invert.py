"""`invert`: G^-1, any image (real or generated) to the generator's initial latent."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from synth.batch import Batch
from synth.expand import conditions
from synth.protocols import PluginConfig, Stage


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per image, in dB, of uint8 images (N, H, W, 3)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


class InvertConfig(PluginConfig):
    added_later = frozenset({"guided"})

    method: Literal["fixed_point", "ddim"] = Field(
        "fixed_point", description="fixed_point: each inversion step solved by re-evaluating the UNet (ReNoise/AIDI-style); ddim: plain DDIM inversion"
    )
    steps: int | None = Field(None, ge=1, le=1000, description="Inversion steps (default: the generator's sampling steps, which decoding uses)")
    iterations: int = Field(2, ge=1, le=10, description="fixed_point: extra UNet calls per step")
    min_psnr: float | None = Field(None, gt=0, description="Drop samples whose round trip decode(invert(x)) is below this PSNR (dB)")
    batch_size: int = Field(16, ge=1, description="Images per inversion call")
    guided: Literal["negative_prompt", "plain"] = Field(
        "negative_prompt",
        description="Under classifier-free guidance (Stable Diffusion): negative_prompt decodes the latent with its prompt as its own "
        "negative, so guidance keeps to the inverted path (negative-prompt inversion); plain: as generated (the decode drifts as guidance grows)",
    )


class Invert(Stage):
    """Real or generated images -> the generator's initial latent (latent.npy), with the round
    trip's PSNR in scores.inversion_psnr."""

    name = "invert"
    kind = "transform"
    Config = InvertConfig
    requires = frozenset({"invert", "decode"})
    scores = frozenset({"inversion_psnr"})
    latents = "makes"

    def process(self, batch: Batch) -> Batch:
        gen, cfg, seed = self.context.generator, self.config, self.context.seed
        given = conditions(batch)
        conds = [gen.inversion_condition(c, int(r.get("index", 0)), cfg.guided) for c, r in zip(given, batch.records)]
        options = {"method": cfg.method, "steps": cfg.steps, "iterations": cfg.iterations}
        lat, back = [], []
        for s in range(0, len(batch), cfg.batch_size):
            rows = slice(s, s + cfg.batch_size)
            z = self.context.as_stored(gen.invert(batch.images[rows], conds[rows], options))
            lat.append(z)
            idx = [int(r.get("index", 0)) for r in batch.records[rows]]
            back.append(gen.decode(z, conds[rows], idx, seed))
        batch.latents = np.concatenate(lat)
        quality = psnr(np.concatenate(back), batch.images)
        op = {"op": "invert", "method": cfg.method, "steps": cfg.steps, "iterations": cfg.iterations if cfg.method == "fixed_point" else 0}
        for rec, q, cond, before in zip(batch.records, quality, conds, given):
            if cond != before:  # what the latent decodes under from now on (operators, regenerate)
                rec["condition"] = {k: v for k, v in cond.items() if k != "class"}
            rec.setdefault("scores", {})["inversion_psnr"] = round(float(q), 3)
            rec["lineage"] = list(rec.get("lineage") or []) + [dict(op)]
            rec["decode"] = None  # the image is the real one: its latent decodes to about it, not exactly
        if cfg.min_psnr is None:
            return batch
        keep = quality >= cfg.min_psnr
        return batch.keep(keep, self.name, f"inversion_psnr < min {cfg.min_psnr:g} dB", [f"{q:.2f} dB" for q in quality])
