"""Stable Diffusion XL whole, on a tiny random SDXL: both text encoders (and prompt_2), the UNet's
added conditions (the second encoder's pooled output and the size ids) in features, inversion and
every stage that reads them, and the VAE encoded in float32 where its config says fp16 overflows."""

import json

import numpy as np
import pytest
import torch

from conftest import diffusers_manifest, synth
from synth.manifest import load_manifest
from synth.pipeline import Pipeline
from synth.reading import iter_samples

pytestmark = pytest.mark.slow

CLASSES = 'classes = ["background", "cat", "dog"]'


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    from tiny_models import build_sdxl

    return build_sdxl(tmp_path_factory.mktemp("models") / "sdxl")


def _generator(tmp_path, model, extra="", name="m.toml", steps=4):
    m = diffusers_manifest(tmp_path, model, CLASSES, f'templates = ["a photo of a {{cls}}"]\nscheduler = "ddim"\n{extra}', name=name, steps=steps)
    pipe = Pipeline(load_manifest(m), quiet=True)
    pipe.setup()
    return pipe.generator


class AddedConditions:
    """Records what each UNet call is given besides its input."""

    def __init__(self, unet):
        self.seen = []
        self.handle = unet.register_forward_pre_hook(lambda mod, args, kwargs: self.seen.append(kwargs.get("added_cond_kwargs")), with_kwargs=True)


def test_every_feature_source_and_inversion_pass_sdxls_added_conditions(tmp_path, sdxl):
    gen = _generator(tmp_path, sdxl)
    assert gen.family.xl()
    idx = [1, 2]
    z, conds = gen.sample_latents(idx, 0), [gen.condition(i) for i in idx]
    images = gen.decode(z, conds, idx, 0)
    calls = AddedConditions(gen.pipe.unet)
    shapes = {}
    for source in ("noised", "inverted", "trajectory"):
        spec = gen.feature_spec({"timesteps": [10, 50], "source": source})
        got = gen.features(images, conds, spec, latents=z if source == "trajectory" else None)
        shapes[source] = [tuple(f.shape) for f in got]
        assert all(torch.isfinite(f).all() for f in got)
    inverted = gen.invert(images, conds)
    calls.handle.remove()
    assert shapes["noised"] == shapes["inverted"] == shapes["trajectory"] and shapes["noised"][0][0] == 2
    assert inverted.shape == z.shape and np.isfinite(inverted).all()
    # every UNet call got the pooled text embedding and the six size / crop ids of each row
    assert calls.seen and all(a is not None and a["time_ids"].shape[1] == 6 and a["text_embeds"].shape[1] == 16 for a in calls.seen)
    assert calls.seen[0]["time_ids"][0].tolist() == [16.0, 16.0, 0.0, 0.0, 16.0, 16.0]


def test_prompt_2_reaches_the_second_text_encoder(tmp_path, sdxl):
    plain = _generator(tmp_path, sdxl, name="a.toml")
    styled = _generator(tmp_path, sdxl, 'prompt_2 = "an oil painting"', name="b.toml")
    assert styled.condition(1) == {**plain.condition(1), "prompt_2": "an oil painting"}
    images = plain.decode(plain.sample_latents([1], 0), [plain.condition(1)], [1], 0)
    spec = plain.feature_spec({"timesteps": [10]})
    a = plain.features(images, [plain.condition(1)], spec)[0]
    b = styled.features(images, [styled.condition(1)], spec)[0]
    assert not torch.allclose(a, b)
    again = styled.decode(plain.sample_latents([1], 0), [styled.condition(1)], [1], 0)
    assert not np.array_equal(images, again)


def test_the_vae_encodes_in_float32_where_its_config_says_fp16_overflows(tmp_path, sdxl):
    gen = _generator(tmp_path, sdxl)
    vae = gen.pipe.vae
    assert vae.config.force_upcast
    vae.to(dtype=torch.float16)
    gen.dtype = torch.float16
    seen = []
    handle = vae.encoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
    x = torch.zeros(1, 3, 16, 16)
    z = gen.family.encode_images(x)
    handle.remove()
    assert seen == [torch.float32] and z.dtype == torch.float16
    assert vae.dtype == torch.float16  # put back as the pipeline keeps it


def test_a_run_labels_sdxl_samples_with_a_pixel_head_on_inverted_features_and_selects_by_its_features(tmp_path, sdxl):
    from PIL import Image

    first = diffusers_manifest(tmp_path, sdxl, CLASSES, 'templates = ["a photo of a {cls}"]', name="gen.toml", output="gen", n=6)
    assert synth("run", "-q", first).returncode == 0
    (tmp_path / "masks").mkdir()
    for key, cls in (("s00000001", 1), ("s00000002", 2)):
        m = np.zeros((16, 16), np.uint8)
        m[4:12, 4:12] = cls
        Image.fromarray(m).save(tmp_path / "masks" / f"{key}.png")
    stages = """[[stage]]
name = "generate"
[[stage]]
name = "pixelhead"
timesteps = [10, 50]
features_from = "inverted"
ensemble = 1
steps = 20
calibration_samples = 4
annotations = { shards = "gen/d-{000000..000001}.tar", masks = "masks" }
[[stage]]
name = "select"
keep = 4
extractor = { name = "generator", timesteps = [10, 50] }
"""
    m = diffusers_manifest(tmp_path, sdxl, CLASSES, 'templates = ["a photo of a {cls}"]', stages, n=8, shard=4, batch=4)
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    samples = [s for t in sorted((tmp_path / "out").glob("d-*.tar")) for s in iter_samples(t)]
    assert len(samples) == 4
    for s in samples:
        seg = np.asarray(Image.open(__import__("io").BytesIO(s["seg.png"])))
        assert seg.shape == (16, 16) and set(np.unique(seg)) <= {0, 1, 2}
        meta = json.loads(s["json"])
        assert meta["generator"]["pipeline"] == "StableDiffusionXLPipeline"


def test_prompt_2_on_a_one_encoder_model_is_one_line(tmp_path, models):
    m = diffusers_manifest(tmp_path, models["sd"], CLASSES, 'templates = ["a {cls}"]\nprompt_2 = "style"')
    res = synth("run", m)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"synth: error: {m}: generator.prompt_2: {models['sd']} has one text encoder; prompt_2 is for Stable Diffusion XL's second"
    ]


def test_the_refiner_takes_the_last_steps_and_a_refiner_needs_an_sdxl_base(tmp_path, models):
    from tiny_models import build_sdxl

    base = build_sdxl(tmp_path / "base", refiner=tmp_path / "refiner")
    plain = _generator(tmp_path, base, name="plain.toml")
    refined = _generator(tmp_path, base, f'refiner = "{tmp_path / "refiner"}"\nrefiner_start = 0.5', name="refined.toml")
    idx = [0, 1]
    z, conds = plain.sample_latents(idx, 0), [plain.condition(i) for i in idx]
    a, b = plain.decode(z, conds, idx, 0), refined.decode(z, conds, idx, 0)
    assert b.shape == a.shape and not np.array_equal(a, b)
    assert np.array_equal(refined.decode(z, conds, idx, 0), b)
    assert json.loads(refined.fingerprint())["refiner_start"] == 0.5
    m = diffusers_manifest(tmp_path, models["sd"], CLASSES, f'templates = ["a {{cls}}"]\nrefiner = "{tmp_path / "refiner"}"', name="sd.toml")
    res = synth("run", m)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"synth: error: generator.refiner: a refiner takes SDXL's latents; {models['sd']} is not SDXL"]
