"""The pixel head says what labelling will hold in memory before it starts (from the UNet's
config: no model call) and refuses in one line when a stated max_memory_gb would be exceeded."""

import re
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import synth
from test_pixelhead import _head, _manifest, _pipeline

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("which", ["ddpm", "sd"])
def test_the_shapes_from_the_config_are_the_features_shapes(tmp_path, models, which):
    gen = _pipeline(_manifest(tmp_path, models[which], gen_extra='prompts = ["a cat"]' if which == "sd" else ""))
    spec = gen.feature_spec({"blocks": ["down0", "down1", "mid", "up0", "up1"], "timesteps": [10, 50]})
    images = np.zeros((1, 16, 16, 3), np.uint8)
    real = [tuple(f.shape[1:]) for f in gen.features(images, [gen.condition(0)], spec)]
    assert gen.feature_shapes(spec) == real


def test_stable_diffusion_at_512_px_takes_about_half_a_gib_per_image():
    from synth_diffusers.features import pyramid_shapes
    from synth_pixelhead.memory import MiB, labelling_bytes

    unet = SimpleNamespace(config=SimpleNamespace(block_out_channels=(320, 640, 1280, 1280)))
    spec = SimpleNamespace(blocks=("mid", "up0", "up1", "up2", "up3"), timesteps=(50, 150, 250))
    shapes = pyramid_shapes(unet, (64, 64), spec)
    assert shapes[:5] == [(1280, 8, 8), (1280, 16, 16), (1280, 32, 32), (640, 64, 64), (320, 64, 64)]
    per = labelling_bytes(shapes, 2, (512, 512), [128, 32], 10)
    assert 480 * MiB < per < 600 * MiB  # measured on a GPU: about 550 MiB per 512 px image


def test_a_batch_over_max_memory_is_refused_before_training_and_the_estimate_is_said(tmp_path, models):
    m = _manifest(tmp_path, models["ddpm"], _head(extra="max_memory_gb = 0.001\nfeature_batch = 16"))
    res = synth("run", m)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("synth: error: stage 'pixelhead'.max_memory_gb: labelling takes about ")
    assert "per 16x16 image" in lines[0] and "over max_memory_gb = 0.001; set feature_batch = " in lines[0]
    assert not list(tmp_path.glob("out/*.tar")) and not list(tmp_path.glob("cache/pixelheads/*"))
    fits = int(lines[0].rsplit("= ", 1)[1])
    ok = _manifest(tmp_path, models["ddpm"], _head(extra=f"max_memory_gb = 0.001\nfeature_batch = {fits}"), name="ok.toml", n=4)
    res = synth("run", ok)
    assert res.returncode == 0, res.stderr
    assert re.search(rf"^synth: pixelhead: labelling takes about [0-9.]+ MiB per 16x16 image, [0-9.]+ GiB per feature_batch of {fits}$", res.stderr, re.M)
