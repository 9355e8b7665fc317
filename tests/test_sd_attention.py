"""The attention labeller on Stable Diffusion: each class word of the prompt located in the
tokenised prompt, its cross-attention read along the sample's own guided path (the images are
byte-identical with and without the labeller), and "prompt -> attention -> SAM -> masks" with no
labelled pixel, on a tiny random SD and a tiny random SAM."""

import io
import json

import numpy as np
import pytest

from conftest import diffusers_manifest, synth
from synth.manifest import load_manifest
from synth.pipeline import Pipeline
from synth.reading import iter_samples

pytestmark = pytest.mark.slow

CLASSES = 'classes = ["background", "cat", "dog"]'
PROMPTS = 'prompts = ["a cat", "a dog", "a cat and a dog"]'


def test_class_words_are_found_in_the_tokenised_prompt(tmp_path):
    from synth_diffusers.attention import prompt_slots
    from tiny_models import _write_tokenizer

    tok = _write_tokenizer(tmp_path / "tok")  # one token per letter, the last of a word marked

    got = prompt_slots(tok, ["a cat", "a dog and a cat", "a hotdog", "a hot dog"], ["background", "cat", "dog", "hot_dog"])
    assert got[0] == [[], [2, 3, 4], [], []]  # <sot> a</w> c a t</w>
    assert got[1][1] == [9, 10, 11] and got[1][2] == [2, 3, 4]  # <sot> a d o g a n d a c a t
    assert got[2][2] == [] and got[2][3] == []  # "dog" is no word of "hotdog", nor is "hot dog"
    assert got[3][3] == [2, 3, 4, 5, 6, 7] and got[3][2] == [5, 6, 7]


def test_maps_follow_the_prompt_and_read_the_samples_own_guided_path(tmp_path, models):
    m = diffusers_manifest(tmp_path, models["sd"], CLASSES, PROMPTS, n=3, steps=6)
    pipe = Pipeline(load_manifest(m), quiet=True)
    pipe.setup()
    gen = pipe.generator
    assert gen.supports("attention")
    idx = [0, 1, 2]
    z, conds = gen.sample_latents(idx, 0), [gen.condition(i) for i in idx]
    images = gen.decode(z, conds, idx, 0)
    spec = gen.attention_spec({"timesteps": [20, 60]})
    maps = gen.attention(images, conds, spec, latents=z)
    assert maps.classes.shape == (3, 3, 16, 16)
    assert maps.named.tolist() == [[False, True, False], [False, False, True], [False, True, True]]
    for i in range(3):
        for c in range(3):
            assert (maps.classes[i, c].sum() > 0) == maps.named[i, c]
    # shares of one softmax over the prompt's tokens: the start token's and the class words' never sum past 1
    assert np.all(maps.null + maps.classes.sum(1) <= 1 + 1e-5) and np.all(maps.null > 0)
    assert np.array_equal(gen.decode(z, conds, idx, 0), images)  # the processors are restored
    # the path read is decode's own: the loop written out ends where the pipeline does
    import torch

    sched = gen._fresh_scheduler()
    with torch.inference_mode():
        x = gen.family.sample(sched, torch.from_numpy(z), conds, gen._generators(idx, 0, "denoise"))
        own = gen.family.finish(x)
    assert np.abs(own.astype(int) - images).max() <= 1


@pytest.fixture(scope="module")
def sam(tmp_path_factory):
    from tiny_models import build_sam

    return build_sam(tmp_path_factory.mktemp("sam"))


def test_prompt_attention_sam_labels_with_no_labelled_pixel(tmp_path, models, sam):
    arch = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in sam["arch"].items()) + " }"
    stages = f"""[[stage]]
name = "generate"
[[stage]]
name = "attention"
timesteps = [20, 60]
[[stage]]
name = "sam"
checkpoint = "{sam['checkpoint']}"
architecture = {arch}
mode = "refine"
iou_threshold = 0.0
"""
    plain = diffusers_manifest(tmp_path, models["sd"], CLASSES, PROMPTS, n=3, shard=3, batch=3, name="plain.toml", output="plain")
    m = diffusers_manifest(tmp_path, models["sd"], CLASSES, PROMPTS, stages, n=3, shard=3, batch=3)
    for manifest in (plain, m):
        res = synth("run", manifest)
        assert res.returncode == 0, res.stderr
    from PIL import Image

    labelled = [s for t in sorted((tmp_path / "out").glob("d-*.tar")) for s in iter_samples(t)]
    images = {s["__key__"]: s["png"] for t in sorted((tmp_path / "plain").glob("d-*.tar")) for s in iter_samples(t)}
    assert len(labelled) == 3
    for s in labelled:
        assert s["png"] == images[s["__key__"]]  # labelling leaves the image as generated
        meta = json.loads(s["json"])
        seg = np.asarray(Image.open(io.BytesIO(s["seg.png"])))
        named = {i for i, c in enumerate(["background", "cat", "dog"]) if c in meta["condition"]["prompt"].split()}
        assert set(np.unique(seg)) <= named | {0}
        assert meta["labels"]["sam"]["mode"] == "refine" and "inst.png" in s
    import webdataset as wds

    read = list(wds.WebDataset(sorted(str(p) for p in (tmp_path / "out").glob("d-*.tar")), shardshuffle=False))
    assert sorted(r["__key__"] for r in read) == sorted(s["__key__"] for s in labelled)
    assert all({"png", "seg.png", "inst.png", "json"} <= set(r) for r in read)


def test_a_prompt_naming_no_class_is_one_line_before_any_sample(tmp_path, models):
    stages = '[[stage]]\nname = "generate"\n[[stage]]\nname = "attention"\n'
    m = diffusers_manifest(tmp_path, models["sd"], CLASSES, 'prompts = ["a house", "a cat"]', stages)
    res = synth("run", m)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "synth: error: stage 'attention': sample 0's condition 'a house' names none of the classes ['cat', 'dog']; every prompt or tag list needs a class word"
    ]
    assert not list(tmp_path.glob("out/*.tar"))
