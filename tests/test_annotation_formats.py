"""The annotation round trip (issue 31): `synth export` writes the images to label with the file
each tool imports; the tools' exports (COCO, CVAT for images 1.1, Label Studio), built here to
each format's published encoding, come back as exactly the masks drawn, keyed by sample, and
train the pixel head as masks drawn by hand would."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import synth, toy_manifest

CLASSES = ["background", "circle", "square", "triangle"]


def _truth(h=12, w=16):
    """A square (class 2) over a circle-ish blob (class 1): the later shape paints over."""
    m = np.zeros((h, w), np.int64)
    m[2:7, 2:10] = 1
    m[4:10, 6:12] = 2
    return m


# -- encoders as the formats publish them (what the tools write) ---------------------------------------
def coco_counts(mask: np.ndarray) -> list[int]:
    """Runs over the column-major mask, background first."""
    flat = mask.T.ravel()
    counts, value, n = [], False, 0
    for v in flat:
        if bool(v) == value:
            n += 1
        else:
            counts.append(n)
            value, n = bool(v), 1
    counts.append(n)
    return counts


def coco_string(counts: list[int]) -> str:
    """pycocotools' compressed RLE string."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def row_runs(mask: np.ndarray) -> list[int]:
    return coco_counts(mask.T)  # row-major runs of mask = column-major runs of its transpose


def rle_pack(values: list[int], word: int = 8, sizes=(3, 6, 10, 16)) -> list[int]:
    """Label Studio's brush encoding (rle-pack): a literal chunk for the first three words, then
    one repeat chunk per run."""
    bits: list[int] = []

    def put(v, n):
        bits.extend((v >> (n - 1 - i)) & 1 for i in range(n))

    put(len(values), 32)
    put(word - 1, 5)
    for s in sizes:
        put(s - 1, 4)
    put(0, 1), put(0, 2), put(2, sizes[0])
    for v in values[:3]:
        put(v, word)
    i = 3
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i] and j - i < (1 << sizes[-1]):
            j += 1
        k = next(k for k, s in enumerate(sizes) if j - i - 1 < (1 << s))
        put(1, 1), put(k, 2), put(j - i - 1, sizes[k]), put(values[i], word)
        i = j
    bits += [0] * (-len(bits) % 8)
    return [int("".join(map(str, bits[b : b + 8])), 2) for b in range(0, len(bits), 8)]


def _rgba_alpha(mask: np.ndarray) -> list[int]:
    rgba = np.zeros((*mask.shape, 4), np.int64)
    rgba[mask] = [255, 0, 0, 255]
    return rgba.ravel().tolist()


# -- the exports, read -----------------------------------------------------------------------------
def test_coco_polygons_uncompressed_and_compressed_rle_come_back_exactly(tmp_path):
    from synth.annotation_formats import read_export

    truth = _truth()
    circle, square = truth == 1, (truth == 2)
    circle_under = np.zeros_like(circle)
    circle_under[2:7, 2:10] = True
    data = {
        "images": [{"id": 7, "file_name": "images/s00000003.png", "width": 16, "height": 12}, {"id": 8, "file_name": "images/s00000004.png", "width": 16, "height": 12}],
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "segmentation": {"size": [12, 16], "counts": coco_counts(circle_under)}},
            {"id": 2, "image_id": 7, "category_id": 2, "segmentation": [[6, 4, 11, 4, 11, 9, 6, 9]]},
            {"id": 3, "image_id": 8, "category_id": 2, "segmentation": {"size": [12, 16], "counts": coco_string(coco_counts(square))}},
        ],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    got = read_export(path, CLASSES)
    assert np.array_equal(got["s00000003"], truth)
    assert np.array_equal(got["s00000004"], square * 2)


def test_cvat_polygons_and_masks_come_back_exactly(tmp_path):
    from synth.annotation_formats import read_export

    truth = _truth()
    sq = (truth == 2)[4:10, 6:12]
    root = ET.Element("annotations")
    im = ET.SubElement(root, "image", id="0", name="s00000005.png", width="16", height="12")
    ET.SubElement(im, "polygon", label="circle", points="2.0,2.0;9.0,2.0;9.0,6.0;2.0,6.0", z_order="0")
    ET.SubElement(im, "mask", label="square", rle=", ".join(map(str, row_runs(sq))), left="6", top="4", width="6", height="6", z_order="1")
    path = tmp_path / "annotations.xml"
    ET.ElementTree(root).write(path)
    assert np.array_equal(read_export(path, CLASSES)["s00000005"], truth)


