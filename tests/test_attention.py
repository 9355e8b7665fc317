"""Labels from the generator's conditioning (issue 33): tag-conditioned models, their attention
maps and noise-prediction contrasts, and the `attention` stage."""

import io
import json
import tarfile

import numpy as np
import pytest

from conftest import diffusers_manifest, synth, tiny_fit_manifest, write_manifest

CLASSES = '["background", "circle", "square", "triangle"]'


@pytest.fixture(scope="module")
def tag_model(tmp_path_factory):
    from tiny_models import build_tag_model

    return build_tag_model(tmp_path_factory.mktemp("tagmodel") / "tags16")


def _members(out):
    """{member name: bytes} of every shard in an output folder."""
    got = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                got[m.name] = tar.extractfile(m).read()
    return got


# -- the capture itself --------------------------------------------------------------------------
class _OneLayer:
    """A stand-in for a UNet: one cross-attention layer, with diffusers' processor API."""

    def __init__(self, attn):
        self.attn = attn

    @property
    def attn_processors(self):
        return {"down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor": self.attn.processor}

    def set_attn_processor(self, processors):
        self.attn.set_processor(next(iter(processors.values())))


def test_capture_reads_an_attention_set_by_hand():
    """Pixels whose features point at a token's key attend that token: the map the capture
    returns is exactly the known mask, and the layer's output and processor are untouched."""
    import torch
    from diffusers.models.attention_processor import Attention

    from synth_diffusers.attention import AttentionCapture, AttentionSpec

    torch.manual_seed(0)
    attn = Attention(query_dim=4, cross_attention_dim=4, heads=1, dim_head=4)
    with torch.no_grad():
        attn.to_q.weight.copy_(torch.eye(4))
        attn.to_k.weight.copy_(torch.eye(4))
    mask = np.zeros((4, 4), bool)
    mask[1:3, 0:3] = True
    e0, e1 = torch.eye(4)[0] * 10, torch.eye(4)[1] * 10
    hidden = torch.where(torch.from_numpy(mask.reshape(1, 16, 1)), e1, e0)  # (1, 16, 4)
    tokens = torch.stack([e0, e1])[None]  # slot 0 (null) keys e0, slot 1 keys e1
    layer = _OneLayer(attn)
    before = attn.processor
    expected = attn(hidden, encoder_hidden_states=tokens)
    with AttentionCapture(layer, AttentionSpec(), size=(4, 4), latent_size=(4, 4)) as cap:
        cap.active = True
        out = attn(hidden, encoder_hidden_states=tokens)
    assert attn.processor is before
    assert torch.equal(out, expected)
    maps = cap.store.cross[0].numpy()  # (slots, 4, 4)
    assert cap.store.layers == 1
    assert np.array_equal(maps.argmax(0) == 1, mask)
    assert np.allclose(maps.sum(0), 1.0, atol=1e-5)


# -- tag-conditioned models ----------------------------------------------------------------------
def test_fit_with_tags_writes_a_tag_model_that_generates_from_drawn_tags(tmp_path):
    """`synth fit` with tags: a UNet2DConditionModel plus tags/ (vocabulary in class order, the
    training tag sets); `synth run` draws each sample's tags from them and records them."""
    m = tiny_fit_manifest(tmp_path, 24, 12, "tags = true\nsteps = 3\nbatch_size = 4\ncheckpoint_every = 2\ngrid_samples = 2\ngrid_steps = 2\ncross_attention_dim = 8\nattention_heads = 2")
    res = synth("fit", m)
    assert res.returncode == 0, res.stderr
    model = tmp_path / "model"
    vocab = json.loads((model / "tags" / "tags.json").read_text())
    assert vocab["tags"] == ["circle", "square", "triangle"]
    assert sum(n for _, n in vocab["sets"]) == 24
    assert json.loads((model / "unet" / "config.json").read_text())["_class_name"] == "UNet2DConditionModel"
    assert json.loads((model / "fit.json").read_text())["tags"] == ["circle", "square", "triangle"]
    run = diffusers_manifest(tmp_path, model, dataset=f"classes = {CLASSES}", n=4, name="run.toml")
    res = synth("run", run)
    assert res.returncode == 0, res.stderr
    records = [json.loads(v) for k, v in _members(tmp_path / "out").items() if k.endswith(".json")]
    drawn = [r["condition"]["tags"] for r in records]
    assert all(t and set(t) <= {"circle", "square", "triangle"} for t in drawn)


