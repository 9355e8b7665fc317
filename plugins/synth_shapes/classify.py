"""`shapes_classify`: an image-level label for the shapes world, the class of the largest shape
the oracle segmenter sees (by pixel count). Used as the labeller of sigma = "auto" and the
image-level task of bench/views_efficiency.py; a stand-in for a user's own classifier."""

from __future__ import annotations

import numpy as np

from synth.batch import Batch
from synth.protocols import PluginConfig, Stage

from .world import CLASSES


def largest_shape(labels: np.ndarray) -> np.ndarray:
    """Per image (N,): the non-background class covering the most pixels (0 when none does)."""
    counts = np.stack([(labels == k).reshape(len(labels), -1).sum(1) for k in range(len(CLASSES))], 1)
    counts[:, 0] = 0
    out = counts.argmax(1)
    out[counts.max(1) == 0] = 0
    return out


class ShapesClassifyConfig(PluginConfig):
    pass


class ShapesClassify(Stage):
    """Class of each image = its largest shape (circle, square, triangle), by the shipped oracle."""

    name = "shapes_classify"
    kind = "transform"
    Config = ShapesClassifyConfig
    scores = frozenset()

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        classes = plan.classes
        if classes and list(classes) != list(CLASSES):
            return [f"shapes_classify labels with the shapes world's classes {list(CLASSES)}; use exactly these"]
        return []

    def setup(self) -> None:
        from .oracle import Oracle

        self.oracle = Oracle()

    def process(self, batch: Batch) -> Batch:
        labels, _ = self.oracle.predict(batch.images)
        for rec, c in zip(batch.records, largest_shape(labels)):
            rec["class"] = int(c)
        return batch