def test_label_studio_polygons_and_brush_masks_come_back_exactly(tmp_path):
    from synth.annotation_formats import read_export

    truth = _truth()
    tasks = [{
        "id": 1, "data": {"image": "/data/local-files/?d=images/s00000006.png"}, "meta": {"key": "s00000006"},
        "annotations": [{"result": [
            {"type": "polygonlabels", "original_width": 16, "original_height": 12,
             "value": {"points": [[2 * 100 / 16, 2 * 100 / 12], [9 * 100 / 16, 2 * 100 / 12], [9 * 100 / 16, 6 * 100 / 12], [2 * 100 / 16, 6 * 100 / 12]], "polygonlabels": ["circle"]}},
            {"type": "brushlabels", "original_width": 16, "original_height": 12,
             "value": {"format": "rle", "rle": rle_pack(_rgba_alpha(truth == 2)), "brushlabels": ["square"]}},
        ]}],
    }]
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(tasks))
    assert np.array_equal(read_export(path, CLASSES)["s00000006"], truth)


def test_a_label_outside_the_classes_is_one_line(tmp_path):
    from synth.annotation_formats import read_export
    from synth.errors import UsageError

    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}], "categories": [{"id": 1, "name": "hexagon"}],
                                "annotations": [{"id": 9, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 3, 0, 3, 3]]}]}))
    with pytest.raises(UsageError, match="annotation 9: label 'hexagon' is not one of"):
        read_export(path, CLASSES)


# -- export, then labels back into a labeller ------------------------------------------------------
@pytest.mark.parametrize("to, files", [("coco", ["coco.json"]), ("cvat", ["cvat-labels.json"]), ("label-studio", ["tasks.json", "label-config.xml"])])
def test_export_writes_the_picked_images_with_the_tools_file(tmp_path, to, files):
    m = toy_manifest(tmp_path, n=20, shard=10)
    assert synth("run", "-q", m).returncode == 0
    res = synth("export", tmp_path / "out", "--to", to, "-o", tmp_path / "lab", "--pick", 5)
    assert res.returncode == 0, res.stderr
    images = sorted(p.stem for p in (tmp_path / "lab" / "images").glob("*.png"))
    assert len(images) == 5 and images == (tmp_path / "lab" / "picked.txt").read_text().split()
    for f in files:
        assert (tmp_path / "lab" / f).is_file()
    if to == "coco":
        coco = json.loads((tmp_path / "lab" / "coco.json").read_text())
        assert [im["file_name"] for im in coco["images"]] == [f"images/{k}.png" for k in images]
        assert [c["name"] for c in coco["categories"]] == ["circle", "square", "triangle"]
    res = synth("export", tmp_path / "out", "--to", to, "-o", tmp_path / "lab")
    assert res.returncode == 2 and "not empty" in res.stderr  # nothing overwritten


def test_a_tools_export_is_the_annotations_of_a_labeller(tmp_path, models):
    """Masks drawn in a tool on exported samples load as the pixel head's annotations: keyed by
    sample, with the images and latents from the run's shards."""
    from synth.annotations import AnnotationsConfig, load_examples
    from synth.plugins import load_registry
    from synth.protocols import RunContext
    from conftest import diffusers_manifest

    m = diffusers_manifest(tmp_path, models["ddpm"], dataset=f"classes = {json.dumps(CLASSES)}", n=4, shard=4)
    assert synth("run", "-q", m).returncode == 0
    truth = np.zeros((16, 16), np.int64)
    truth[3:9, 4:12] = 3
    coco = {"images": [{"id": 1, "file_name": "images/s00000002.png", "width": 16, "height": 16}], "categories": [{"id": 3, "name": "triangle"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": {"size": [16, 16], "counts": coco_string(coco_counts(truth == 3))}}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    ctx = RunContext(seed=0, manifest_dir=tmp_path, classes=CLASSES, registry=load_registry())
    ex = load_examples(AnnotationsConfig(shards="out", masks="coco.json"), ctx, "stage 'pixelhead'")
    assert ex.keys == ["s00000002"] and np.array_equal(ex.masks[0], truth) and ex.kind == "generated"
    assert ex.latents[0] is not None and ex.latents[0].shape == (3, 16, 16)
