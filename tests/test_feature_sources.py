"""Where a feature's noisy input comes from: noised, DDIM-inverted, or the sample's own path; and
the generator's `invert` capability."""

import io
import json

import numpy as np
import pytest

from conftest import synth
from test_pixelhead import _generated_annotations, _head, _manifest, _pipeline, _samples


def _hooks(unet):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in unet.modules())


def _path_by_hand(gen, spec, latents, steps, **step_kw):
    """The real sampling loop written out: the UNet's input at every step recorded, then the
    spec's blocks at the steps nearest its timesteps. Returns (steps, mapping, blocks, final x)."""
    import torch

    from synth_diffusers.features import BlockHooks, nearest_steps

    sched = type(gen.pipe.scheduler).from_config(gen.pipe.scheduler.config)
    sched.set_timesteps(steps)
    mapping = nearest_steps(sched.timesteps.tolist(), spec.timesteps)
    x, inputs = torch.from_numpy(latents) * sched.init_noise_sigma, {}
    with torch.inference_mode():
        for t in sched.timesteps:
            inputs[int(t)] = sched.scale_model_input(x, t).clone()
            x = sched.step(gen.pipe.unet(inputs[int(t)], t).sample, t, x, **step_kw).prev_sample
        expected = []
        for t in spec.timesteps:
            with BlockHooks(gen.pipe.unet, spec.blocks) as hooks:
                gen.pipe.unet(inputs[mapping[t]], mapping[t])
                expected += [hooks.outputs[b] for b in spec.blocks]
    return sched.timesteps.tolist(), mapping, expected, x


def test_trajectory_features_are_the_blocks_at_the_samples_own_steps(tmp_path, models):
    gen = _pipeline(_manifest(tmp_path, models["ddpm"], gen_extra='scheduler = "ddim"', steps=4))
    spec = gen.feature_spec({"blocks": ["mid", "up1"], "timesteps": [10, 60], "source": "trajectory"})
    idx = [0, 1, 2]
    latents = gen.sample_latents(idx, 0)
    images = gen.decode(latents, [{}] * 3, idx, 0)

    steps, mapping, expected, _ = _path_by_hand(gen, spec, latents, 4)
    assert mapping == {10: min(steps, key=lambda s: abs(s - 10)), 60: min(steps, key=lambda s: abs(s - 60))}

    got = gen.features(images, [{}] * 3, spec, latents=latents)
    assert [tuple(f.shape) for f in got] == [tuple(f.shape) for f in expected]
    # a deterministic sampler needs no decode seeds: records without them replay the same
    without = gen.features(images, [{}] * 3, spec, latents=latents, decode=[None] * 3)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(got, without))
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    assert _hooks(gen.pipe.unet) == 0
    # not the same as re-noising the image
    noised = gen.features(images, [{}] * 3, gen.feature_spec({"blocks": ["mid", "up1"], "timesteps": [10, 60]}))
    assert not np.allclose(noised[0].numpy(), got[0].numpy())


def test_inverted_features_follow_the_ddim_inversion_and_need_no_batch(tmp_path, models):
    import torch

    from synth_diffusers.features import BlockHooks, ddim_invert

    gen = _pipeline(_manifest(tmp_path, models["ddpm"]))
    spec = gen.feature_spec({"blocks": ["up0"], "timesteps": [30], "source": "inverted", "inversion_steps": 3})
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    got = gen.features(images, [{}] * 3, spec)
    # by hand: invert 0 -> 10 -> 20 -> 30, then the block at t = 30
    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    alphas = gen._train_schedule().alphas_cumprod
    with torch.inference_mode():
        x30 = ddim_invert(gen.pipe.unet, alphas, x0, [0, 10, 20, 30], "epsilon")
        with BlockHooks(gen.pipe.unet, ["up0"]) as hooks:
            gen.pipe.unet(x30, 30)
    np.testing.assert_allclose(got[0].numpy(), hooks.outputs["up0"].numpy(), rtol=1e-4, atol=1e-5)
    alone = gen.features(images[2:], [{}], spec)
    np.testing.assert_allclose(alone[0][0].numpy(), got[0][2].numpy(), rtol=1e-4, atol=1e-5)


