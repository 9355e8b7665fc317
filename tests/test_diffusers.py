"""The diffusers generator on tiny random-weight pipelines built in the test (no downloads)."""

import json

import numpy as np
import pytest

from conftest import diffusers_manifest, synth, write_manifest
from synth.manifest import load_manifest
from synth.pipeline import Pipeline
from synth.reading import iter_samples
from synth_diffusers.config import SCHEDULERS


def _manifest(tmp_path, model, extra_dataset="", extra_gen="", n=6, shard=4, batch=3, name="m.toml"):
    return diffusers_manifest(tmp_path, model, extra_dataset, extra_gen, n=n, shard=shard, batch=batch, name=name)


def _samples(out):
    return [s for t in sorted(out.glob("d-*.tar")) for s in iter_samples(t)]


def test_unconditional_ddpm_end_to_end(tmp_path, models):
    import webdataset as wds

    m = _manifest(tmp_path, models["ddpm"], extra_gen='scheduler = "ddpm"')
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    ds = list(wds.WebDataset(sorted(str(p) for p in (tmp_path / "out").glob("*.tar")), shardshuffle=False).decode("rgb8"))
    assert len(ds) == 6
    for s in ds:
        assert s["png"].shape == (16, 16, 3)
        assert s["latent.npy"].shape == (3, 16, 16) and s["latent.npy"].dtype == np.float16
        gen = s["json"]["generator"]
        assert gen["name"] == "diffusers" and gen["pipeline"] == "DDPMPipeline" and gen["license"] == "mit"
        assert gen["scheduler"] == "ddpm" and gen["steps"] == 3 and gen["diffusers"]
        assert "cls" not in s
    # Different samples look different (the per-sample noise really differs).
    assert not np.array_equal(ds[0]["png"], ds[1]["png"])


def test_latents_and_images_depend_only_on_seed_and_index(tmp_path, models):
    a = load_manifest(_manifest(tmp_path, models["ddpm"], batch=3, name="a.toml"))
    b = load_manifest(_manifest(tmp_path, models["ddpm"], batch=2, name="b.toml"))
    pa, pb = Pipeline(a), Pipeline(b)
    pa.setup(), pb.setup()
    x = pa.run_batch([3, 4, 5])
    y = pb.run_batch([5, 4])
    np.testing.assert_array_equal(x.latents[2], y.latents[0])
    np.testing.assert_array_equal(x.latents[1], y.latents[1])
    # DDIM with eta=0 decodes a latent the same way whatever else is in the batch (up to float noise).
    assert np.abs(x.images[2].astype(int) - y.images[0].astype(int)).max() <= 1


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_every_listed_scheduler_decodes_from_seed_and_index_alone(tmp_path, models, scheduler):
    """pndm and unipc take no noise generator, ancestral samplers take one per sample: each decodes
    a sample the same whatever else is in its batch."""
    m = diffusers_manifest(tmp_path, models["ddpm"], generator=f'scheduler = "{scheduler}"', steps=4)
    gen = Pipeline(load_manifest(m)).generator
    gen.setup()
    z = gen.sample_latents([0, 1, 2], 0)
    images = gen.decode(z, [{}] * 3, [0, 1, 2], 0)
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    alone = gen.decode(z[2:], [{}], [2], 0)
    assert np.abs(alone[0].astype(int) - images[2].astype(int)).max() <= 1
    if scheduler == "pndm":
        res = synth("validate", diffusers_manifest(tmp_path, models["ddpm"], generator='scheduler = "pndm"', steps=3, name="few.toml"))
        assert res.returncode == 2 and "scheduler 'pndm' needs steps >= 4 (got 3)" in res.stdout + res.stderr


def test_class_conditional_unet_uses_class_labels(tmp_path, models):
    m = _manifest(tmp_path, models["ddpm_cls"], extra_dataset='classes = ["a", "b", "c"]')
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    samples = _samples(tmp_path / "out")
    assert [int(s["cls"]) for s in samples] == [0, 1, 2, 0, 1, 2]
    assert [json.loads(s["json"])["class_name"] for s in samples] == ["a", "b", "c"] * 2


def test_class_conditional_model_without_classes_is_a_clear_error(tmp_path, models):
    res = synth("run", _manifest(tmp_path, models["ddpm_cls"]))
    assert res.returncode == 2
    assert "class-conditional (3 classes); list them in [dataset].classes" in res.stderr
    assert "Traceback" not in res.stderr


