"""The run's own generator as a feature extractor: each feature block the pixel head reads,
averaged over the image. It needs no second model, so an offline user can pick which images to
label (select, k_center) or remove near-duplicates with what the generator already knows."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from synth.errors import UsageError
from synth.protocols import FeatureExtractor, PluginConfig


class GeneratorFeaturesConfig(PluginConfig):
    blocks: list[str] | None = Field(None, description="UNet blocks, as the pixel head names them (default: the generator's own default)")
    timesteps: list[int] | None = Field(None, description="Noise levels the images are read at (default: the generator's own default)")
    batch_size: int = Field(32, ge=1)


class GeneratorFeatures(FeatureExtractor):
    """Pooled per-block features of the run's [generator] (capability "features")."""

    name = "generator"
    Config = GeneratorFeaturesConfig

    @classmethod
    def check_plan(cls, config: GeneratorFeaturesConfig, plan) -> list[str]:
        gen = plan.generator
        if gen is None:
            return ["name: extractor 'generator' reads the run's own generator: add a [generator] table"]
        if "features" not in gen.cls.capabilities:
            return [f"name: extractor 'generator' needs a generator with per-pixel features; {gen.name!r} has none"]
        return gen.cls.check_feature_options(gen.config, {"blocks": config.blocks, "timesteps": config.timesteps}, plan)

    def setup(self) -> None:
        gen = self.context.generator
        if gen is None:  # check_plan says so first; a direct caller may not have run it
            raise UsageError("extractor 'generator': the run has no [generator]")
        self.gen = gen
        # noised features: one noise shared by every image, so an image's vector depends on it alone
        self.spec = gen.feature_spec({"blocks": self.config.blocks, "timesteps": self.config.timesteps, "source": "noised"})

    def _pooled(self, images: np.ndarray) -> list[np.ndarray]:
        """Per block and timestep: (N, C) channel means over the image."""
        rows = []
        for start in range(0, len(images), self.config.batch_size):
            chunk = images[start : start + self.config.batch_size]
            pyramid = self.gen.features(chunk, [{}] * len(chunk), self.spec)
            rows.append([_channel_means(f) for f in pyramid])
        return [np.concatenate(level) for level in zip(*rows)]

    def describe(self) -> dict:
        spec = self.spec
        return {"name": self.name, "generator": self.gen.describe(), "blocks": list(spec.blocks), "timesteps": list(spec.timesteps)}

    def embed(self, images: np.ndarray) -> np.ndarray:
        # Each block and timestep scaled to unit length, so each weighs the same whatever its
        # channel count or scale. Standardising every channel by moments of the generator's own
        # samples picked no better (bench/label_efficiency.py --pick k_center, three seeds), and
        # per-image scaling keeps a vector a function of its image alone.
        scaled = [x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12) for x in self._pooled(images)]
        return (np.concatenate(scaled, axis=1) / np.sqrt(len(scaled))).astype(np.float32)


def _channel_means(feature) -> np.ndarray:
    """(B, C) float32 means of a (B, C, h, w) map, pooled where the map is (a torch tensor on its
    device): only the means cross to the host, not the whole map."""
    if hasattr(feature, "detach"):
        return feature.detach().float().mean(dim=(2, 3)).cpu().numpy()
    return np.asarray(feature, np.float32).mean(axis=(2, 3))
