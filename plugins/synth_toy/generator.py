"""Toy generator: a 24-number latent decoded to a few soft shapes on a coloured background.

Deterministic and smooth in its latent (nearby latents give nearby images), so interpolation,
views and regeneration behave as they would with a real generator. With [dataset].classes set it
is class-conditional: class k draws shapes of kind k % 3 (circle, square, triangle).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import Field

from synth.protocols import Generator, PluginConfig
from synth.seeding import sample_rng

LATENT_DIM = 24
SHAPES = ("circle", "square", "triangle")


class ToyConfig(PluginConfig):
    size: int = Field(64, ge=8, le=1024, description="Image side in pixels")
    num_shapes: int = Field(3, ge=1, le=7, description="Shapes per image")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class ToyGenerator(Generator):
    """Procedural shapes from a Gaussian latent (no weights; for demos and tests)."""

    name = "toy"
    Config = ToyConfig
    capabilities = frozenset({"sample", "decode", "condition:class"})

    def describe(self):
        return {"name": self.name, "model": "toy-shapes", "size": self.config.size, "license": "cc0-1.0"}

    def image_shape(self):
        return (self.config.size, self.config.size, 3)

    def condition(self, index: int) -> dict:
        n = len(self.context.classes)
        return {"class": index % n} if n else {}

    def sample_latents(self, indices: Sequence[int], seed: int) -> np.ndarray:
        dim = 3 + 7 * self.config.num_shapes
        return np.stack([sample_rng(seed, i, "latent").standard_normal(dim).astype(np.float32) for i in indices])

    def decode(self, latents: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int) -> np.ndarray:
        return np.stack([self._render(z, c.get("class")) for z, c in zip(latents, conditions)])

    def _render(self, z: np.ndarray, cls: int | None) -> np.ndarray:
        s = self.config.size
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        yy, xx = (yy + 0.5) / s, (xx + 0.5) / s
        bg = 0.15 + 0.6 * _sigmoid(z[0:3])
        img = np.empty((s, s, 3), np.float32)
        img[:] = bg * (0.9 + 0.1 * np.sin(6 * xx + 4 * yy))[..., None]  # a gentle gradient texture
        for k in range(self.config.num_shapes):
            p = z[3 + 7 * k : 10 + 7 * k]
            cx, cy = 0.5 + 0.32 * np.tanh(p[0]), 0.5 + 0.32 * np.tanh(p[1])
            r = 0.08 + 0.12 * _sigmoid(p[2])
            colour = _sigmoid(1.8 * p[3:6])
            kind = cls % 3 if cls is not None else int(_sigmoid(p[6]) * 3 - 1e-6)
            dx, dy = xx - cx, yy - cy
            if kind == 0:
                dist = np.sqrt(dx * dx + dy * dy) - r
            elif kind == 1:
                dist = np.maximum(np.abs(dx), np.abs(dy)) - r * 0.85
            else:  # an upward triangle as the max of three half-planes
                dist = np.maximum.reduce([dy - r * 0.5, -0.866 * dx - 0.5 * dy - r * 0.5, 0.866 * dx - 0.5 * dy - r * 0.5])
            alpha = np.clip(0.5 - dist * s, 0.0, 1.0)[..., None]  # one-pixel soft edge
            img = img * (1 - alpha) + colour * alpha
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
