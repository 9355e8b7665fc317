"""Inverting for a guided model: an image inverted with the conditional prediction drifts away
when decoded under guidance 7.5; decoded with its prompt as its own negative (negative-prompt
inversion) it comes back as at guidance 1. A real image brings no prompt: it takes the
generator's own for its class, recorded with the latent."""

import json

import numpy as np
import pytest
import torch

from conftest import diffusers_manifest, synth
from synth.manifest import load_manifest
from synth.pipeline import Pipeline
from synth.reading import iter_samples
from synth_operators import psnr

pytestmark = pytest.mark.slow


def _generator(tmp_path, models, guidance):
    m = diffusers_manifest(tmp_path, models["sd"], 'classes = ["cat", "dog"]', f'templates = ["a {{cls}}"]\nguidance_scale = {guidance}', name=f"g{guidance}.toml", steps=20)
    pipe = Pipeline(load_manifest(m), quiet=True)
    pipe.setup()
    return pipe.generator


def _vae_round_trip(gen, images):
    """The best any latent can decode to through this random VAE."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.inference_mode():
        out = gen.pipe.vae.decode(gen.family.encode_images(x) / gen.pipe.vae.config.scaling_factor).sample
    return ((out.clamp(-1, 1) + 1) * 127.5 + 0.5).clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def test_negative_prompt_inversion_keeps_a_guided_decode_on_the_inverted_path(tmp_path, models):
    got = {}
    for guidance in (1.0, 7.5):
        gen = _generator(tmp_path, models, guidance)
        idx = [0, 1, 2, 3]
        conds = [gen.condition(i) for i in idx]
        images = gen.decode(gen.sample_latents(idx, 0), conds, idx, 0)
        best = _vae_round_trip(gen, images)
        for how in ("plain", "negative_prompt"):
            cc = [gen.inversion_condition(c, i, how) for c, i in zip(conds, idx)]
            back = gen.decode(gen.invert(images, cc, {"method": "fixed_point"}), cc, idx, 0)
            got[(guidance, how)] = float(psnr(back, best).mean())
    assert got[(1.0, "plain")] == got[(1.0, "negative_prompt")]  # no guidance: nothing to undo
    assert got[(7.5, "negative_prompt")] > got[(7.5, "plain")] + 5, got
    assert got[(7.5, "negative_prompt")] > got[(1.0, "plain")] - 3, got


def test_real_images_inverted_for_stable_diffusion_take_their_class_prompt(tmp_path, models):
    stages = '[[stage]]\nname = "shapes"\nsplit = "test"\nsize = 16\n[[stage]]\nname = "invert"\n'
    m = diffusers_manifest(tmp_path, models["sd"], 'classes = ["background", "circle", "square", "triangle"]', 'templates = ["a {cls}"]', stages, n=2, shard=2, batch=2)
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    samples = [json.loads(s["json"]) for t in sorted((tmp_path / "out").glob("d-*.tar")) for s in iter_samples(t)]
    assert len(samples) == 2
    for meta in samples:
        cond = meta["condition"]
        assert cond["prompt"].startswith("a ") and cond["negative_prompt"] == cond["prompt"]
        assert np.isfinite(meta["scores"]["inversion_psnr"])
