"""compose for Stable Diffusion (and SDXL): masked blending in the VAE's latent space, each path
guided exactly as the pipeline guides it. With the whole image masked for every step the
composite is A's own image; with half of it, A inside and B outside."""

import numpy as np
import pytest

from conftest import diffusers_manifest, synth
from synth.manifest import load_manifest
from synth.pipeline import Pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    from tiny_models import build_sdxl

    return build_sdxl(tmp_path_factory.mktemp("models") / "sdxl")


def _generator(tmp_path, model, extra=""):
    m = diffusers_manifest(tmp_path, model, 'classes = ["cat", "dog"]', f'templates = ["a {{cls}}"]\nnegative_prompt = {{ cat = "blurry" }}\n{extra}', steps=10)
    pipe = Pipeline(load_manifest(m), quiet=True)
    pipe.setup()
    return pipe.generator


@pytest.mark.parametrize("which", ["sd", "sdxl"])
def test_a_composite_masked_everywhere_is_a_own_image(tmp_path, models, sdxl, which):
    gen = _generator(tmp_path, models["sd"] if which == "sd" else sdxl, "guidance_rescale = 0.5")
    assert gen.supports("compose")
    idx = [0, 1]
    conds = [gen.condition(i) for i in idx]
    za, zb = gen.sample_latents(idx, 0), gen.sample_latents([5, 6], 0)
    a = gen.decode(za, conds, idx, 0)
    whole = gen.compose(za, zb, np.ones((2, 16, 16), np.float32), conds, idx, 0, blend_until=1.0)
    assert np.abs(whole.astype(int) - a).max() <= 1  # the pipeline's own path, to a rounding step


def test_half_masked_keeps_a_inside_and_b_outside(tmp_path, models):
    gen = _generator(tmp_path, models["sd"])
    idx = [0, 1]
    conds = [gen.condition(i) for i in idx]
    za, zb = gen.sample_latents(idx, 0), gen.sample_latents([5, 6], 0)
    a, b = gen.decode(za, conds, idx, 0).astype(float), gen.decode(zb, conds, idx, 0).astype(float)
    mask = np.zeros((2, 16, 16), np.float32)
    mask[:, :, :8] = 1
    c = gen.compose(za, zb, mask, conds, idx, 0, blend_until=0.8).astype(float)
    inside, outside = slice(0, 6), slice(10, 16)
    assert np.abs(c[:, :, inside] - a[:, :, inside]).mean() < np.abs(c[:, :, inside] - b[:, :, inside]).mean()
    assert np.abs(c[:, :, outside] - b[:, :, outside]).mean() < np.abs(c[:, :, outside] - a[:, :, outside]).mean()


def test_the_compose_stage_runs_on_stable_diffusion(tmp_path, models):
    from PIL import Image

    mask = np.zeros((16, 16), np.uint8)
    mask[:, :8] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    stages = '[[stage]]\nname = "generate"\n[[stage]]\nname = "compose"\nmask_file = "mask.png"\n'
    m = diffusers_manifest(tmp_path, models["sd"], 'classes = ["cat", "dog"]', 'templates = ["a {cls}"]', stages, n=4, shard=4, batch=4)
    assert synth("validate", m).returncode == 0
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    from synth.reading import iter_samples

    keys = [s["__key__"] for s in iter_samples(next((tmp_path / "out").glob("d-*.tar")))]
    assert sum(k.endswith("_c0") for k in keys) == 4
