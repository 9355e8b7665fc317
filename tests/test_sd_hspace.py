"""h-space for Stable Diffusion: a shift of a UNet block's output edits the images (zero: the
plain images, byte for byte), each sample's point is read from the conditional rows of the
guided calls, and gradients reach the shift through the sampler and the VAE decoder; synth
discover runs on it."""

import json

import numpy as np
import pytest

from conftest import diffusers_manifest, synth
from synth.manifest import load_manifest
from synth.pipeline import Pipeline

pytestmark = pytest.mark.slow


def _generator(tmp_path, model, guidance=7.5, name="m.toml"):
    m = diffusers_manifest(tmp_path, model, 'classes = ["cat", "dog"]', f'templates = ["a {{cls}}"]\nguidance_scale = {guidance}', steps=4, name=name)
    pipe = Pipeline(load_manifest(m), quiet=True)
    pipe.setup()
    return pipe.generator


@pytest.mark.parametrize("block, until", [("mid", 0.5), ("condition", 1.0)])  # a block's output, the prompt embedding
def test_shifts_edit_the_images_and_a_zero_shift_changes_nothing(tmp_path, models, block, until):
    gen = _generator(tmp_path, models["sd"])
    spec = gen.hspace_spec({"block": block, "start": 0.0, "until": until})
    shape = gen.hspace_shape(spec)
    latents = gen.sample_latents([0, 1], 0)
    conds = [gen.condition(i) for i in (0, 1)]
    plain = gen.decode(latents, [dict(c) for c in conds], [0, 1], 0)
    zero = gen.decode_shifted(latents, [dict(c) for c in conds], [0, 1], 0, np.zeros((2, *shape), np.float32), spec)
    assert np.array_equal(zero, plain)
    shifted = gen.decode_shifted(latents, [dict(c) for c in conds], [0, 1], 0, np.full((2, *shape), 3.0, np.float32), spec)
    assert not np.array_equal(shifted, plain)

    def red(pixels):
        return pixels[:, 0].mean((1, 2))

    grads, unit = gen.hspace_gradients(latents, [dict(c) for c in conds], [0, 1], 0, spec, red)
    assert grads.shape == (2, *shape) and np.isfinite(grads).all() and np.abs(grads).sum() > 0 and unit > 0
    step = grads / np.linalg.norm(grads.reshape(2, -1), axis=1).reshape(2, *([1] * len(shape)))
    redder = gen.decode_shifted(latents, [dict(c) for c in conds], [0, 1], 0, (5.0 * unit * step).astype(np.float32), spec)
    assert (redder[..., 0].mean((1, 2)) > plain[..., 0].mean((1, 2))).all()  # the gradient points where red grows


def test_a_samples_point_is_read_from_the_conditional_rows(tmp_path, models):
    """At the first step both runs see the same noise: the guided run's conditional rows (the
    last of the stacked call) give the unguided run's point."""
    spec_opts = {"block": "mid", "start": 0.0, "until": 0.2}
    guided, plain = _generator(tmp_path, models["sd"]), _generator(tmp_path, models["sd"], guidance=1.0, name="plain.toml")
    latents = guided.sample_latents([0, 1], 0)
    conds = [guided.condition(i) for i in (0, 1)]
    a, _ = guided.hspace_activations(latents, [dict(c) for c in conds], [0, 1], 0, guided.hspace_spec(spec_opts))
    b, _ = plain.hspace_activations(latents, [dict(c) for c in conds], [0, 1], 0, plain.hspace_spec(spec_opts))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_discover_runs_on_stable_diffusion(tmp_path, models):
    from test_classify import _red_classifier

    gen = _generator(tmp_path, models["sd"])
    h, w, _ = gen._image_shape()
    folder, _ = _red_classifier(tmp_path / "red")
    meta = json.loads((folder / "classifier.json").read_text())
    meta["image_size"] = [h, w]  # small_cnn pools globally: any size
    (folder / "classifier.json").write_text(json.dumps(meta))
    m = diffusers_manifest(tmp_path, models["sd"], 'classes = ["Circle", "square"]', 'templates = ["a {cls}"]', steps=4, n=4, name="discover.toml", output="disc")
    m.write_text(m.read_text() + f"""
[discover]
classifier = {{ name = "torch", path = "{folder}", device = "cpu" }}
target = "Circle"
samples = 4
candidates = 2
hspace = {{ block = "mid", start = 0.0, until = 0.5 }}
alphas = [-1.0, 0.0, 1.0]
show = 1
strip_images = 2
""")
    res = synth("discover", m, "-q", "-o", tmp_path / "found", timeout=600)
    assert res.returncode == 0, res.stderr
    found = json.loads((tmp_path / "found" / "discover.json").read_text())
    top = found["directions"][0]
    p = np.array(top["probabilities"])
    assert p.shape == (2, 3) and (p[:, -1] >= p[:, 0]).all()  # the top direction raises the target along its strip


def test_a_prompt_embedding_shift_leaves_the_negative_rows(tmp_path, models):
    """block = "condition" on Stable Diffusion (edits and gradients: the parametrized test above):
    of the stacked guided call only the prompt's rows (the last B) move."""
    import torch

    from synth_diffusers.hspace import ConditionShift, edited_steps

    gen = _generator(tmp_path, models["sd"])
    spec = gen.hspace_spec({"block": "condition", "start": 0.0, "until": 1.0})
    shape = gen.hspace_shape(spec)
    latents = gen.sample_latents([0, 1], 0)
    conds = [gen.condition(i) for i in (0, 1)]
    sched = gen._fresh_scheduler()
    seen = []
    with ConditionShift(gen.pipe.unet, spec, torch.full((2, *shape), 3.0), edited_steps(sched.timesteps, spec), stacked=True), torch.inference_mode():
        spy = gen.pipe.unet.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["encoder_hidden_states"].clone()), with_kwargs=True)
        try:
            gen.family.sample(sched, torch.from_numpy(latents).to(gen.device, gen.dtype), conds, gen._generators([0, 1], 0, "denoise"))
        finally:
            spy.remove()
    kwargs, _ = gen.family.guided_kwargs(conds)
    states = kwargs["encoder_hidden_states"]
    assert len(seen) == len(sched.timesteps) and states.shape[0] == 4  # one stacked call a step: negative rows, then the prompt's
    for s in seen:
        torch.testing.assert_close(s[:2], states[:2])
        torch.testing.assert_close(s[2:], states[2:] + 3.0)
