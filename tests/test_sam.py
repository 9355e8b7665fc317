"""The `sam` label stage on tiny random-weight SAMs built here (the same weights for both
backends): the small-image transform path, backend agreement, the three modes' outputs and
bookkeeping, embedding reuse, read-back with webdataset and Hugging Face, and bad input."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synth, write_manifest
from synth.batch import Batch
from synth.plugins import load_registry
from synth.protocols import RunContext
from synth.reading import iter_samples

pytest.importorskip("segment_anything")
torch = pytest.importorskip("torch")

from synth_sam import regions as R  # noqa: E402
from synth_sam import transform as T  # noqa: E402

CLASSES = ["background", "circle", "square", "triangle"]


@pytest.fixture(scope="module")
def sam(tmp_path_factory):
    from tiny_models import build_sam

    return build_sam(tmp_path_factory.mktemp("sam"))


def _arch_toml(arch: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in arch.items()) + " }"


def _sam_table(sam, backend="segment-anything", **options) -> str:
    lines = ['[[stage]]', 'name = "sam"', f'backend = "{backend}"']
    if backend == "segment-anything":
        lines += [f'checkpoint = "{sam["checkpoint"]}"', f"architecture = {_arch_toml(sam['arch'])}"]
    else:
        lines += [f'model = "{sam["hf"]}"']
    lines += [f"{k} = {json.dumps(v) if not isinstance(v, str) or not v.startswith('[') else v}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


def _shapes_manifest(tmp_path, stages: str, n=6, shard=3, output="out", name="m.toml") -> Path:
    body = f"""
