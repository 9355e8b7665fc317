"""Inversion is right for every deterministic sampler the generator accepts (the inverted
latent decodes back to the image as well under Euler, whose latents start at init_noise_sigma,
as under DDIM) and refused in one line for a sampler that adds fresh noise at every step."""

import numpy as np
import pytest

from conftest import diffusers_manifest
from synth.errors import UsageError
from synth.manifest import load_manifest
from synth.pipeline import Pipeline

pytestmark = pytest.mark.slow


def _generator(tmp_path, scheduler):
    m = diffusers_manifest(tmp_path, "builtin:shapes-32", generator=f'scheduler = "{scheduler}"', name=f"{scheduler}.toml", steps=10)
    pipe = Pipeline(load_manifest(m), quiet=True)
    pipe.setup()
    return pipe.generator


def _psnr(a, b):
    return 10 * np.log10(255**2 / ((a.astype(float) - b.astype(float)) ** 2).mean())


def test_every_deterministic_sampler_inverts_faithfully_and_a_stochastic_one_is_refused(tmp_path):
    from synth_shapes.world import render_many

    images = render_many(0, range(4))[0]
    got = {}
    for scheduler in ("ddim", "euler", "dpm++"):
        gen = _generator(tmp_path, scheduler)
        z = gen.invert(images, [{}] * 4, {"method": "fixed_point"})
        got[scheduler] = (_psnr(gen.decode(z, [{}] * 4, [0, 1, 2, 3], 0), images), float(z.std()))
    for scheduler, (psnr, std) in got.items():
        assert psnr > 28 and 0.8 < std < 1.2, got  # Euler's was 13 dB, its latents 14.6x too small for SD
    with pytest.raises(UsageError, match="scheduler 'euler_a' adds fresh noise at every step"):
        _generator(tmp_path, "euler_a").invert(images, [{}] * 4)
