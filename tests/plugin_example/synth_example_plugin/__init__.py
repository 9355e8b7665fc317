"""A third-party plugin as a user would write it: three stages and a model alias."""

import numpy as np
from pydantic import Field

from synth.batch import Batch
from synth.hookspecs import hookimpl
from synth.protocols import PluginConfig, Stage


class MirrorConfig(PluginConfig):
    keep_original: bool = True


class Mirror(Stage):
    """Expand: add a left-right mirrored copy of every sample (class label inherited)."""

    name = "mirror"
    kind = "expand"
    Config = MirrorConfig

    def process(self, batch: Batch) -> Batch:
        rows, keys, records = [], [], []
        for i, (key, rec) in enumerate(zip(batch.keys, batch.records)):
            if self.config.keep_original:
                rows.append((i, False))
                keys.append(key)
                records.append(rec)
            child = {**rec, "lineage": rec["lineage"] + [{"op": "mirror", "parent": key}]}
            rows.append((i, True))
            keys.append(f"{key}_m")
            records.append(child)
        idx = [i for i, _ in rows]
        flip = np.array([f for _, f in rows])
        images = batch.images[idx].copy()
        images[flip] = images[flip][:, :, ::-1]
        seg = None if batch.seg is None else batch.seg[idx].copy()
        if seg is not None:
            seg[flip] = seg[flip][:, :, ::-1]
        latents = None if batch.latents is None else batch.latents[idx]
        return Batch(keys=keys, images=images, records=records, latents=latents, seg=seg, dropped=batch.dropped)


class BrightSegConfig(PluginConfig):
    levels: int = Field(3, ge=2, le=300, description="Number of class ids")


class BrightSeg(Stage):
    """Transform: a segmentation map made by quantising brightness (a stand-in labeller)."""

    name = "bright_seg"
    kind = "transform"
    Config = BrightSegConfig

    def process(self, batch: Batch) -> Batch:
        gray = batch.images.mean(axis=-1)
        batch.seg = np.minimum(gray * self.config.levels / 256.0, self.config.levels - 1).astype(np.int64)
        return batch


class BoomConfig(PluginConfig):
    at_index: int = Field(ge=0, description="Raise when the batch holds this source index")


class Boom(Stage):
    """Transform that fails on purpose at one sample (tests the error path)."""

    name = "boom"
    kind = "transform"
    Config = BoomConfig

    def process(self, batch: Batch) -> Batch:
        if any(r["index"] == self.config.at_index for r in batch.records):
            raise RuntimeError(f"kaboom at index {self.config.at_index}")
        return batch


@hookimpl
def register_stages(register):
    register(Mirror)
    register(BrightSeg)
    register(Boom)


@hookimpl
def register_models(register):
    register("example-model", "/nonexistent/example-model", description="an alias for tests")