def test_mixed_rows_give_each_row_its_own_features(tmp_path, models):
    """Untouched generated rows are replayed, the others inverted, each as if alone."""
    from synth.annotations import replayable
    from synth_pixelhead.extraction import feature_groups

    gen = _pipeline(_manifest(tmp_path, models["ddpm"]))
    spec = gen.feature_spec({"blocks": ["mid"], "timesteps": [20], "source": "trajectory"})
    latents = gen.sample_latents([0, 1, 2], 0)
    images = gen.decode(latents, [{}] * 3, [0, 1, 2], 0)
    assert replayable({"lineage": [{"op": "generate"}]})
    assert not replayable({"lineage": [{"op": "generate"}, {"op": "flip"}]}) and not replayable({})
    groups = list(feature_groups(gen, spec, images, [{}] * 3, [latents[0], None, latents[2]]))
    assert [g.tolist() for g, _ in groups] == [[0, 2], [1]]
    replayed = gen.features(images[2:], [{}], spec, latents=latents[2:])
    np.testing.assert_allclose(groups[0][1][0][1].numpy(), replayed[0][0].numpy(), rtol=1e-4, atol=1e-5)
    inverted = gen.features(images[1:2], [{}], gen.feature_spec({"blocks": ["mid"], "timesteps": [20], "source": "inverted"}))
    np.testing.assert_allclose(groups[1][1][0][0].numpy(), inverted[0][0].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sampler", ['scheduler = "euler_a"', 'scheduler = "ddpm"', "eta = 0.7"])
def test_a_stochastic_samplers_trajectory_is_replayed_with_each_samples_own_noise(tmp_path, models, sampler):
    import torch

    from synth.errors import UsageError
    from synth.seeding import sample_seed

    gen = _pipeline(_manifest(tmp_path, models["ddpm"], gen_extra=sampler, steps=4))
    spec = gen.feature_spec({"blocks": ["mid", "up1"], "timesteps": [10, 60], "source": "trajectory"})
    idx, seed = [5, 6, 7], 3
    latents = gen.sample_latents(idx, seed)
    images = gen.decode(latents, [{}] * 3, idx, seed)
    decode = [{"index": i, "seed": seed} for i in idx]

    # by hand: the sampling loop with each sample's own noise generators
    gens = [torch.Generator().manual_seed(sample_seed(seed, i, "denoise")) for i in idx]
    kw = {"eta": 0.7} if "eta" in sampler else {}
    _, _, expected, x = _path_by_hand(gen, spec, latents, 4, generator=gens, **kw)
    # the path ends where decode ended: the replay follows the sample's own noise
    np.testing.assert_allclose(((x / 2 + 0.5).clamp(0, 1) * 255).permute(0, 2, 3, 1).numpy(), images, atol=1.0)

    got = gen.features(images, [{}] * 3, spec, latents=latents, decode=decode)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    alone = gen.features(images[1:2], [{}], spec, latents=latents[1:2], decode=decode[1:2])
    np.testing.assert_allclose(alone[0][0].numpy(), got[0][1].numpy(), rtol=1e-4, atol=1e-5)
    # another decode seed is another path: the noise is the sample's, not the replay's own
    other = gen.features(images, [{}] * 3, spec, latents=latents, decode=[{"index": i, "seed": seed + 1} for i in idx])
    assert not np.allclose(other[0].numpy(), got[0].numpy())
    with pytest.raises(UsageError, match="adds fresh noise at every step; replaying a sample's path needs its decode index and seed"):
        gen.features(images, [{}] * 3, spec, latents=latents)


def test_stochastic_trajectory_labels_end_to_end(tmp_path, models):
    """euler_a samples labelled from their own paths: annotations read from earlier shards carry
    their records' decode, calibration its own, and the run's records theirs."""
    _generated_annotations(tmp_path, models["ddpm"], gen_extra='scheduler = "euler_a"')
    ann = '{ shards = "gen", masks = "masks" }'
    m = _manifest(tmp_path, models["ddpm"], _head(ann, extra='features_from = "trajectory"\nsave_to = "myhead"'), gen_extra='scheduler = "euler_a"')
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    assert len(json.loads((tmp_path / "myhead" / "head.json").read_text())["calibration"]["label_uncertainty"]) == 8
    samples = _samples(tmp_path / "out")
    assert len(samples) == 8 and all("seg.png" in s for s in samples)
    res = synth("validate", _manifest(tmp_path, models["ddpm"], '[[stage]]\nname = "pixelhead"\nhead = "h"\nfeatures_from = "dreams"\n', name="bad.toml"))
    assert res.returncode == 2 and "features_from" in res.stdout + res.stderr


def test_stable_diffusion_trajectory_keeps_the_conditional_half(tmp_path, models):
    gen = _pipeline(_manifest(tmp_path, models["sd"], gen_extra='prompts = ["a cat"]\nguidance_scale = 5.0'))
    spec = gen.feature_spec({"timesteps": [10, 90], "source": "trajectory"})
    latents = gen.sample_latents([0, 1], 0)
    conds = [gen.condition(i) for i in (0, 1)]
    images = gen.decode(latents, conds, [0, 1], 0)
    got = gen.features(images, conds, spec, latents=latents)
    assert [f.shape[0] for f in got] == [2] * 6  # guidance doubles the UNet batch; we keep B rows
    assert _hooks(gen.pipe.unet) == 0
    alone = gen.features(images[1:], conds[1:], spec, latents=latents[1:])
    np.testing.assert_allclose(alone[0][0].numpy(), got[0][1].numpy(), rtol=1e-3, atol=1e-4)
    inverted = gen.features(images, conds, gen.feature_spec({"timesteps": [10, 90], "source": "inverted"}))
    assert [tuple(f.shape) for f in inverted] == [tuple(f.shape) for f in got]


def test_invert_round_trips_through_decode(tmp_path, models):
    gen = _pipeline(_manifest(tmp_path, models["ddpm"], gen_extra='scheduler = "ddim"', steps=10))
    assert "invert" in gen.capabilities
    idx = [0, 1, 2, 3]
    latents = gen.sample_latents(idx, 0)
    images = gen.decode(latents, [{}] * 4, idx, 0)
    inverted = gen.invert(images, [{}] * 4)
    assert inverted.shape == latents.shape and inverted.dtype == np.float32
    again = gen.decode(inverted, [{}] * 4, idx, 0).astype(float)
    # far closer to its own image than the images are to each other
    own = np.abs(again - images).mean()
    others = np.abs(images[1:].astype(float) - images[:-1]).mean()
    assert own < 0.5 * others, (own, others)


def test_pixelhead_with_trajectory_features_end_to_end(tmp_path, models):
    """Generated samples are labelled from their own paths; the head records its source and is
    trained from generated annotations whose latents are read back from the shards."""
    _generated_annotations(tmp_path, models["ddpm"])
    ann = '{ shards = "gen", masks = "masks" }'
    m = _manifest(tmp_path, models["ddpm"], _head(ann, extra='features_from = "trajectory"\nsave_to = "myhead"'))
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    info = json.loads((tmp_path / "myhead" / "head.json").read_text())
    assert info["spec"]["source"] == "trajectory"
    samples = _samples(tmp_path / "out")
    assert len(samples) == 8 and all("seg.png" in s for s in samples)

    from synth.manifest import load_manifest
    from synth.pipeline import Pipeline
    from synth.annotations import load_examples

    pipe = Pipeline(load_manifest(m))
    pipe.generator.setup()
    ex = load_examples(pipe.steps[1][0].config.annotations, pipe.context, "stage[1]")
    gen_samples = {s["__key__"]: s for s in _samples(tmp_path / "gen")}
    for key, z in zip(ex.keys, ex.latents):
        np.testing.assert_array_equal(z, np.load(io.BytesIO(gen_samples[key]["latent.npy"])))
