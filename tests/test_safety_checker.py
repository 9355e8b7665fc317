"""A text-to-image pipeline's safety checker: flagged samples are dropped with the reason
(default), kept with their flag, or the checker is off; a padding row's flag never lands on a
real sample (decode pads each call to micro_batch rows). The checker here is a stand-in that
flags the last row of every call, so which rows it flags is known."""

import numpy as np
import pytest
import torch

from conftest import diffusers_manifest
from synth.manifest import load_manifest
from synth.pipeline import Pipeline

pytestmark = pytest.mark.slow


class _Inputs:
    def __init__(self, n):
        self.pixel_values = torch.zeros(n, 3, 4, 4)

    def to(self, *args, **kwargs):
        return self


class _Module(torch.nn.Module):
    device, dtype = torch.device("cpu"), torch.float32  # what diffusers asks of a component


class FakeFeatureExtractor(_Module):
    def forward(self, images, return_tensors="pt"):
        return _Inputs(len(images))


class LastRowChecker(_Module):
    """Flags (and blacks out) the last row of every call, as a checker flags what it sees."""

    def forward(self, images, clip_input):
        flags = [i == len(images) - 1 for i in range(len(images))]
        images = images.clone()
        images[-1] = -1  # black, in the decoded range [-1, 1]
        return images, flags


def _pipeline(tmp_path, models, rule, name):
    m = diffusers_manifest(tmp_path, models["sd"], dataset='classes = ["cat", "dog"]', generator=f'templates = ["a {{cls}}"]\nmicro_batch = 4\nsafety_checker = "{rule}"', n=8, shard=8, batch=4, name=name)
    pipe = Pipeline(load_manifest(m), quiet=True)
    pipe.setup()
    sd = pipe.generator.pipe
    sd.feature_extractor, sd.safety_checker = FakeFeatureExtractor(), LastRowChecker()
    if rule == "off":  # as set-up leaves it: no checker runs
        sd.safety_checker = None
    return pipe


def test_flagged_samples_are_dropped_kept_or_unchecked_and_pads_flag_nothing(tmp_path, models):
    off = _pipeline(tmp_path, models, "off", "off.toml")
    keep = _pipeline(tmp_path, models, "keep", "keep.toml")
    drop = _pipeline(tmp_path, models, "drop", "drop.toml")

    # three rows padded to four: only the pad is flagged, and no real sample takes its flag
    three = keep.run_batch([0, 1, 2])
    assert [r["condition"].get("nsfw_flagged") for r in three.records] == [False, False, False]
    # four rows: the last is flagged; kept (blacked out by the checker) or dropped with the reason
    four = keep.run_batch([0, 1, 2, 3])
    assert [r["condition"]["nsfw_flagged"] for r in four.records] == [False, False, False, True]
    assert four.images[3].max() == 0 and four.images[:3].max() > 0
    unchecked = off.run_batch([0, 1, 2, 3])
    assert all("nsfw_flagged" not in r["condition"] for r in unchecked.records)
    np.testing.assert_array_equal(unchecked.images[:3], four.images[:3])
    dropped = drop.run_batch([0, 1, 2, 3])
    assert dropped.keys == ["s00000000", "s00000001", "s00000002"]
    np.testing.assert_array_equal(dropped.images, four.images[:3])
    (why,) = dropped.dropped
    assert why.key == "s00000003" and "withheld by the generator: the safety checker flagged the image" in why.reason
