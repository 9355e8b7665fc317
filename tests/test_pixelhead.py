"""The pixel head: UNet features, the ensemble, uncertainty, caching, annotations and their errors."""

import json
import math

import numpy as np
import pytest

from conftest import diffusers_manifest, synth
from synth.manifest import load_manifest
from synth.pipeline import Pipeline
from synth.reading import iter_samples

CLASSES = 'classes = ["background", "circle", "square", "triangle"]'
SHAPES16 = '{ name = "shapes", split = "train", size = 16, difficulty = 0.5 }'


def _manifest(tmp_path, model, stages="", n=8, shard=4, batch=4, name="m.toml", output="out", gen_extra="", steps=3):
    stages = '[[stage]]\nname = "generate"\n' + stages
    return diffusers_manifest(tmp_path, model, CLASSES, gen_extra, stages, n=n, shard=shard, batch=batch, name=name, output=output, steps=steps)


def _head(annotations=f"{{ source = {SHAPES16}, count = 4 }}", extra=""):
    return f"""
[[stage]]
name = "pixelhead"
timesteps = [5, 20]
ensemble = 2
steps = 40
batch_pixels = 256
calibration_samples = 8
cache_dir = "cache"
annotations = {annotations}
{extra}
"""


def _pipeline(path):
    pipe = Pipeline(load_manifest(path))
    pipe.generator.setup()
    return pipe.generator


def _samples(out):
    return [s for t in sorted(out.glob("d-*.tar")) for s in iter_samples(t)]


# -- features ---------------------------------------------------------------------------------
def _all_hooks(unet):
    return sum(len(m._forward_hooks) for m in unet.modules())


def test_feature_pyramid_shapes_per_block_and_timestep(tmp_path, models):
    gen = _pipeline(_manifest(tmp_path, models["ddpm"]))
    spec = gen.feature_spec({"blocks": ["down0", "mid", "up0", "up1"], "timesteps": [5, 20, 60]})
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    pyramid = gen.features(images, [{}] * 3, spec)
    # tiny UNet: block_out_channels (8, 16); 16x16 input; timestep-major, block order as asked
    expected = [(3, 8, 8, 8), (3, 16, 8, 8), (3, 16, 16, 16), (3, 8, 16, 16)] * 3
    assert [tuple(f.shape) for f in pyramid] == expected
    assert _all_hooks(gen.pipe.unet) == 0
    # noise levels differ, so the same block differs across timesteps
    assert not np.allclose(pyramid[2].numpy(), pyramid[6].numpy())
    # an image's features do not depend on the batch it is in (one shared noise)
    alone = gen.features(images[1:2], [{}], spec)
    for a, b in zip(alone, pyramid):
        np.testing.assert_allclose(a[0].numpy(), b[1].numpy(), rtol=1e-4, atol=1e-5)
    # default blocks: mid + every up block
    assert gen.feature_spec({"timesteps": [5]}).blocks == ("mid", "up0", "up1")


def test_hooks_are_removed_when_the_unet_fails(tmp_path, models):
    gen = _pipeline(_manifest(tmp_path, models["ddpm"]))
    spec = gen.feature_spec({"blocks": ["mid", "up0"], "timesteps": [5]})
    unet = gen.pipe.unet

    def broken(*a, **k):
        raise RuntimeError("up block exploded")

    unet.up_blocks[1].forward = broken
    with pytest.raises(RuntimeError, match="exploded"):
        gen.features(np.zeros((1, 16, 16, 3), np.uint8), [{}], spec)
    assert _all_hooks(unet) == 0


def test_feature_spec_errors_name_the_problem(tmp_path, models):
    from synth.errors import UsageError

    gen = _pipeline(_manifest(tmp_path, models["ddpm"]))
    with pytest.raises(UsageError, match=r"unknown block 'up7' \(this UNet has down0, down1, mid, up0, up1\)"):
        gen.feature_spec({"blocks": ["up7"], "timesteps": [5]})
    with pytest.raises(UsageError, match="timestep 250 outside 0..99"):
        gen.feature_spec({"timesteps": [250]})