def test_fit_with_tags_needs_tagged_images(tmp_path):
    m = tiny_fit_manifest(tmp_path, 8, 8, "tags = true\nsteps = 2", stages='[[stage]]\nname = "image_stats"')
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    m.write_text(m.read_text().replace('name = "shapes"\nsize = 16', f'name = "folder"\npath = "{folder}"'))
    m.write_text(m.read_text().replace("num_samples = 8", "num_samples = 3"))
    res = synth("fit", m)
    assert res.returncode == 2 and "the source gives no tags" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_attention_stage_leaves_images_byte_identical_and_restores_processors(tmp_path, tag_model):
    """The stage replays each sample's path with capture processors: the shards' images and
    latents are the same bytes as a run without it, and the UNet's processors come back."""
    plain = diffusers_manifest(tmp_path, tag_model, dataset=f"classes = {CLASSES}", n=6, name="plain.toml", output="plain")
    labelled = diffusers_manifest(
        tmp_path, tag_model, dataset=f"classes = {CLASSES}", n=6, name="labelled.toml", output="labelled",
        stages='[[stage]]\nname = "generate"\n[[stage]]\nname = "attention"\nself_attention = 8',
    )
    for m in (plain, labelled):
        res = synth("run", m)
        assert res.returncode == 0, res.stderr
    a, b = _members(tmp_path / "plain"), _members(tmp_path / "labelled")
    images = [k for k in a if k.endswith((".png", ".latent.npy"))]
    assert images and all(a[k] == b[k] for k in images)
    segs = [k for k in b if k.endswith(".seg.png")]
    assert len(segs) == 6
    record = json.loads(b[segs[0].replace(".seg.png", ".json")])
    assert record["labels"]["by"] == "attention" and "attention_uncertainty" in record["scores"]
    from PIL import Image

    seg = np.asarray(Image.open(io.BytesIO(b[segs[0]])))
    named = [0] + [["background", "circle", "square", "triangle"].index(t) for t in record["condition"]["tags"]]
    assert set(np.unique(seg)) <= set(named)  # only the classes the sample's tags name, or background


def test_generator_attention_maps_per_class_and_processors_restored(tmp_path, tag_model):
    from synth.manifest import load_manifest
    from synth.pipeline import Pipeline

    m = diffusers_manifest(tmp_path, tag_model, dataset=f"classes = {CLASSES}", n=4, generator="tags = [[\"circle\"], [\"square\", \"triangle\"]]")
    pipe = Pipeline(load_manifest(m), quiet=True)
    pipe.setup()
    gen = pipe.generator
    before = {k: type(v).__name__ for k, v in gen.pipe.unet.attn_processors.items()}
    idx = [0, 1]
    conds = [gen.condition(i) for i in idx]
    assert conds == [{"tags": ["circle"]}, {"tags": ["square", "triangle"]}]
    z = gen.sample_latents(idx, 0)
    images = gen.decode(z, conds, idx, 0)
    maps = gen.attention(images, conds, gen.attention_spec({}), latents=z)
    assert {k: type(v).__name__ for k, v in gen.pipe.unet.attn_processors.items()} == before
    assert maps.named.tolist() == [[False, True, False, False], [False, False, True, True]]
    assert np.all(maps.classes[0, [0, 2, 3]] == 0) and np.all(maps.classes[1, [0, 1]] == 0)
    # per pixel, the null token and the named tags share the attention
    assert np.allclose(maps.null + maps.classes.sum(1), 1.0, atol=1e-4)
    real = gen.attention(images, conds, gen.attention_spec({}))  # no latents: noised, as a real image
    assert real.classes.shape == maps.classes.shape and not np.allclose(real.classes, maps.classes)