[dataset]
name = "r"
output = "{output}"
num_samples = {n}
shard_size = {shard}
classes = {json.dumps(CLASSES)}
[run]
batch_size = 3
[[stage]]
name = "shapes"
split = "test"
"""
    return write_manifest(tmp_path, body + stages, name)


def _samples(out: Path) -> list[dict]:
    return [s for t in sorted(out.glob("*.tar")) for s in iter_samples(t)]


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _stage(sam, **options):
    from synth.manifest import load_manifest  # noqa: F401  (the registry validates configs)
    from synth_sam.config import SamStageConfig
    from synth_sam.stage import SamStage

    base = {"checkpoint": str(sam["checkpoint"]), "architecture": sam["arch"]}
    if options.get("backend") == "transformers":
        base = {"model": str(sam["hf"])}
    cfg = SamStageConfig.model_validate({**base, **options})
    stage = SamStage(cfg, RunContext(seed=0, manifest_dir=Path("."), classes=CLASSES, registry=load_registry()))
    stage.setup()
    return stage


def _scenes(n=4, size=32):
    from synth_shapes.world import render_many  # the shapes world's scenes and exact masks

    return render_many(0, range(n), size, split="test")


# -- the transform path ---------------------------------------------------------------------------
@pytest.mark.parametrize("h, w", [(32, 32), (24, 40), (64, 48)])
def test_small_images_go_to_sams_frame_and_masks_come_back_exactly(h, w):
    rng = np.random.default_rng(0)
    mask = np.zeros((h, w), bool)
    for _ in range(3):  # a few rectangles and a disc, edges at arbitrary pixels
        y0, x0 = rng.integers(0, h - 6), rng.integers(0, w - 6)
        mask[y0 : y0 + rng.integers(3, 12), x0 : x0 + rng.integers(3, 12)] = True
    yy, xx = np.mgrid[:h, :w]
    mask |= (yy - h / 2) ** 2 + (xx - w / 3) ** 2 < 16
    size = 1024
    low = T.mask_to_low_res(mask, size, torch)
    assert low.shape == (1, 1, 256, 256)  # what SAM's decoder returns for a 1024 input
    back = T.logits_to_image(low, h, w, size, torch)[0, 0].numpy() > 0
    assert back.shape == (h, w)
    assert (back == mask).all(), f"{(back != mask).sum()} pixels differ"
    # images: resized so the longer side is SAM's, padded at the bottom/right
    x = T.to_input(np.zeros((2, h, w, 3), np.uint8), size, torch)
    nh, nw = T.resized_shape(h, w, size)
    assert x.shape == (2, 3, size, size) and max(nh, nw) == size
    assert (x[:, :, nh:, :] == 0).all() and (x[:, :, :, nw:] == 0).all() and (x[:, :, :nh, :nw] != 0).all()
    # a point at a pixel's centre lands at the same relative place
    p = T.coords_to_input(np.array([[w / 2, h / 2]]), h, w, size)[0]
    np.testing.assert_allclose(p, [nw / 2, nh / 2], rtol=1e-6)


@pytest.mark.parametrize("h, w, size", [(32, 32, 1024), (24, 40, 128), (512, 512, 1024), (100, 60, 64)])
def test_mask_resizing_as_matrices_equals_upsample_crop_resize(h, w, size):
    low = torch.randn(2, 3, size // 4, size // 4)
    nh, nw = T.resized_shape(h, w, size)
    up = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[..., :nh, :nw]
    expected = torch.nn.functional.interpolate(up, size=(h, w), mode="bilinear", align_corners=False)
    torch.testing.assert_close(T.logits_to_image(low, h, w, size, torch), expected, atol=1e-4, rtol=1e-4)


# -- the two backends ------------------------------------------------------------------------------
def test_both_backends_give_the_same_masks_from_the_same_weights(sam):
    a = _stage(sam, mode="prompted", prompts=[{"box": [2, 2, 20, 20]}])
    b = _stage(sam, backend="transformers", mode="prompted", prompts=[{"box": [2, 2, 20, 20]}])
    images, _ = _scenes(3)
    xa = T.to_input(images, a.backend.image_size, torch)
    ea, eb = a.backend.embed(xa), b.backend.embed(xa)
    torch.testing.assert_close(ea, eb, atol=1e-4, rtol=1e-4)
    prompts = [
        (np.array([[10.0, 12.0]], np.float32), np.array([1]), None),
        (np.array([[5.0, 5.0], [20.0, 25.0]], np.float32), np.array([1, 0]), None),
        (None, None, np.array([3.0, 4.0, 25.0, 30.0], np.float32)),
        (np.array([[14.0, 17.0]], np.float32), np.array([1]), np.array([3.0, 4.0, 25.0, 30.0], np.float32)),
    ]
    for multimask in (True, False):
        la, qa = a._decode(ea[:1], prompts, 32, 32, multimask)
        lb, qb = b._decode(eb[:1], prompts, 32, 32, multimask)
        np.testing.assert_allclose(la, lb, atol=1e-3)
        np.testing.assert_allclose(qa, qb, atol=1e-4)
        sure = np.abs(la) > 1e-2  # pixels not on the threshold itself
        assert ((la > 0) == (lb > 0))[sure].all()
    # and whole runs agree: the same instances, maps and records
    for stage in (a, b):
        stage.config.mode = "auto"
        stage.config.points_per_side = 4
        stage.config.pred_iou_thresh = stage.config.stability_score_thresh = 0.0
    ra = a.process(Batch(keys=["a", "b", "c"], images=images.copy(), records=[{}, {}, {}]))
    rb = b.process(Batch(keys=["a", "b", "c"], images=images.copy(), records=[{}, {}, {}]))
    assert (ra.instances == rb.instances).all()
    for r1, r2 in zip(ra.records, rb.records):
        assert len(r1["instances"]) == len(r2["instances"]) >= 1
        for f1, f2 in zip(r1["instances"], r2["instances"]):
            assert f1.keys() == f2.keys()
            for k in f1:
                assert f1[k] == (pytest.approx(f2[k], abs=1e-4) if k in ("predicted_iou", "stability_score") else f2[k]), k


def test_each_image_is_encoded_once_whatever_the_prompts(sam):
    stage = _stage(sam, mode="prompted", prompts=[{"box": [0, 0, 15, 15]}, {"points": [[20, 20]]}, {"points": [[5, 25], [8, 25]], "labels": [1, 0], "class": "square"}], encoder_batch_size=2)
    images, _ = _scenes(5)
    calls = []
    embed = stage.backend.embed
    stage.backend.embed = lambda x: calls.append(len(x)) or embed(x)
    out = stage.process(Batch(keys=[f"s{i}" for i in range(5)], images=images, records=[{} for _ in range(5)]))
    assert calls == [2, 2, 1] and stage.backend.images_embedded == 5  # batched, once per image
    assert all(len(r["instances"]) == 3 for r in out.records)
    assert out.instances.dtype == np.uint16 and out.instances.shape == (5, 32, 32)
    # the prompt's class lands in its instance and in seg; others keep the background
    for rec, inst, seg in zip(out.records, out.instances, out.seg):
        square = [f for f in rec["instances"] if f["class"] == 2]
        assert len(square) == 1 and square[0]["class_name"] == "square"
        visible = inst == square[0]["id"]
        assert (seg[visible] == 2).all() and set(np.unique(seg[~visible])) <= {0, 2}


@pytest.mark.parametrize("backend", ["segment-anything", "transformers"])
def test_half_precision_encoder_runs_and_stays_close(sam, backend):
    """dtype bfloat16 (what device = auto picks on a GPU) halves the encoder only; runs on CPU."""
    options = {"backend": backend, "mode": "prompted", "prompts": [{"box": [2, 2, 20, 20]}, {"points": [[10, 10]]}]}
    full, half = _stage(sam, **options), _stage(sam, dtype="bfloat16", **options)
    images, _ = _scenes(2)
    x = T.to_input(images, full.backend.image_size, torch)
    ef, eh = full.backend.embed(x), half.backend.embed(x)
    assert eh.dtype == torch.float32 and (ef - eh).abs().max() < 0.1 * ef.abs().max()
    out = half.process(Batch(keys=["a", "b"], images=images, records=[{}, {}]))
    assert out.instances.shape == (2, 32, 32) and all(len(r["instances"]) == 2 for r in out.records)


# -- modes end to end ------------------------------------------------------------------------------
@pytest.mark.slow
def test_refine_keeps_sams_mask_only_where_it_agrees_and_records_why(sam, tmp_path):
    plain = _shapes_manifest(tmp_path, "", output="plain", name="plain.toml")
    assert synth("run", "-q", plain).returncode == 0
    truth = {s["__key__"]: _png(s["seg.png"]) for s in _samples(tmp_path / "plain")}

    # threshold 1: SAM never agrees perfectly, so every region stays the head's, exactly
    m = _shapes_manifest(tmp_path, _sam_table(sam, mode="refine", iou_threshold=1.0), output="head", name="head.toml")
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    for s in _samples(tmp_path / "head"):
        rec, seg, inst = json.loads(s["json"]), _png(s["seg.png"]), _png(s["inst.png"])
        assert inst.dtype == np.uint16 and inst.shape == (32, 32)
        assert (seg == truth[s["__key__"]]).all()
        regions = R.class_regions(truth[s["__key__"]], 0, 4)
        assert [f["id"] for f in rec["instances"]] == list(range(1, len(regions) + 1))
        for f, (cls, region) in zip(rec["instances"], regions):
            assert f["kept"] == "head" and f["class"] == cls and f["area"] == region.sum() and 0 <= f["agreement"] < 1
            assert f["bbox"] == R.box_xywh(region) and (inst[region] == f["id"]).all()
        assert rec["scores"]["sam_kept_share"] == 0.0 and rec["labels"]["sam"]["mode"] == "refine"

    # a threshold between the agreements: SAM's mask kept exactly where agreement >= threshold
    agreements = [f["agreement"] for s in _samples(tmp_path / "head") for f in json.loads(s["json"])["instances"]]
    cut = float(np.median(agreements))
    m = _shapes_manifest(tmp_path, _sam_table(sam, mode="refine", iou_threshold=cut), output="mixed", name="mixed.toml")
    assert synth("run", "-q", m).returncode == 0
    kinds = []
    for s in _samples(tmp_path / "mixed"):
        rec, seg, inst = json.loads(s["json"]), _png(s["seg.png"]), _png(s["inst.png"])
        for f in rec["instances"]:
            assert f["kept"] == ("sam" if f["agreement"] >= cut else "head")
            kinds.append(f["kept"])
            visible = inst == f["id"]
            assert (seg[visible] == f["class"]).all()  # the class map follows the instances
        assert rec["scores"]["sam_kept_share"] == pytest.approx(np.mean([f["kept"] == "sam" for f in rec["instances"]]), abs=1e-6)
        assert rec["scores"]["sam_agreement"] == pytest.approx(np.mean([f["agreement"] for f in rec["instances"]]), abs=1e-6)
    assert "sam" in kinds and "head" in kinds


@pytest.mark.slow
def test_auto_mode_instances_read_back_with_webdataset_and_hugging_face(sam, tmp_path):
    import webdataset as wds
    from datasets import load_dataset

    stages = _sam_table(sam, mode="auto", points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.9, classes_from="seg")
    m = _shapes_manifest(tmp_path, stages)
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    samples = list(wds.WebDataset(sorted(map(str, out.glob("*.tar"))), shardshuffle=False))
    assert len(samples) == 6
    for s in samples:
        assert set(s) >= {"__key__", "png", "json", "seg.png", "inst.png"}
        rec, inst = json.loads(s["json"]), _png(s["inst.png"])
        assert inst.dtype == np.uint16 and inst.shape == (32, 32)
        ids = [f["id"] for f in rec["instances"]]
        assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 1 and rec["scores"]["sam_instances"] == len(ids)
        assert set(np.unique(inst)) <= {0, *ids}
        areas = [f["area"] for f in rec["instances"]]
        assert areas == sorted(areas, reverse=True)  # largest first, smaller drawn over them
        for f in rec["instances"]:
            visible = inst == f["id"]
            assert visible.sum() <= f["area"] and f["predicted_iou"] > 0 and 0 <= f["stability_score"] <= 1
            assert f["class"] in range(4) and f["class_name"] == CLASSES[f["class"]] and f["kept"] == "sam"
            if visible.any():
                ys, xs = np.nonzero(visible)
                x, y, bw, bh = f["bbox"]
                assert x <= xs.min() and y <= ys.min() and xs.max() < x + bw and ys.max() < y + bh
    # the preview outlines each instance in white on the label map beside the image
    res = synth("preview", out, "-o", tmp_path / "p.png", "-n", "1")
    assert res.returncode == 0, res.stderr
    sheet = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    label_half = sheet[:128, 132:260]
    assert (label_half == 255).all(-1).any()
    ds = load_dataset("webdataset", data_files={"train": str(out / "*.tar")}, split="train")
    assert len(ds) == 6
    row = ds[0]
    assert np.asarray(row["inst.png"]).shape == (32, 32) and isinstance(row["json"]["instances"], list)


@pytest.mark.slow
def test_prompted_from_the_labellers_regions_and_from_each_record(sam, tmp_path):
    m = _shapes_manifest(tmp_path, _sam_table(sam, mode="prompted", prompts_from="seg"), n=3)
    assert synth("run", "-q", m).returncode == 0
    for s in _samples(tmp_path / "out"):
        rec = json.loads(s["json"])
        assert rec["instances"] and all(f["class"] in (1, 2, 3) for f in rec["instances"])
    # prompts read from each sample's json (here put there by the test)
    stage = _stage(sam, mode="prompted", prompts_from="record", record_field="condition.boxes")
    images, _ = _scenes(2)
    records = [{"condition": {"boxes": [{"box": [1, 1, 10, 10], "class": "circle"}]}}, {"condition": {"boxes": [{"points": [[4, 4]]}, {"box": [0, 0, 31, 31]}]}}]
    out = stage.process(Batch(keys=["a", "b"], images=images, records=records))
    assert [len(r["instances"]) for r in out.records] == [1, 2]
    assert out.records[0]["instances"][0]["class"] == 1
    bad = [{"condition": {"boxes": [{"box": [1, 1, 50, 10]}]}}, {"condition": {"boxes": []}}]
    with pytest.raises(Exception, match=r"sample a: condition.boxes\[0\]: box \[1.0, 1.0, 50.0, 10.0\] lies outside the 32x32 image"):
        stage.process(Batch(keys=["a", "b"], images=images, records=bad))


# -- bad input ---------------------------------------------------------------------------------------
def _gen_manifest(tmp_path, stages: str) -> Path:
    body = f"""