def test_stable_diffusion_features_come_from_the_latent_unet(tmp_path, models):
    gen = _pipeline(_manifest(tmp_path, models["sd"], gen_extra='prompts = ["a cat"]'))
    spec = gen.feature_spec({"timesteps": [10, 90]})
    images = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    pyramid = gen.features(images, [{"prompt": "a cat"}, {}], spec)
    assert spec.blocks == ("mid", "up0", "up1")
    # 16x16 images -> 8x8 latents; up0 upsamples to 16x16 latent-space... of the 8x8 latent: 8x8 then 8x8
    assert [tuple(f.shape[:2]) for f in pyramid] == [(2, 16), (2, 16), (2, 8)] * 2
    assert all(f.shape[-1] == f.shape[-2] and f.shape[-1] in (4, 8) for f in pyramid)
    assert _all_hooks(gen.pipe.unet) == 0
    # the prompt conditions the features
    other = gen.features(images[:1], [{"prompt": "a dog"}], spec)
    assert not np.allclose(other[0][0].numpy(), pyramid[0][0].numpy())


# -- the ensemble ---------------------------------------------------------------------------------
def test_thin_classes_are_named_with_their_counts():
    from synth_pixelhead.coverage import MIN_REGIONS, class_coverage, thin_classes

    masks = np.zeros((3, 16, 16), np.int64)
    masks[:, 4:12, 4:12] = 1  # one large region per mask: 3 regions, 25% of the pixels
    masks[0, 0, 0] = masks[0, 1, 1] = 2  # diagonal neighbours are two regions (4-connectivity)
    for i in range(MIN_REGIONS):  # as many separate single pixels as the threshold: not thin
        masks[1 + i % 2, 14, 2 * (i // 2)] = 4
    pixels, regions = class_coverage(masks, 5)
    assert pixels == [3 * 256 - 3 * 64 - 2 - MIN_REGIONS, 3 * 64, 2, 0, MIN_REGIONS]
    assert regions == [3, 3, 2, 0, MIN_REGIONS]
    problems = thin_classes(pixels, regions, ["bg", "big", "rare", "absent", "scattered"])
    assert problems == [
        "'rare' has 2 labelled regions (2 pixels, 0.3% of the labelled pixels): a class with fewer than 10 is often learnt poorly; label more images that show it",
        "no labelled pixels of 'absent': the head will never label it",
    ]
    # the same few regions are not thin when they make up a large share of the labels
    assert thin_classes([10, 10], [1, 1], ["a", "b"]) == []


def test_js_divergence_on_known_distributions():
    from synth_pixelhead.head import js_divergence

    same = np.array([[0.2, 0.8], [0.2, 0.8], [0.2, 0.8]])
    assert js_divergence(same) == pytest.approx(0.0, abs=1e-12)
    # two confident members that disagree: H([.5, .5]) - 0 = ln 2 (the maximum for two members)
    assert js_divergence(np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(math.log(2))
    # one confident, one uniform: H([.75, .25]) - (0 + ln 2) / 2
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert js_divergence(np.array([[1.0, 0.0], [0.5, 0.5]])) == pytest.approx(h - math.log(2) / 2)


def test_class_balance_reweights_which_pixels_batches_draw():
    from synth_pixelhead.head import pixel_weights

    labels = np.array([0] * 90 + [1] * 9 + [3] * 1)  # class 2 absent
    assert pixel_weights(labels, 4, 0.0) is None  # uniform over pixels
    share = lambda w: [w[labels == c].sum() for c in range(4)]  # noqa: E731
    np.testing.assert_allclose(share(pixel_weights(labels, 4, 1.0)), [1 / 3, 1 / 3, 0, 1 / 3])
    half = np.sqrt([90, 9, 0, 1])
    np.testing.assert_allclose(share(pixel_weights(labels, 4, 0.5)), half / half.sum())


def test_image_uncertainty_is_the_mean_of_the_top_pixels():
    from synth_pixelhead.head import image_uncertainty

    js = np.zeros((2, 10, 10))
    js[0].flat[:10] = 1.0  # 10 % of pixels fully uncertain
    js[1].flat[:5] = 1.0
    assert image_uncertainty(js, 0.1).tolist() == pytest.approx([1.0, 0.5])


def test_low_resolution_first_layer_equals_the_full_resolution_mlp():
    """Labelling applies the first layer before upsampling; it must equal the textbook order."""
    import torch

    from synth_pixelhead.head import Ensemble, build_member, entropy
    from synth_pixelhead.pyramid import upsample

    torch.manual_seed(0)
    pyramid = [torch.randn(2, 5, 4, 4) * 3 + 1, torch.randn(2, 3, 8, 8), torch.randn(2, 4, 16, 16) - 2]
    c, k = 12, 4
    members = []
    for _ in range(3):
        m = build_member(torch, c, [16, 8], k)
        for p in m.modules():
            if isinstance(p, torch.nn.BatchNorm1d):  # non-trivial running statistics
                p.running_mean.normal_()
                p.running_var.uniform_(0.5, 2)
        members.append(m.eval())
    mean, std = np.random.default_rng(0).normal(size=c).astype(np.float32), np.random.default_rng(1).uniform(0.5, 2, c).astype(np.float32)
    ens = Ensemble(members, mean, std, k)
    labels, js = ens.predict(pyramid, (16, 16))

    full = upsample(pyramid, (16, 16)).permute(0, 2, 3, 1).reshape(-1, c)
    x = (full - torch.from_numpy(mean)) / torch.from_numpy(std)
    with torch.inference_mode():
        probs = torch.stack([torch.softmax(m(x), 1) for m in members])
    ref_js = (entropy(probs.mean(0)) - entropy(probs).mean(0)).view(2, 16, 16).numpy()
    np.testing.assert_allclose(js, np.maximum(ref_js, 0), atol=1e-5)
    votes = torch.nn.functional.one_hot(probs.argmax(2), k).sum(0).float() + 1e-3 * probs.mean(0)
    assert (labels == votes.argmax(1).view(2, 16, 16).numpy()).mean() > 0.999


def test_sampled_pixels_equal_the_upsampled_map():
    import torch

    from synth_pixelhead.pyramid import sample_pixels, upsample

    pyramid = [torch.randn(2, 5, 8, 8), torch.randn(2, 3, 16, 16), torch.randn(2, 2, 32, 32)]
    rows, cols = np.array([0, 31, 7, 12]), np.array([0, 31, 30, 3])
    full = upsample(pyramid, (32, 32))
    np.testing.assert_allclose(sample_pixels(pyramid, rows, cols, (32, 32), 1).numpy(), full[1][:, rows, cols].T.numpy(), atol=1e-5)


def test_pixel_bank_stays_within_its_budget():
    from synth_pixelhead.bank import PixelBank

    bank = PixelBank(channels=4000, num_images=16, pixels_per_image=256 * 256, budget_bytes=64 * 2**20)
    assert bank.features.nbytes <= 64 * 2**20
    assert bank.per_image == 64 * 2**20 // (2 * 4000) // 16
    mask = np.zeros((256, 256), np.int64)
    r1, c1 = bank.pick(0, 3, mask)
    r2, c2 = bank.pick(0, 3, mask)
    assert len(r1) == bank.per_image and (r1 == r2).all() and (c1 == c2).all()
    assert not (bank.pick(0, 4, mask)[0] == r1).all()


# -- end to end -----------------------------------------------------------------------------------
def test_pixelhead_labels_every_sample_and_a_second_run_uses_the_cache(tmp_path, models):
    m = _manifest(tmp_path, models["ddpm"], _head())
    res = synth("run", m, env={"TQDM_DISABLE": "", "SYNTH_PROGRESS_INTERVAL": "0"})
    assert res.returncode == 0, res.stderr
    assert "training the pixel head on 4 labelled real images" in res.stderr
    # stderr is a pipe here: every phase of the head logs plain progress lines, and ends with one
    for phase, total in (("features of labelled images", "4/4 images"), ("training", "80/80 steps"), ("calibration samples", "8/8 samples")):
        assert f"synth: pixel head: {phase}: {total} (100%)" in res.stderr, res.stderr
    heads = list((tmp_path / "cache" / "pixelheads").iterdir())
    assert len(heads) == 1
    info = json.loads((heads[0] / "head.json").read_text())
    assert info["trained_on"]["kind"] == "real" and info["trained_on"]["images"] == 4
    assert info["classes"] == ["background", "circle", "square", "triangle"]
    assert len(info["calibration"]["label_uncertainty"]) == 8

    samples = _samples(tmp_path / "out")
    assert len(samples) == 8
    from PIL import Image
    import io

    for s in samples:
        seg = np.asarray(Image.open(io.BytesIO(s["seg.png"])))
        assert seg.shape == (16, 16) and seg.max() < 4
        rec = json.loads(s["json"])
        assert 0 <= rec["scores"]["label_uncertainty"] <= math.log(2) + 1e-6
        assert rec["labels"] == {"by": "pixelhead", "head": info["key"][:16]}
    ds = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert ds["classes"] == info["classes"] and len(ds["palette"]) == 4

    mtime = (heads[0] / "head.safetensors").stat().st_mtime_ns
    again = synth("run", m, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert "training the pixel head" not in again.stderr
    assert (heads[0] / "head.safetensors").stat().st_mtime_ns == mtime
    assert [s["seg.png"] for s in _samples(tmp_path / "out")] == [s["seg.png"] for s in samples]


def _generated_annotations(tmp_path, model, gen_extra="") -> None:
    """A first run into gen/ and masks/ drawn on two of its samples (class 1 and class 2 squares)."""
    from PIL import Image

    first = _manifest(tmp_path, model, name="gen.toml", output="gen", gen_extra=gen_extra)
    assert synth("run", first).returncode == 0
    masks = tmp_path / "masks"
    masks.mkdir()
    for key, cls in (("s00000001", 1), ("s00000005", 2)):
        m = np.zeros((16, 16), np.uint8)
        m[4:12, 4:12] = cls
        Image.fromarray(m).save(masks / f"{key}.png")


def test_head_trained_on_generated_samples_and_reused_by_path(tmp_path, models):
    _generated_annotations(tmp_path, models["ddpm"])
    ann = '{ shards = "gen/d-{000000..000001}.tar", masks = "masks" }'
    m = _manifest(tmp_path, models["ddpm"], _head(ann, extra='save_to = "myhead"'))
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    assert "on 2 labelled generated images" in res.stderr
    info = json.loads((tmp_path / "myhead" / "head.json").read_text())
    assert info["trained_on"]["keys"] == ["s00000001", "s00000005"]
    assert info["trained_on"]["class_pixels"] == [2 * 256 - 2 * 64, 64, 64, 0]
    assert info["trained_on"]["class_regions"] == [2, 1, 1, 0]  # a background ring and a square per mask
    # triangle is labelled nowhere: the user is told before the head trains; circle and square (one
    # region each, but 12.5% of the labelled pixels) are not flagged
    warnings = [line for line in res.stderr.splitlines() if line.startswith("synth: warning: stage 'pixelhead'")]
    assert warnings == ["synth: warning: stage 'pixelhead': no labelled pixels of 'triangle': the head will never label it"]

    reuse = _manifest(tmp_path, models["ddpm"], '[[stage]]\nname = "pixelhead"\nhead = "myhead"\n', name="reuse.toml", output="reuse")
    res = synth("run", reuse)
    assert res.returncode == 0, res.stderr
    assert "training the pixel head" not in res.stderr
    assert [s["seg.png"] for s in _samples(tmp_path / "reuse")] == [s["seg.png"] for s in _samples(tmp_path / "out")]

    # the same head on another generator is refused
    from tiny_models import build_ddpm

    other_model = build_ddpm(tmp_path / "other-model", seed=1)
    other = _manifest(tmp_path, other_model, '[[stage]]\nname = "pixelhead"\nhead = "myhead"\n', name="other.toml", output="other")
    res = synth("run", other)
    assert res.returncode == 2
    assert "was trained on the features of" in res.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("size", "s00000001.png is 8x8, sample s00000001 is 16x16"),
        ("class", "s00000001.png has class id 7, but [dataset].classes lists 4 classes (ids 0..3)"),
        ("key", "s00000099.png names sample s00000099, which is not in gen/d-000000.tar"),
        ("mode", "s00000001.png must be single-channel class ids, got mode RGB"),
    ],
)
def test_bad_annotations_are_one_line_errors(tmp_path, models, problem, expected):
    from PIL import Image

    assert synth("run", _manifest(tmp_path, models["ddpm"], name="gen.toml", output="gen", n=4)).returncode == 0
    masks = tmp_path / "masks"
    masks.mkdir()
    key = "s00000099" if problem == "key" else "s00000001"
    arr = np.zeros((8, 8) if problem == "size" else (16, 16), np.uint8)
    arr[0, 0] = 7 if problem == "class" else 1
    img = Image.fromarray(arr).convert("RGB") if problem == "mode" else Image.fromarray(arr)
    img.save(masks / f"{key}.png")
    m = _manifest(tmp_path, models["ddpm"], _head('{ shards = "gen/d-000000.tar", masks = "masks" }'))
    res = synth("run", m)
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert expected in line and "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_annotation_source_is_validated_with_the_manifest(tmp_path, models):
    bad = _head('{ source = { name = "shapez", split = "train" }, count = 4 }')
    res = synth("validate", _manifest(tmp_path, models["ddpm"], bad))
    assert res.returncode == 2
    assert "stage[1].annotations.source.name: unknown stage 'shapez'; did you mean 'shapes'?" in res.stderr
    res = synth("validate", _manifest(tmp_path, models["ddpm"], _head('{ source = { name = "image_stats" } }'), name="b.toml"))
    assert res.returncode == 2 and "'image_stats' is a transform stage, a source stage is needed here" in res.stderr
    res = synth("validate", _manifest(tmp_path, models["ddpm"], _head(f"{{ source = {SHAPES16}, shards = \"x\" }}"), name="c.toml"))
    assert res.returncode == 2 and "give either source" in res.stderr


def test_drop_uncertain_uses_the_heads_calibration(tmp_path, models):
    m = _manifest(tmp_path, models["ddpm"], _head() + '\n[[stage]]\nname = "drop_uncertain"\nfraction = 0.5\n', n=16, shard=16, batch=8)
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    heads = list((tmp_path / "cache" / "pixelheads").iterdir())
    cal = json.loads((heads[0] / "head.json").read_text())["calibration"]["label_uncertainty"]
    threshold = float(np.quantile(cal, 0.5))
    stats = json.loads((tmp_path / "out" / "d-000000.stats.json").read_text())
    kept = [json.loads(s["json"])["scores"]["label_uncertainty"] for s in _samples(tmp_path / "out")]
    assert all(u <= threshold for u in kept)
    assert stats["count"] == len(kept) and len(stats["dropped"]) == 16 - len(kept)
    for d in stats["dropped"]:
        assert d["reason"] == "label_uncertainty above the 50% quantile of 8 calibration samples (share 50% ± 31.0% from calibration alone)"
        assert float(d["detail"].split(" > ")[0]) > threshold


def test_drop_uncertain_without_a_calibrating_labeller_is_a_clear_error(tmp_path, models):
    res = synth("validate", _manifest(tmp_path, models["ddpm"], '[[stage]]\nname = "drop_uncertain"\n'))
    assert res.returncode == 2
    assert "stage[1]: score 'label_uncertainty' is recorded by no earlier stage" in res.stderr.strip().splitlines()[-1]
    # a labeller that records the score but calibrates nothing: said when the stage is set up
    head = _head(extra="").replace("calibration_samples = 8", "calibration_samples = 0")
    res = synth("run", _manifest(tmp_path, models["ddpm"], head + '[[stage]]\nname = "drop_uncertain"\n', name="b.toml"))
    assert res.returncode == 2
    assert "no calibration for score 'label_uncertainty'" in res.stderr.strip().splitlines()[-1]


def test_bad_mask_in_a_folder_of_annotations_names_the_file(tmp_path, models):
    from PIL import Image

    folder = tmp_path / "labelled"
    folder.mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(folder / f"{name}.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "a.seg.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "b.seg.png")  # RGB: not class ids
    m = _manifest(tmp_path, models["ddpm"], _head('{ source = { name = "folder", path = "labelled" }, count = 2 }'))
    res = synth("run", m)
    assert res.returncode == 2
    line = res.stderr.strip().splitlines()[-1]
    assert "labelled sample s00000001 is unusable: b.png: mask must be single-channel class ids, got mode RGB (mask b.seg.png)" in line


def test_drop_uncertain_drops_the_share_asked_within_its_stated_band(tmp_path, models):
    """The dropped share matches `fraction` within the band the reason states (95%: with 256
    calibration samples and 256 samples, 25% +- 7.5%); the summary prints the share dropped."""
    from synth_pixelhead.stages import drop_share_band

    head = _head().replace("calibration_samples = 8", "calibration_samples = 256")
    m = _manifest(tmp_path, models["ddpm"], head + '\n[[stage]]\nname = "drop_uncertain"\nfraction = 0.25\n', n=256, shard=128, batch=64, steps=2)
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    stage = next(s for s in info["stages"] if s["name"] == "drop_uncertain")
    assert stage["rows_in"] == 256 and stage["rows_out"] == info["num_samples"]
    share = 1 - stage["keep_rate"]
    band = drop_share_band(0.25, 256, 256)
    assert abs(share - 0.25) <= band, (share, band)
    (reason,) = [r for r in info["dropped_by_reason"]]
    assert reason == "drop_uncertain: label_uncertainty above the 75% quantile of 256 calibration samples (share 25% ± 5.3% from calibration alone)"
    dropped = 256 - info["num_samples"]
    assert (
        f"stage[2] drop_uncertain: kept {info['num_samples']} of 256 ({100 * (1 - share):.1f}%), dropped {dropped} ({100 * share:.1f}%); "
        f"expected 25% ± {100 * band:.1f}% for 256 samples (inside the 95% band)"
    ) in res.stderr