def test_contrast_finds_a_region_built_to_differ(tmp_path, tag_model):
    """A UNet whose prediction moves only inside a known square when the circle tag is present:
    the contrast map of circle is that square, and classes the sample does not name stay zero."""
    import torch

    from synth.manifest import load_manifest
    from synth.pipeline import Pipeline

    m = diffusers_manifest(tmp_path, tag_model, dataset=f"classes = {CLASSES}", n=2, generator='tags = [["circle", "square"]]')
    pipe = Pipeline(load_manifest(m), quiet=True)
    pipe.setup()
    gen = pipe.generator
    region = torch.zeros(16, 16)
    region[4:9, 6:12] = 1.0

    class Built(torch.nn.Module):
        config = gen.pipe.unet.config

        def forward(self, x, t, encoder_hidden_states=None, encoder_attention_mask=None):
            circle = encoder_attention_mask[:, 1].float()[:, None, None, None]  # slot 1: circle
            return type("Out", (), {"sample": x * 0 + circle * region})()

    gen.pipe.unet = Built()
    images = np.zeros((1, 16, 16, 3), np.uint8)
    maps = gen.contrast(images, [gen.condition(0)], gen.attention_spec({}))
    circle = maps.classes[0, 1]
    assert np.array_equal(circle > 0, region.numpy() > 0)
    assert np.all(maps.classes[0, 2] == 0)  # square's tag moves nothing
    assert np.all(maps.classes[0, 3] == 0)  # triangle is not named


def test_attention_runs_are_byte_identical_on_rerun(tmp_path, tag_model):
    """K = 0 and calibrated on K = 4 labelled real scenes: two runs into two folders, the same bytes."""
    calib = 'calibrate = { source = { name = "shapes", split = "val", size = 16 }, count = 4 }'
    for name, extra in (("k0", ""), ("k4", calib)):
        outs = []
        for rep in ("a", "b"):
            m = diffusers_manifest(
                tmp_path, tag_model, dataset=f"classes = {CLASSES}", n=6, name=f"{name}{rep}.toml", output=f"{name}{rep}",
                stages=f'[[stage]]\nname = "generate"\n[[stage]]\nname = "attention"\n{extra}',
            )
            res = synth("run", m)
            assert res.returncode == 0, res.stderr
            outs.append(_members(tmp_path / f"{name}{rep}"))
        assert outs[0] == outs[1] and any(k.endswith(".seg.png") for k in outs[0])
        if extra:
            report = json.loads((tmp_path / f"{name}a" / "dataset.json").read_text())["reports"]
            assert report["stage[1]"]["stage"] == "attention" and report["stage[1]"]["calibration"]["examples"] == 4


# -- bad input: one line, exit 2, before any sample -----------------------------------------------
def _one_line_error(res, *needles):
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert all(n in lines[0] for n in needles), lines[0]


def test_attention_on_an_unconditional_generator_is_refused(tmp_path, models):
    m = diffusers_manifest(tmp_path, models["ddpm"], dataset=f"classes = {CLASSES}", stages='[[stage]]\nname = "generate"\n[[stage]]\nname = "attention"')
    res = synth("validate", m)
    _one_line_error(res, "stage[1]", "has no class tokens to attend to")
    assert not (tmp_path / "out").exists()


def test_contrast_on_an_unconditional_generator_is_refused(tmp_path, models):
    m = diffusers_manifest(tmp_path, models["ddpm"], dataset=f"classes = {CLASSES}", stages='[[stage]]\nname = "generate"\n[[stage]]\nname = "attention"\nmethod = "contrast"')
    _one_line_error(synth("run", m), "stage[1]", "contrast")
    assert not (tmp_path / "out").exists()


def test_a_tag_list_naming_no_class_is_refused_before_any_sample(tmp_path, tag_model):
    m = diffusers_manifest(
        tmp_path, tag_model, dataset='classes = ["background", "square"]', generator='tags = [["square"], ["circle"]]',
        stages='[[stage]]\nname = "generate"\n[[stage]]\nname = "attention"',
    )
    res = synth("run", m)
    _one_line_error(res, "sample 1", "['circle']", "names none of the classes")
    assert not list((tmp_path / "out").glob("*.tar"))


