"""What a Stable Diffusion user sets in [generator] beyond the model: LoRA and textual-inversion
weights from local files (recorded in the fingerprint), the sampler's schedule (Karras sigmas,
trailing spacing, zero terminal SNR), guidance_rescale, the memory levers and torch.compile; each
wrong setting one line before anything is written."""

import json

import numpy as np
import pytest
import torch

from conftest import diffusers_manifest, synth
from synth.manifest import load_manifest
from synth.pipeline import Pipeline

pytestmark = pytest.mark.slow

CLASSES = 'classes = ["cat", "dog"]'


def _lora(folder, unet, seed=0):
    """A random LoRA on the attention projections of ``unet``, saved as diffusers saves one."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, models):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from tiny_models import build_sdxl

    root = tmp_path_factory.mktemp("adapters")
    sd_lora = _lora(root / "sd", UNet2DConditionModel.from_pretrained(models["sd"], subfolder="unet"))
    sdxl = build_sdxl(root / "sdxl-model")
    xl_lora = _lora(root / "xl", UNet2DConditionModel.from_pretrained(sdxl, subfolder="unet"))
    torch.manual_seed(1)
    save_file({"<my-cat>": torch.randn(1, 16)}, root / "my-cat.safetensors")
    return {"sd": sd_lora, "xl": xl_lora, "ti": root / "my-cat.safetensors"}


def _generator(tmp_path, models, extra="", name="m.toml", prompts='templates = ["a {cls}"]'):
    m = diffusers_manifest(tmp_path, models["sd"], CLASSES, f"{prompts}\n{extra}", name=name, steps=4)
    pipe = Pipeline(load_manifest(m), quiet=True)
    pipe.setup()
    return pipe.generator


def _images(gen, idx=(0, 1)):
    idx = list(idx)
    return gen.decode(gen.sample_latents(idx, 0), [gen.condition(i) for i in idx], idx, 0)


def test_a_lora_changes_the_images_by_its_scale_and_is_fingerprinted(tmp_path, models, adapters):
    plain = _images(_generator(tmp_path, models, name="plain.toml"))
    zero = _generator(tmp_path, models, f'lora = [{{ path = "{adapters["sd"]}", scale = 0.0 }}]', name="zero.toml")
    full = _generator(tmp_path, models, f'lora = [{{ path = "{adapters["sd"]}", scale = 1.0 }}]', name="full.toml")
    assert np.array_equal(_images(zero), plain)  # scale 0 adds exact zeros
    assert not np.array_equal(_images(full), plain)
    record = json.loads(full.fingerprint())
    assert record["lora"][0]["scale"] == 1.0 and len(record["lora"][0]["sha256"]) == 64
    assert json.loads(zero.fingerprint())["lora"][0]["scale"] == 0.0  # another identity: caches keyed by it differ


def test_a_textual_inversion_token_is_understood_in_prompts(tmp_path, models, adapters):
    gen = _generator(tmp_path, models, f'textual_inversion = [{{ path = "{adapters["ti"]}" }}]', prompts='prompts = ["a <my-cat>"]')
    assert "<my-cat>" in gen.pipe.tokenizer.get_vocab()
    assert gen.pipe.tokenizer.tokenize("a <my-cat>")[-1] == "<my-cat>"
    assert "textual_inversion" in json.loads(gen.fingerprint())


def test_schedule_options_reach_the_sampler(tmp_path, models):
    karras = _generator(tmp_path, models, 'scheduler = "euler"\nkarras_sigmas = true', name="k.toml")
    plain = _generator(tmp_path, models, 'scheduler = "euler"', name="e.toml")
    assert karras.pipe.scheduler.config.use_karras_sigmas and not plain.pipe.scheduler.config.use_karras_sigmas
    k, p = karras._fresh_scheduler(), plain._fresh_scheduler()
    assert not torch.allclose(k.sigmas, p.sigmas)
    zero = _generator(tmp_path, models, 'scheduler = "ddim"\nzero_snr = true', name="z.toml")
    sched = zero._fresh_scheduler()
    assert float(sched.alphas_cumprod[-1]) < 1e-6 and sched.config.timestep_spacing == "trailing"
    assert int(sched.timesteps[0]) == sched.config.num_train_timesteps - 1  # trailing starts at the noisiest step
    assert json.loads(zero.fingerprint())["rescale_betas_zero_snr"] is True


def test_guidance_rescale_moves_guided_images_and_the_memory_levers_keep_them(tmp_path, models):
    plain = _images(_generator(tmp_path, models, name="p.toml"))
    rescaled = _images(_generator(tmp_path, models, "guidance_rescale = 0.7", name="r.toml"))
    assert not np.array_equal(rescaled, plain)
    levers = _generator(tmp_path, models, "vae_slicing = true\nattention_slicing = true", name="l.toml")
    assert levers.pipe.vae.use_slicing
    assert np.abs(_images(levers).astype(int) - plain).max() <= 1


def test_compile_compiles_the_unet_in_place(tmp_path, models):
    gen = _generator(tmp_path, models, "compile = true")
    assert gen.pipe.unet._compiled_call_impl is not None
    assert type(gen.pipe.unet).__name__ == "UNet2DConditionModel"  # still the module feature hooks attach to


@pytest.mark.parametrize(
    "extra, expected",
    [
        ('variant = "fp16"', "generator.variant: {model} has no 'fp16' weights (files named *.fp16.safetensors)"),
        ('offload = "model"\ndevice = "cpu"', "generator.offload: moving weights between the CPU and the GPU needs a CUDA device (device is 'cpu')"),
        ('lora = [{ path = "nowhere.safetensors" }]', "generator.lora[0].path: no such file {dir}/nowhere.safetensors"),
        ('zero_snr = true\ntimestep_spacing = "leading"', "generator: zero_snr needs timestep_spacing 'trailing' (got 'leading'): the noisiest step must be sampled"),
    ],
)
def test_levers_bad_input_is_one_line_before_anything_loads(tmp_path, models, extra, expected):
    m = diffusers_manifest(tmp_path, models["sd"], CLASSES, f'templates = ["a {{cls}}"]\n{extra}')
    res = synth("run", m)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"synth: error: {m}: " + expected.format(model=models["sd"], dir=tmp_path)]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        ('lora = [{ path = "{xl}" }]', "generator.lora[0]: {xl} does not fit {model}: "),
        ('scheduler = "ddim"\nkarras_sigmas = true', "generator.karras_sigmas: scheduler 'ddim' (DDIMScheduler) has no such option; use one that does (euler, dpm++)"),
    ],
)
def test_a_lora_for_another_unet_or_an_option_the_sampler_lacks_is_one_line(tmp_path, models, adapters, extra, expected):
    m = diffusers_manifest(tmp_path, models["sd"], CLASSES, 'templates = ["a {cls}"]\n' + extra.replace("{xl}", str(adapters["xl"])))
    res = synth("run", m)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synth: error: " + expected.format(model=models["sd"], xl=adapters["xl"])), lines


def test_compile_on_a_torch_without_it_is_named_before_anything_loads(tmp_path, monkeypatch):
    from synth_diffusers.config import DiffusersConfig
    from synth_diffusers.levers import check

    monkeypatch.delattr(torch, "compile")
    config = DiffusersConfig(model="m", prompts=["a"], compile=True)
    assert check(config, None, lambda p: tmp_path / p) == [f"compile: torch {torch.__version__} has no torch.compile (it came with torch 2.0)"]