def test_stable_diffusion_templates_set_class_labels(tmp_path, models):
    m = _manifest(
        tmp_path,
        models["sd"],
        extra_dataset='classes = ["cat", "dog"]',
        extra_gen='templates = ["a photo of a {cls}", "a {cls}"]\nnegative_prompt = "blurry"\nguidance_scale = 4.0\nheight = 16\nwidth = 24\nscheduler = "euler"',
        n=5,
    )
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    samples = _samples(tmp_path / "out")
    metas = [json.loads(s["json"]) for s in samples]
    assert [m["condition"]["prompt"] for m in metas] == [
        "a photo of a cat", "a photo of a dog", "a cat", "a dog", "a photo of a cat"
    ]
    assert [int(s["cls"]) for s in samples] == [0, 1, 0, 1, 0]
    assert all(m["condition"]["negative_prompt"] == "blurry" for m in metas)
    assert metas[0]["generator"]["pipeline"] == "StableDiffusionPipeline"
    assert metas[0]["generator"]["guidance_scale"] == 4.0
    lat = np.load(__import__("io").BytesIO(samples[0]["latent.npy"]))
    assert lat.shape == (4, 16 // 2, 24 // 2)  # vae_scale_factor 2 in the tiny VAE
    from PIL import Image
    import io

    assert Image.open(io.BytesIO(samples[0]["png"])).size == (24, 16)


def test_per_class_templates_and_negatives(tmp_path, models):
    """A class with its own templates and negative prompt; the others take the '*' entries."""
    m = _manifest(
        tmp_path,
        models["sd"],
        extra_dataset='classes = ["cat", "dog", "cow"]',
        extra_gen='[generator.templates]\ncat = ["a tabby", "a kitten"]\n"*" = ["a photo of a {cls}"]\n[generator.negative_prompt]\ndog = "cats"\n"*" = "blurry"',
        n=6,
    )
    res = synth("run", "-q", m)
    assert res.returncode == 0, res.stderr
    conds = [json.loads(s["json"])["condition"] for s in _samples(tmp_path / "out")]
    assert [c["prompt"] for c in conds] == ["a tabby", "a photo of a dog", "a photo of a cow", "a kitten", "a photo of a dog", "a photo of a cow"]
    assert [c["negative_prompt"] for c in conds] == ["blurry", "cats", "blurry"] * 2


@pytest.mark.parametrize(
    "gen, expected",
    [
        ('[generator.templates]\ncat = ["a tabby"]\ncow = ["a cow"]\n"*" = ["a {cls}"]', "generator.templates.cow: no such class in [dataset].classes"),
        ('[generator.templates]\ncat = ["a tabby"]', "generator.templates: no template for class 'dog'; give it its own or a '*' entry"),
        ('templates = ["a {cls}"]\n[generator.negative_prompt]\nbird = "x"', "generator.negative_prompt.bird: no such class"),
    ],
)
def test_per_class_prompts_naming_unknown_classes_fail_validate(tmp_path, models, gen, expected):
    m = _manifest(tmp_path, models["sd"], extra_dataset='classes = ["cat", "dog"]', extra_gen=gen)
    res = synth("validate", m)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert expected in line, line


def test_stable_diffusion_prompts_file(tmp_path, models):
    (tmp_path / "prompts.txt").write_text("# comment\na red ball\n\na blue cube\n")
    m = _manifest(tmp_path, models["sd"], extra_gen='prompts_file = "prompts.txt"\nheight = 16\nwidth = 16', n=3)
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    prompts = [json.loads(s["json"])["condition"]["prompt"] for s in _samples(tmp_path / "out")]
    assert prompts == ["a red ball", "a blue cube", "a red ball"]
    assert all("cls" not in s for s in _samples(tmp_path / "out"))


def test_text_to_image_without_prompts_and_unconditional_with_prompts_are_errors(tmp_path, models):
    res = synth("run", _manifest(tmp_path, models["sd"], name="a.toml"))  # fails before any shard: the folder stays free
    assert res.returncode == 2 and "text-to-image pipeline; give prompts" in res.stderr
    res = synth("run", _manifest(tmp_path, models["ddpm"], extra_gen='prompts = ["x"]', name="b.toml"))
    assert res.returncode == 2 and "unconditional pipeline; it takes no prompts" in res.stderr


def test_missing_model_folder_and_unreachable_hub_id(tmp_path):
    res = synth("validate", _manifest(tmp_path, tmp_path / "nope", name="a.toml"))
    assert res.returncode == 2 and f"generator.model: no such folder {tmp_path / 'nope'}" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = synth("validate", _manifest(tmp_path, "builtin:shapes-23", name="c.toml"))
    assert res.returncode == 2 and "generator.model: unknown built-in model 'shapes-23' (known: shapes-32, shapes-32-gpu, shapes-32-tags, shapes-32-wide)" in res.stderr
    res = synth("run", _manifest(tmp_path, "some-org/not-cached-model", name="b.toml"))
    assert res.returncode == 1
    (line,) = res.stderr.strip().splitlines()
    # what to do, not diffusers' "check out the root cause in the stacktrace above"
    assert "'some-org/not-cached-model' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in line
    assert "or set model to a local pipeline folder" in line and "stacktrace" not in line


def test_relative_model_path_resolves_against_manifest_folder(tmp_path, models):
    import shutil

    shutil.copytree(models["ddpm"], tmp_path / "models" / "mine")
    m = _manifest(tmp_path, "models/mine", n=2, shard=2)
    res = synth("run", m, cwd="/")
    assert res.returncode == 0, res.stderr


def test_stage_requiring_missing_capability_is_a_validation_error(tmp_path):
    m = write_manifest(tmp_path, '[dataset]\nnum_samples = 2\n[[stage]]\nname = "generate"\n')
    res = synth("validate", m)
    assert res.returncode == 2 and "needs a [generator] table" in res.stderr


def test_the_call_size_follows_the_batch_so_calls_carry_no_padding():
    from synth_diffusers.generator import call_size

    assert [call_size(b) for b in (1, 3, 4, 8, 16)] == [1, 3, 4, 8, 16]  # a batch up to 16: one call of its size
    assert call_size(32) == 16 and call_size(50) == 10 and call_size(100) == 10  # divides the batch
    assert call_size(37) == 13  # no divisor in 8..16: the one that pads least (39 rows for 37)
    assert call_size(0) == 16  # outside a run


def test_stable_diffusion_calls_carry_the_batch_and_a_sample_does_not_depend_on_its_neighbours(tmp_path, models):
    """With [run] batch_size = 8 (the shipped SD manifests'), every VAE decode carries the batch's
    8 rows (it carried 16, half of them padding, before the call size followed the batch); a run
    whose last batch is short (12 samples: 8 + 4 padded to 8) gives the same bytes for those 4 as
    a run where they sit in a full batch."""
    import torch

    from synth.engine import run

    rows = []

    def hook(module, args, out):
        if type(module).__name__ == "Decoder":
            rows.append(int(args[0].shape[0]))

    outs = {}
    for n in (12, 16):
        m = load_manifest(_manifest(tmp_path, models["sd"], 'classes = ["cat", "dog"]', 'templates = ["a {cls}"]', n=n, shard=16, batch=8, name=f"m{n}.toml"))
        handle = torch.nn.modules.module.register_module_forward_hook(hook)
        try:
            run(m, output=tmp_path / f"out{n}", quiet=True)
        finally:
            handle.remove()
        outs[n] = {s["__key__"]: s["png"] for t in sorted((tmp_path / f"out{n}").glob("*.tar")) for s in iter_samples(t)}
    assert rows and set(rows) == {8}, rows
    assert len(outs[12]) == 12 and all(outs[12][k] == outs[16][k] for k in outs[12])


def test_invert_and_feature_options_are_the_generators_typed_models(tmp_path, models):
    """A stage's invert or feature options are validated by the generator into its own models:
    a wrong one is a one-line error naming it, and a typed instance passes as it is."""
    from synth.errors import UsageError
    from synth_diffusers.generator import DiffusersGenerator

    pipe = Pipeline(load_manifest(_manifest(tmp_path, models["ddpm"], extra_gen='scheduler = "ddim"')))
    pipe.setup()
    gen = pipe.generator
    images = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(UsageError, match=r"^invert\.method: Input should be 'fixed_point' or 'ddim'"):
        gen.invert(images, [{}, {}], {"method": "dddim"})
    with pytest.raises(UsageError, match=r"^invert\.iteration: unknown field"):
        gen.invert(images, [{}, {}], {"iteration": 3})
    typed = gen.invert(images, [{}, {}], DiffusersGenerator.InvertOptions(method="fixed_point", iterations=1))
    assert np.array_equal(typed, gen.invert(images, [{}, {}], {"method": "fixed_point", "iterations": 1}))
    with pytest.raises(UsageError, match=r"^features\.timesteps\[0\]: Input should be a valid integer"):
        gen.feature_spec({"timesteps": ["late"]})
    assert gen.feature_spec(DiffusersGenerator.FeatureOptions(blocks=["mid"], timesteps=[10])).blocks == ("mid",)