def test_a_tag_the_model_does_not_know_is_refused(tmp_path, tag_model):
    m = diffusers_manifest(tmp_path, tag_model, dataset=f"classes = {CLASSES}", generator='tags = [["hexagon"]]')
    _one_line_error(synth("run", m), "generator.tags[0]", "unknown tag 'hexagon'")


@pytest.mark.parametrize(
    "content, suffix, needles",
    [
        (None, ".csv", ("tags_file", "no such file")),
        ("file,tags\n0.png,circle\n1.png,hexagon\n", ".csv", ("tags_file", "1.png", "'hexagon'", "not one of [dataset].classes")),
        ('{"file": "0.png", "tags": ["circle"]}\n', ".jsonl", ("tags_file", "no tags for the image 1.png")),
    ],
)
def test_bad_tags_files_are_one_line_errors(tmp_path, content, suffix, needles):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(folder / f"{i}.png")
    tags = tmp_path / f"tags{suffix}"
    if content is not None:
        tags.write_text(content)
    m = write_manifest(tmp_path, f"""
[dataset]
num_samples = 2
classes = {CLASSES}
[[stage]]
name = "folder"
path = "imgs"
tags_file = "{tags.name}"
""")
    _one_line_error(synth("validate", m), *needles)


def test_tagged_share_draws_that_share_of_each_batch_from_the_tagged_images(tmp_path):
    """tagged_share: a few tagged images among many untagged reach their tokens in every batch;
    unset, the draw is the uniform one the shipped tag model was fitted with, bit for bit."""
    from types import SimpleNamespace

    from synth.seeding import sample_rng
    from synth_diffusers.fit import Trainer
    from synth_diffusers.fit_config import FitConfig

    tagged = np.array([3, 5])
    for share, from_tagged in ((0.25, 8), (1.0, 32)):
        cfg = FitConfig(output="m", tags=True, tagged_share=share, batch_size=32)
        rows = Trainer._batch_rows(SimpleNamespace(cfg=cfg, tagged=tagged, images=np.zeros(100)), sample_rng(0, 7, "fit-batch"))
        assert len(rows) == 32 and np.isin(rows[:from_tagged], tagged).all()
        assert np.isin(rows, tagged).sum() >= from_tagged
    plain = Trainer._batch_rows(SimpleNamespace(cfg=FitConfig(output="m", tags=True, batch_size=32), tagged=tagged, images=np.zeros(100)), sample_rng(0, 7, "fit-batch"))
    assert np.array_equal(plain, sample_rng(0, 7, "fit-batch").integers(0, 100, 32))
    m = tiny_fit_manifest(tmp_path, 8, 8, "tagged_share = 0.5\nsteps = 2")
    _one_line_error(synth("validate", m), "tagged_share", "needs tags = true")


def test_a_tags_file_gives_each_image_its_tags(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "tags.csv").write_text("file,tags\n0.png,circle;square\n1.png,\n")
    m = write_manifest(tmp_path, f"""
[dataset]
num_samples = 2
classes = {CLASSES}
[[stage]]
name = "folder"
path = "imgs"
tags_file = "tags.csv"
""")
    assert synth("run", m).returncode == 0
    records = [json.loads(v) for k, v in sorted(_members(tmp_path / "out").items()) if k.endswith(".json")]
    assert [r["tags"] for r in records] == [["circle", "square"], []]


