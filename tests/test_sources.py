"""Real-image sources: folder (with masks), WebDataset shards, the shapes world."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import synth, write_manifest
from synth.manifest import load_manifest
from synth.pipeline import Pipeline
from synth.reading import iter_samples


def _folder_manifest(tmp_path, extra="", n=4, classes='["bg", "fg"]'):
    return write_manifest(
        tmp_path,
        f"""
[dataset]
name = "f"
output = "out"
num_samples = {n}
shard_size = 10
classes = {classes}

[[stage]]
name = "folder"
path = "imgs"
size = 16
{extra}
""",
    )


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode) if mode else Image.fromarray(array)
    (Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)).save(path)


def _pipeline(manifest):
    p = Pipeline(load_manifest(manifest))
    p.setup()
    return p


def test_folder_converts_modes_and_sizes_and_reads_masks(tmp_path):
    rng = np.random.default_rng(0)
    imgs = tmp_path / "imgs"
    _save(imgs / "a.png", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    _save(imgs / "b.png", rng.integers(0, 255, (16, 24), dtype=np.uint8))  # grayscale, not square
    rgba = rng.integers(0, 255, (16, 16, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[:8, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(imgs / "c.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(imgs / "d.jpg")
    for name, size in (("a", (20, 20)), ("b", (16, 24)), ("c", (16, 16)), ("d", (32, 32))):
        mask = np.zeros(size, np.uint8)
        mask[: size[0] // 2] = 1
        Image.fromarray(mask).save(imgs / f"{name}.seg.png")
    p = _pipeline(_folder_manifest(tmp_path))
    batch = p.run_batch([0, 1, 2, 3])
    assert batch.keys == ["s00000000", "s00000001", "s00000002", "s00000003"]
    assert batch.images.shape == (4, 16, 16, 3) and batch.seg.shape == (4, 16, 16)
    assert set(np.unique(batch.seg)) == {0, 1}
    assert (batch.images[2, 12:] == 0).all()  # transparent half of the RGBA image is black
    assert [r["source"]["file"] for r in batch.records] == ["a.png", "b.png", "c.png", "d.jpg"]


def test_corrupt_image_missing_mask_and_bad_masks_are_skipped_with_reasons(tmp_path):
    imgs = tmp_path / "imgs"
    good = np.full((16, 16, 3), 100, np.uint8)
    for name in ("a", "b", "c", "d", "e", "f"):
        _save(imgs / f"{name}.png", good)
    (imgs / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(imgs / "a.seg.png")
    # c: no mask at all
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(imgs / "d.seg.png")  # RGB mask
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(imgs / "e.seg.png")  # wrong size
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(imgs / "f.seg.png")  # class id 7 of 2
    m = _folder_manifest(tmp_path, n=6)
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["num_samples"] == 1 and info["num_dropped"] == 5
    reasons = info["dropped_by_reason"]
    assert reasons == {
        "folder: unreadable image": 1,
        "folder: missing mask": 1,
        "folder: mask must be single-channel class ids, got mode RGB": 1,
        "folder: mask size 8x8 differs from image size 16x16": 1,
        "folder: mask has class id 7, beyond the 2 classes of [dataset].classes": 1,
    }
    assert "dropped 5" in res.stderr
    stats = json.loads((tmp_path / "out" / "f-000000.stats.json").read_text())
    assert {d["key"] for d in stats["dropped"]} == {f"s0000000{i}" for i in range(1, 6)}


def test_folder_errors(tmp_path):
    # both found by validate, before anything is written
    res = synth("validate", _folder_manifest(tmp_path))
    assert res.returncode == 2 and "stage[0].path: no such folder" in res.stderr
    _save(tmp_path / "imgs" / "a.png", np.zeros((8, 8, 3), np.uint8))
    res = synth("run", _folder_manifest(tmp_path, n=3))
    assert res.returncode == 2 and "stage[0]: dataset.num_samples is 3, but" in res.stderr and "holds only 1" in res.stderr
    assert not (tmp_path / "out").exists()


def test_folder_subfolder_labels_and_masks_folder(tmp_path):
    for cls in ("bg", "fg"):
        for i in range(2):
            _save(tmp_path / "imgs" / cls / f"{i}.png", np.full((16, 16, 3), 50 * i, np.uint8))
            _save(tmp_path / "masks" / cls / f"{i}.png", np.ones((16, 16), np.uint8))
    p = _pipeline(_folder_manifest(tmp_path, extra='labels = "subfolder"\nmasks = "masks"'))
    batch = p.run_batch([0, 1, 2, 3])
    assert [r["class"] for r in batch.records] == [0, 0, 1, 1]
    assert (batch.seg == 1).all()


def test_shards_source_reads_brace_patterns_with_masks(tmp_path):
    world = write_manifest(
        tmp_path,
        '[dataset]\nname = "w"\noutput = "world"\nnum_samples = 10\nshard_size = 4\n[[stage]]\nname = "shapes"\nsize = 16\n',
        "world.toml",
    )
    assert synth("run", world).returncode == 0
    m = write_manifest(
        tmp_path,
        """
