"""The conditioning as an edit space (`hspace = { block = "condition" }`): on a tag model, a zero
shift gives decode's bytes and a shift edits the images; with guidance only the conditional pass
is shifted; an unconditional model refuses the space in one line; synth discover searches it
beside a block, ranks both spaces' candidates together, and the direction operator remakes a
conditioning direction's strip byte for byte."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from conftest import synth, write_manifest
from synth.errors import UsageError
from synth.manifest import load_manifest
from synth.pipeline import Pipeline

GENERATOR = """
[dataset]
name = "cond"
output = "out/cond"
num_samples = {n}
seed = 0
classes = ["background", "circle", "square", "triangle"]

[generator]
name = "diffusers"
model = "{model}"
scheduler = "ddim"
steps = 6
{extra}

[[stage]]
name = "generate"
"""


def _generator(tmp_path, model="builtin:shapes-32-tags", extra=""):
    path = write_manifest(tmp_path, GENERATOR.format(n=4, model=model, extra=extra), f"{model.split(':')[-1]}.toml")
    pipe = Pipeline(load_manifest(path), quiet=True)
    pipe.setup()
    return pipe.generator


def test_a_shift_of_the_conditioning_edits_the_images_and_zero_changes_nothing(tmp_path):
    gen = _generator(tmp_path)
    spec = gen.hspace_spec({"block": "condition", "until": 1.0})
    shape = gen.hspace_shape(spec)
    assert len(shape) == 2  # (tokens, dim): one state per tag slot
    z = gen.sample_latents([0, 1], 0)
    conds = [gen.condition(i) for i in (0, 1)]
    plain = gen.decode(z, [dict(c) for c in conds], [0, 1], 0)
    zero = gen.decode_shifted(z, [dict(c) for c in conds], [0, 1], 0, np.zeros((2, *shape), np.float32), spec)
    assert np.array_equal(zero, plain)
    grads, unit = gen.hspace_gradients(z, [dict(c) for c in conds], [0, 1], 0, spec, lambda px: px[:, 0].mean((1, 2)))
    assert grads.shape == (2, *shape) and np.isfinite(grads).all() and np.abs(grads).sum() > 0 and unit > 0
    step = grads / np.linalg.norm(grads.reshape(2, -1), axis=1)[:, None, None]
    redder = gen.decode_shifted(z, [dict(c) for c in conds], [0, 1], 0, (3.0 * unit * step).astype(np.float32), spec)
    assert (redder[..., 0].astype(float).mean((1, 2)) > plain[..., 0].astype(float).mean((1, 2))).all()  # the gradient points where red grows


def test_with_guidance_only_the_conditional_pass_is_shifted(tmp_path):
    import torch

    from synth_diffusers.hspace import ConditionShift, edited_steps

    gen = _generator(tmp_path, extra="guidance_scale = 3.0")
    spec = gen.hspace_spec({"block": "condition", "until": 0.5})
    shape = gen.hspace_shape(spec)
    z = torch.from_numpy(gen.sample_latents([0, 1], 0))
    conds = [gen.condition(i) for i in (0, 1)]
    sched = gen._fresh_scheduler()
    edited = edited_steps(sched.timesteps, spec)
    seen = []  # the conditioning each UNet call got, after the shift's hook (registered before the spy)
    with ConditionShift(gen.pipe.unet, spec, torch.full((2, *shape), 5.0), edited) as hook, torch.inference_mode():
        spy = gen.pipe.unet.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["encoder_hidden_states"].clone()), with_kwargs=True)
        try:
            gen.family.sample(sched, z, conds, gen._generators([0, 1], 0, "denoise"))
        finally:
            spy.remove()
    null = gen.family.unet_kwargs(conds, null=True)["encoder_hidden_states"]
    plain = gen.family.unet_kwargs(conds)["encoder_hidden_states"]
    assert len(seen) == 2 * len(sched.timesteps) and len(hook.rms) == len(edited)  # two passes a step, one shifted
    for i, states in enumerate(seen):
        step, conditional = i // 2, i % 2 == 0
        want = null if not conditional else plain + 5.0 if int(sched.timesteps[step]) in edited else plain
        torch.testing.assert_close(states, want.to(states.dtype))


def test_an_unconditional_model_has_no_conditioning_to_shift(tmp_path):
    gen = _generator(tmp_path, model="builtin:shapes-32")
    with pytest.raises(UsageError, match="'condition' is not one of this UNet's .* no conditioning"):
        gen.hspace_spec({"block": "condition"})


DISCOVER = """
[discover]
classifier = {{ name = "torch", path = "{classifier}" }}
target = "square"
samples = 8
candidates = 1
hspace = [{{ block = "up0", until = 0.5, step = 0.5 }}, {{ block = "condition", until = 1.0 }}]
alphas = [-1.0, 0.0, 1.0]
show = 2
strip_images = 2
baseline = 1
probe = {{ name = "shapes" }}
localise = true
"""


def test_discover_ranks_both_spaces_and_the_operator_remakes_a_conditioning_strip(tmp_path):
    from test_discover import mean_red_classifier

    mean_red_classifier(tmp_path / "red-clf")
    manifest = write_manifest(tmp_path, GENERATOR.format(n=8, model="builtin:shapes-32-tags", extra="") + DISCOVER.format(classifier=tmp_path / "red-clf"))
    res = synth("discover", manifest, "-q", "-o", tmp_path / "found", timeout=600)
    assert res.returncode == 0, res.stderr
    found = json.loads((tmp_path / "found" / "discover.json").read_text())
    assert [s["block"] for s in found["spaces"]] == ["up0", "condition"] and len(found["ranked"]) == 2
    up0, condition = found["spaces"]  # each space's unit: its RMS times its own step
    assert up0["unit"] == up0["rms"] * 0.5 and condition["unit"] == condition["rms"] > 0
    assert sorted(r["space"] for r in found["ranked"]) == ["condition", "up0"]
    effects = [r["effect"] for r in found["ranked"]]
    assert found["ranked"][0]["effect"] == max(effects)  # one ranking over both spaces: the largest effect leads
    assert set(found["baseline"]) == {"up0", "condition"}
    # localised where the classifier looks: a block has places to keep, the conditioning none
    assert found["localise"] is True and set(found["where"]) == {"up0"} and 0 < found["where"]["up0"] <= 1
    assert all((tmp_path / "found" / d["counterfactuals"]).is_file() for d in found["directions"])
    cond = next(d for d in found["directions"] if d["space"] == "condition")
    meta = json.loads((tmp_path / "found" / "directions" / f"{cond['name']}.json").read_text())
    assert meta["hspace"] == {"block": "condition", "start": 0.0, "until": 1.0} and meta["unit"] == found["spaces"][1]["unit"]

    stages = f'[[stage]]\nname = "generate"\n\n[[stage]]\nname = "direction"\nsaved = "{cond["name"]}"\nalphas = [-1.0, 0.0, 1.0]\nkeep_parent = false\n'
    text = GENERATOR.format(n=2, model="builtin:shapes-32-tags", extra="").replace('[[stage]]\nname = "generate"\n', stages)
    res = synth("run", write_manifest(tmp_path, text, "cf.toml"), "-q", "--output", tmp_path / "cf")
    assert res.returncode == 0, res.stderr
    images = {}
    for shard in sorted((tmp_path / "cf").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".png") and ".seg." not in member.name:
                    images[member.name[: -len(".png")]] = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB"))
    strip = np.load(tmp_path / "found" / "strips" / f"{cond['name']}.npy")
    assert len(images) == 6
    for i, key in enumerate(found["strip_keys"]):
        for j in range(3):
            assert np.array_equal(images[f"{key}_d{j}"], strip[i, j]), (key, j)


@pytest.mark.parametrize("space, message", [
    ('"up0", until = 1.0', "hspace: each space is searched once"),
    ('"condition", until = 1.0, step = 0', "hspace.step: 0 must be a number in (0, 100]"),
])
def test_a_space_named_twice_or_without_a_step_is_refused(tmp_path, space, message):
    from test_discover import mean_red_classifier

    mean_red_classifier(tmp_path / "red-clf")
    text = GENERATOR.format(n=8, model="builtin:shapes-32-tags", extra="") + DISCOVER.format(classifier=tmp_path / "red-clf").replace('"condition", until = 1.0', space)
    res = synth("discover", write_manifest(tmp_path, text), "-q", "-o", tmp_path / "found")
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