def test_few_tagged_images_condition_a_fit_on_many_untagged(tmp_path):
    """untagged = "unlabelled": a folder's images missing from its tags file train with the null
    token (the generation tag sets come from the tagged ones only); a file naming none is refused."""
    from PIL import Image

    from synth_diffusers.tags import TagVocabulary

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(np.full((16, 16, 3), 30 * i, np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "tags.jsonl").write_text('{"file": "0.png", "tags": ["circle"]}\n{"file": "1.png", "tags": ["square", "circle"]}\n')
    m = tiny_fit_manifest(tmp_path, 8, 8, "tags = true\nsteps = 2\nbatch_size = 4\ngrid_samples = 2\ngrid_steps = 2\ncross_attention_dim = 8\nattention_heads = 2")
    m.write_text(m.read_text().replace('name = "shapes"\nsize = 16', f'name = "folder"\npath = "{folder}"\ntags_file = "tags.jsonl"\nuntagged = "unlabelled"')
                 .replace("[dataset]", f"[dataset]\nclasses = {CLASSES}"))
    res = synth("fit", m)
    assert res.returncode == 0, res.stderr
    info = json.loads((tmp_path / "model" / "fit.json").read_text())
    assert info["tagged_images"] == 2 and info["num_training_images"] == 8 and info["tags"] == ["circle", "square"]
    vocab = json.loads((tmp_path / "model" / "tags" / "tags.json").read_text())
    assert sorted(map(tuple, (s for s, _ in vocab["sets"]))) == [("circle",), ("circle", "square")]
    assert "2 of 8 images tagged, the rest trained with the null token" in (tmp_path / "model" / "README.md").read_text()
    presence = TagVocabulary.from_training([["circle"], None], ["circle"]).presence([["circle"], None])
    assert presence.tolist() == [[True], [False]]
    (tmp_path / "tags.jsonl").write_text('{"file": "elsewhere.png", "tags": ["circle"]}\n')
    _one_line_error(synth("validate", m), "tags_file", "lists none of the images")


def test_combined_labels_the_heads_regions_on_a_tag_model_from_real_labelled_scenes(tmp_path, tag_model):
    """The combined mode end to end: the pixel head, trained on real labelled scenes (each one's
    features taken under its own tags, as a tag model's samples are made), draws the regions;
    the attention gives each region a class among the sample's tags. Labelled images without
    tags cannot give a tag model's features: one line, exit 2, before any sample."""
    from PIL import Image

    from synth_shapes.world import render_many

    head = '[[stage]]\nname = "pixelhead"\nensemble = 1\nsteps = 5\ntimesteps = [10, 50]\ncalibration_samples = 0\nannotations = {annotations}\n'
    shapes = '{ source = { name = "shapes", split = "val", size = 16 }, count = 4 }'
    m = diffusers_manifest(
        tmp_path, tag_model, dataset=f"classes = {CLASSES}", n=4, name="combined.toml", output="combined",
        stages='[[stage]]\nname = "generate"\n' + head.format(annotations=shapes) + '[[stage]]\nname = "attention"\nregions_from = "labels"\n',
    )
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    members = _members(tmp_path / "combined")
    records = [json.loads(v) for k, v in sorted(members.items()) if k.endswith(".json")]
    assert len(records) == 4 and all(r["labels"]["by"] == "attention" and r["labels"]["regions_from"] == "labels" for r in records)
    for r in records:
        seg = np.asarray(Image.open(io.BytesIO(members[f"{r['key']}.seg.png"])))
        named = [0] + [["background", "circle", "square", "triangle"].index(t) for t in r["condition"]["tags"]]
        assert set(np.unique(seg)) <= set(named)

    labelled = tmp_path / "labelled"
    labelled.mkdir()
    images, masks = render_many(0, range(2), 16, split="val")
    for i, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image).save(labelled / f"{i}.png")
        Image.fromarray(mask.astype(np.uint8)).save(labelled / f"{i}.seg.png")
    untagged = diffusers_manifest(
        tmp_path, tag_model, dataset=f"classes = {CLASSES}", n=2, name="untagged.toml", output="untagged",
        stages='[[stage]]\nname = "generate"\n' + head.format(annotations='{ source = { name = "folder", path = "labelled" }, count = 2 }'),
    )
    _one_line_error(synth("run", "-q", untagged), "annotations", "has no tags", "conditioned on tags")
    assert not (tmp_path / "untagged").exists() or not list((tmp_path / "untagged").glob("*.tar"))
