"""img2img (SDEdit): real or generated images noised part-way and denoised under their
condition; a low strength keeps the image, a high one keeps less; seeded per sample and
independent of the batch; Stable Diffusion takes a real image's class prompt."""

import json

import numpy as np
import pytest

from conftest import diffusers_manifest, synth
from synth.reading import iter_samples

pytestmark = pytest.mark.slow

SHAPES = '[[stage]]\nname = "folder"\npath = "real"\nmasks = "none"\n{size}[[stage]]\nname = "img2img"\nstrengths = {strengths}\n'


@pytest.fixture(autouse=True)
def real(tmp_path):
    """Real shapes-world scenes as a folder of PNGs (unlabelled, as a user's photos)."""
    from PIL import Image
    from synth_shapes.world import render_many

    (tmp_path / "real").mkdir()
    for i, im in enumerate(render_many(0, range(4), 32, 0.5, "test")[0]):
        Image.fromarray(im).save(tmp_path / "real" / f"{i}.png")
    return tmp_path / "real"


def _samples(out):
    return {s["__key__"]: s for t in sorted(out.glob("d-*.tar")) for s in iter_samples(t)}


def _pixels(png):
    from io import BytesIO

    from PIL import Image

    return np.asarray(Image.open(BytesIO(png))).astype(float)


def test_strength_says_how_much_of_the_image_is_kept_and_reruns_are_identical(tmp_path):
    m = diffusers_manifest(tmp_path, "builtin:shapes-32", stages=SHAPES.format(size="", strengths="[0.2, 1.0]"), n=4, shard=4, batch=4, steps=10)
    assert synth("run", "-q", m).returncode == 0
    got = _samples(tmp_path / "out")
    near, far = [], []
    for key in [k for k in got if "_" not in k]:
        parent = _pixels(got[key]["png"])
        near.append(np.abs(_pixels(got[f"{key}_e0"]["png"]) - parent).mean())
        far.append(np.abs(_pixels(got[f"{key}_e1"]["png"]) - parent).mean())
        lineage = json.loads(got[f"{key}_e0"]["json"])["lineage"][-1]
        assert lineage["op"] == "img2img" and lineage["strength"] == 0.2
    assert np.mean(near) < 0.5 * np.mean(far), (near, far)
    again = diffusers_manifest(tmp_path, "builtin:shapes-32", stages=SHAPES.format(size="", strengths="[0.2, 1.0]"), n=4, shard=4, batch=1, steps=10, name="again.toml", output="again")
    assert synth("run", "-q", again).returncode == 0
    assert {k: s["png"] for k, s in _samples(tmp_path / "again").items()} == {k: s["png"] for k, s in got.items()}  # batch 1 vs 4


def test_stable_diffusion_edits_real_images_under_their_class_prompt(tmp_path, models):
    m = diffusers_manifest(tmp_path, models["sd"], 'classes = ["background", "circle", "square", "triangle"]', 'templates = ["a {cls}"]',
                           SHAPES.format(size="size = 16\n", strengths="[0.5]"), n=2, shard=2, batch=2, steps=6)
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    got = _samples(tmp_path / "out")
    children = [json.loads(s["json"]) for k, s in got.items() if k.endswith("_e0")]
    assert len(children) == 2 and all(c["condition"]["prompt"].startswith("a ") for c in children)


@pytest.mark.parametrize(
    "strengths, generator, expected",
    [
        ("[0.0]", "", "stage[1].strengths: strength 0 is outside (0, 1]"),
        ("[0.5]", 'scheduler = "euler_a"', "img2img: scheduler 'euler_a' cannot start part-way along its path here; use ddim, euler, dpm++ or unipc"),
    ],
)
def test_img2img_bad_input_is_one_line(tmp_path, strengths, generator, expected):
    m = diffusers_manifest(tmp_path, "builtin:shapes-32", generator=generator, stages=SHAPES.format(size="", strengths=strengths), n=2, shard=2, batch=2)
    res = synth("run", m)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not list(tmp_path.glob("out/*.tar"))