[dataset]
name = "copy"
output = "out"
num_samples = 10
shard_size = 5
classes = ["background", "circle", "square", "triangle"]

[[stage]]
name = "shards"
urls = "world/w-{000000..000002}.tar"
""",
    )
    p = _pipeline(m)
    batch = p.run_batch(list(range(10)))
    original = [s for i in range(3) for s in iter_samples(tmp_path / "world" / f"w-{i:06d}.tar")]
    assert len(batch) == 10
    for row, s in zip(range(10), original):
        np.testing.assert_array_equal(batch.images[row], np.asarray(Image.open(__import__("io").BytesIO(s["png"]))))
        np.testing.assert_array_equal(batch.seg[row], np.asarray(Image.open(__import__("io").BytesIO(s["seg.png"]))))
        assert batch.records[row]["source"]["key"] == s["__key__"]
    bad = write_manifest(tmp_path, m.read_text().replace("{000000..000002}", "{000000..000005}"), "bad.toml")
    res = synth("run", bad)
    assert res.returncode == 2 and "no such shard" in res.stderr and "w-000003.tar" in res.stderr


def test_shapes_world_is_deterministic_with_exact_masks_and_disjoint_splits(tmp_path):
    from synth_shapes.world import CLASSES, render

    a_img, a_mask = render(0, 5, 32, 0.5, "train")
    b_img, b_mask = render(0, 5, 32, 0.5, "train")
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    t_img, _ = render(0, 5, 32, 0.5, "test")
    assert not np.array_equal(a_img, t_img)
    assert render(0, 5, 64, 0.5)[0].shape == (64, 64, 3)
    masks = np.stack([render(0, i, 32, 0.5)[1] for i in range(50)])
    share = np.bincount(masks.ravel(), minlength=len(CLASSES)) / masks.size
    assert share[0] > 0.5 and (share[1:] > 0.02).all()  # every class appears
    # The mask labels the pixels whose colour differs from the background (no drift between them).
    img, mask = render(0, 7, 32, 0.0)
    fg = mask > 0
    assert fg.any() and (~fg).any()


def test_difficulty_makes_scenes_busier_and_noisier():
    from synth_shapes.world import render

    def stats(d):
        pairs = [render(1, i, 32, d) for i in range(60)]
        classes = np.mean([len(np.unique(m)) for _, m in pairs])
        # Pixel noise + texture: mean absolute difference between horizontal neighbours.
        rough = np.mean([np.abs(np.diff(img.astype(int), axis=1)).mean() for img, _ in pairs])
        return classes, rough

    easy, hard = stats(0.0), stats(1.0)
    assert hard[0] > easy[0] + 0.3
    assert hard[1] > easy[1] * 1.5


def test_shapes_manifest_sets_classes_and_rejects_others(tmp_path):
    m = write_manifest(tmp_path, '[dataset]\nnum_samples = 2\n[[stage]]\nname = "shapes"\n')
    assert load_manifest(m).dataset.classes == ["background", "circle", "square", "triangle"]
    bad = write_manifest(tmp_path, '[dataset]\nnum_samples = 2\nclasses = ["a"]\n[[stage]]\nname = "shapes"\n', "bad.toml")
    res = synth("validate", bad)
    assert res.returncode == 2 and "the shapes world's classes are" in res.stderr


def _forged_png(path, width, height):
    """A tiny PNG whose header claims width x height: what a decompression bomb looks like."""
    import struct
    import zlib

    buf = io.BytesIO()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    path.write_bytes(bytes(data))


def test_image_too_large_is_skipped_naming_the_file(tmp_path):
    imgs = tmp_path / "imgs"
    _save(imgs / "a.png", np.full((16, 16, 3), 100, np.uint8))
    _forged_png(imgs / "huge.png", 13400, 13400)
    with pytest.raises(Image.DecompressionBombError):  # what PIL does with it: not an OSError
        Image.open(imgs / "huge.png")
    _save(imgs / "z.png", np.full((16, 16, 3), 100, np.uint8))
    res = synth("run", _folder_manifest(tmp_path, n=3))
    assert res.returncode == 0, res.stderr
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["num_samples"] == 2 and info["dropped_by_reason"] == {"folder: image too large": 1}
    (d,) = json.loads((tmp_path / "out" / "f-000000.stats.json").read_text())["dropped"]
    assert d["key"] == "s00000001" and d["detail"].startswith("huge.png: image too large: Image size (179560000 pixels) exceeds limit")
    assert "e.g. s00000001 (folder): huge.png: image too large" in res.stderr


def test_skips_name_the_image_and_mask_files(tmp_path):
    imgs = tmp_path / "imgs"
    for name in ("a", "b"):
        _save(imgs / f"{name}.png", np.full((16, 16, 3), 100, np.uint8))
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(imgs / "a.seg.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(imgs / "b.seg.png")
    assert synth("run", "-q", _folder_manifest(tmp_path, n=2)).returncode == 0
    (d,) = json.loads((tmp_path / "out" / "f-000000.stats.json").read_text())["dropped"]
    assert d["reason"] == "mask size 8x8 differs from image size 16x16"
    assert d["detail"] == "b.png: mask size 8x8 differs from image size 16x16 (mask b.seg.png)"