[dataset]
name = "g"
output = "out"
num_samples = 4
shard_size = 2
classes = {json.dumps(CLASSES)}
[generator]
name = "diffusers"
model = "builtin:shapes-32"
scheduler = "ddim"
steps = 2
[[stage]]
name = "generate"
"""
    return write_manifest(tmp_path, body + stages)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "stage[1].checkpoint: no such file"),
        ("sha", "has sha256"),
        ("arch", "is not a vit_b SAM"),
        ("outside", "stage[1].prompts[0]: box [0.0, 0.0, 40.0, 20.0] lies outside the 32x32 image"),
        ("refine", "stage[1]: mode 'refine' needs class labels from an earlier stage"),
        ("class", "stage[1].prompts[0]: class 'dog' is not one of [dataset].classes"),
    ],
)
def test_bad_sam_input_is_one_line_exit_2_before_any_sample(sam, tmp_path, case, expected):
    if case == "missing":
        stages = _sam_table(sam).replace(str(sam["checkpoint"]), str(tmp_path / "nope.pth"))
    elif case == "sha":
        stages = _sam_table(sam, sha256="0" * 64)
    elif case == "arch":
        stages = f'[[stage]]\nname = "sam"\ncheckpoint = "{sam["checkpoint"]}"\nmodel_type = "vit_b"\n'
    elif case == "outside":
        stages = _sam_table(sam, mode="prompted", prompts="[{ box = [0, 0, 40, 20] }]")
    elif case == "refine":
        stages = _sam_table(sam, mode="refine")
    else:
        stages = _sam_table(sam, mode="prompted", prompts='[{ box = [0, 0, 10, 10], class = "dog" }]')
    res = synth("run", _gen_manifest(tmp_path, stages))
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert expected in line, line
    assert not list((tmp_path / "out").glob("*.tar")) if (tmp_path / "out").exists() else True


def test_asking_for_segment_anything_without_it_names_the_extra(sam, monkeypatch):
    import importlib.util

    from synth.protocols import PlanContext
    from synth_sam.config import SamStageConfig
    from synth_sam.stage import SamStage

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "segment_anything" else real(name, *a))
    cfg = SamStageConfig.model_validate({"checkpoint": str(sam["checkpoint"]), "architecture": sam["arch"]})
    plan = PlanContext(manifest_dir=Path("."), classes=CLASSES, num_samples=1, registry=load_registry(), generator=None, stages=[], position=0)
    assert "pip install 'synth-data[sam]'" in SamStage.check_plan(cfg, plan)[0]


# -- real weights, where present -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SYNTH_SAM_CHECKPOINT"), reason="set SYNTH_SAM_CHECKPOINT=path/to/sam_vit_*.pth (and SYNTH_SAM_MODEL_TYPE) to run SAM's released weights")
def test_released_weights_segment_shapes_scenes(tmp_path):
    ckpt = os.environ["SYNTH_SAM_CHECKPOINT"]
    model_type = os.environ.get("SYNTH_SAM_MODEL_TYPE", "vit_h")
    stages = f'[[stage]]\nname = "sam"\ncheckpoint = "{ckpt}"\nmodel_type = "{model_type}"\nmode = "refine"\n'
    m = _shapes_manifest(tmp_path, stages, n=6)
    res = synth("run", m, timeout=1800)
    assert res.returncode == 0, res.stderr
    agreements = [f["agreement"] for s in _samples(tmp_path / "out") for f in json.loads(s["json"])["instances"]]
    assert np.mean(agreements) > 0.5  # real SAM finds the shapes the world drew
