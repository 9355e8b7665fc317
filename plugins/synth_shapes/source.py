"""The shapes world as a source stage: real images with exact masks, train/test splits."""

from __future__ import annotations

from typing import Literal, Sequence

from pydantic import Field

from synth.batch import Batch
from synth.protocols import PluginConfig, SourceStage
from synth.records import sample_key

from .world import CLASSES, render_many, tags_of


class ShapesConfig(PluginConfig):
    size: int = Field(32, ge=16, le=512, description="Image side in pixels (32 and 64 are the shipped sizes)")
    difficulty: float = Field(0.5, ge=0.0, le=1.0, description="0 easy .. 1 hard (more, smaller, look-alike shapes)")
    split: Literal["train", "test", "val", "featurenet"] = Field("train", description="Each split is a disjoint stream of scenes")


class WorldSource(SourceStage):
    """A procedural world as a source: fixed classes, exact masks."""

    kind = "source"
    scores = frozenset()
    seg = "makes"
    classes: tuple[str, ...] = ()

    @classmethod
    def default_classes(cls, config) -> list[str]:
        return list(cls.classes)

    @classmethod
    def planned_size(cls, config, plan):
        return (config.size, config.size)

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        # Only the run's own source labels its samples; an embedded one (a reference set for the
        # filters, a labeller's annotations) is checked by the stage that embeds it.
        classes = plan.classes
        if plan.position >= 0 and classes and list(classes) != list(cls.classes):
            return [f"the {cls.name} world's classes are {list(cls.classes)}; leave [dataset].classes empty or use exactly these"]
        return []


class ShapesSource(WorldSource):
    """Procedural shapes scenes (background, circle, square, triangle) with exact class masks."""

    name = "shapes"
    Config = ShapesConfig
    classes = CLASSES

    def produce(self, indices: Sequence[int]) -> Batch:
        cfg = self.config
        images, masks = render_many(self.context.seed, indices, cfg.size, cfg.difficulty, cfg.split)
        records = [
            {
                "index": i,
                "source": {"kind": "shapes", "split": cfg.split, "difficulty": cfg.difficulty},
                "lineage": [{"op": "read", "source": "shapes", "split": cfg.split}],
                # image-level tags (the kinds of shape a scene shows): a caption's analogue, the
                # cheap label a tag-conditioned model is fitted on
                "tags": tags_of(mask),
            }
            for i, mask in zip(indices, masks)
        ]
        return Batch(keys=[sample_key(i) for i in indices], images=images, records=records, seg=masks)
