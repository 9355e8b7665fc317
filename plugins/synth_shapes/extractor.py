"""The shapes world's feature network as a feature extractor (the offline default)."""

from __future__ import annotations

import numpy as np

from synth.protocols import FeatureExtractor, PluginConfig


class ShapesFeaturesConfig(PluginConfig):
    pass


class ShapesFeatures(FeatureExtractor):
    """128-d pooled features of the shipped shapes feature network (trained on the world's labels)."""

    name = "shapes"
    Config = ShapesFeaturesConfig
    # 2,000 real 32 px scenes (seed 0): nearest-neighbour cosine median 0.9914, 1st percentile of
    # the distance 0.00134 (bench/dedup_threshold.py prints both)
    duplicate_cosine = 0.9987

    def setup(self) -> None:
        from .featurenet import FeatureNet

        self.net = FeatureNet()

    def describe(self) -> dict:
        return {"name": self.name, "model": "synth_shapes featurenet-32"}

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.net.embed(images)[0].astype(np.float32)
