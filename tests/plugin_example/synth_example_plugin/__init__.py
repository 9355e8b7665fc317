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
        # derive() copies each parent (class label included) and records the op in its lineage
        rows = range(len(batch))
        mirrored = batch.derive(rows, [f"{k}_m" for k in batch.keys], [{"op": "mirror"}] * len(batch))
        mirrored.images = mirrored.images[:, :, ::-1].copy()
        if mirrored.seg is not None:
            mirrored.seg = mirrored.seg[:, :, ::-1].copy()
        if not self.config.keep_original:
            return mirrored
        # originals and their mirrors interleaved: s0, s0_m, s1, s1_m, ...
        both = Batch.concat([batch, mirrored])
        n = len(batch)
        return both.take([j for i in range(n) for j in (i, n + i)])


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


class BrightClassConfig(PluginConfig):
    bounds: list[float] = Field([100.0, 108.0], description="Mean brightness bounds between classes 0, 1, 2, ...")


class BrightClass(Stage):
    """Transform: class = the brightness band an image's mean falls in (a stand-in classifier)."""

    name = "bright_class"
    kind = "transform"
    Config = BrightClassConfig

    def process(self, batch: Batch) -> Batch:
        means = batch.images.reshape(len(batch), -1).mean(1)
        for rec, m in zip(batch.records, means):
            rec["class"] = int(np.searchsorted(self.config.bounds, m, side="right"))
        return batch


class NapConfig(PluginConfig):
    seconds: float = Field(0.1, ge=0, description="Sleep this long per batch")


class Nap(Stage):
    """Transform that takes its time (a stand-in for a slow model, for kill tests)."""

    name = "nap"
    kind = "transform"
    Config = NapConfig

    def process(self, batch: Batch) -> Batch:
        import time

        time.sleep(self.config.seconds)
        return batch


@hookimpl
def register_stages(register):
    register(Mirror)
    register(BrightSeg)
    register(Boom)
    register(Nap)
    register(BrightClass)


@hookimpl
def register_models(register):
    register("example-model", "/nonexistent/example-model", description="an alias for tests")
