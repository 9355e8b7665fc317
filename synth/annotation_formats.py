"""Annotation tools' files, both ways: the images to label written with the file each tool imports
(COCO, CVAT, Label Studio), and the tools' exports read back into class-id masks keyed by sample.

Formats, as each tool publishes them:
- COCO (instances JSON): ``images`` (id, file_name, width, height), ``categories`` (id, name),
  ``annotations`` (image_id, category_id, segmentation: polygons ``[[x1, y1, ...], ...]``, or
  RLE ``{"size": [h, w], "counts": [...]}`` uncompressed, or the compressed string of
  pycocotools; runs alternate background and object, column-major, background first).
- CVAT for images 1.1 (XML): ``<image name width height>`` holding ``<polygon label points="x,y;x,y">``
  and ``<mask label rle="n0, n1, ..." left top width height>`` (runs over the mask's box,
  row-major, background first).
- Label Studio (JSON export of tasks): each task's ``data.image`` and ``annotations[].result[]``
  with ``polygonlabels`` (points in percent of the image) or ``brushlabels`` (``format: "rle"``:
  the rle-pack bit stream of the RGBA mask, object where alpha is set).
A sample's key is its image file's stem (synth export names them KEY.png). Later shapes paint
over earlier ones (the tools' z-order); unlabelled pixels are class 0.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .errors import UsageError

FORMATS = ("coco", "cvat", "label-studio")


# -- shapes to masks -------------------------------------------------------------------------------
def polygon_mask(points: list[tuple[float, float]], height: int, width: int) -> np.ndarray:
    """Pixels inside a polygon (pixel-centre convention of the tools' rasterisers)."""
    img = Image.new("L", (width, height), 0)
    if len(points) >= 3:
        ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in points], fill=1, outline=1)
    return np.asarray(img, bool)


def coco_string_to_counts(text: str) -> list[int]:
    """pycocotools' compressed RLE string back to run lengths (each count in 5-bit groups, 48 added
    to each character, 0x20 marking more to come, later counts relative to the one two before)."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def coco_rle_mask(segmentation: dict, height: int, width: int) -> np.ndarray:
    h, w = segmentation.get("size", [height, width])
    counts = segmentation["counts"]
    counts = coco_string_to_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    flat = np.zeros(h * w, bool)
    pos, value = 0, False
    for n in counts:
        flat[pos : pos + n] = value
        pos += n
        value = not value
    return flat.reshape(w, h).T  # column-major


def row_runs_mask(runs: list[int], height: int, width: int) -> np.ndarray:
    flat = np.zeros(height * width, bool)
    pos, value = 0, False
    for n in runs:
        flat[pos : pos + n] = value
        pos += n
        value = not value
    return flat.reshape(height, width)


class _Bits:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n: int) -> int:
        out = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            out = (out << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return out


def label_studio_brush_mask(rle: list[int], height: int, width: int) -> np.ndarray:
    """Label Studio's brush RLE (rle-pack): 32 bits of value count, 5 of word size - 1, four
    4-bit run-length sizes - 1, then chunks: a flag bit, 2 bits choosing a size, a run length - 1;
    a set flag repeats one word, a clear one lists the words. The words are the RGBA mask."""
    bits = _Bits(bytes(int(b) & 0xFF for b in rle))
    num = bits.read(32)
    word = bits.read(5) + 1
    sizes = [bits.read(4) + 1 for _ in range(4)]
    out = np.zeros(num, np.int64)
    i = 0
    while i < num:
        repeat = bits.read(1)
        j = i + 1 + bits.read(sizes[bits.read(2)])
        if repeat:
            out[i:j] = bits.read(word)
            i = j
        else:
            for k in range(i, j):
                out[k] = bits.read(word)
            i = j
    if num != height * width * 4:
        raise ValueError(f"a brush mask of {num} values does not fit a {width}x{height} RGBA image")
    return out.reshape(height, width, 4)[..., 3] > 0


# -- the tools' exports, read --------------------------------------------------------------------
def _class_id(name: str, classes: list[str], where: str) -> int:
    if name not in classes:
        raise UsageError(f"{where}: label {name!r} is not one of [dataset].classes {classes}")
    return classes.index(name)


def _paint(shapes: list[tuple[int, np.ndarray]], height: int, width: int) -> np.ndarray:
    out = np.zeros((height, width), np.int64)
    for cls, mask in shapes:
        out[mask] = cls
    return out


def read_coco(path: Path, classes: list[str]) -> dict[str, np.ndarray]:
    data = _json(path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise UsageError(f"{path}: not a COCO file (no images and annotations)")
    names = {c["id"]: c["name"] for c in data.get("categories", [])}
    images = {im["id"]: im for im in data["images"]}
    shapes: dict[int, list] = {i: [] for i in images}
    for n, ann in enumerate(data["annotations"]):
        where = f"{path.name}: annotation {ann.get('id', n)}"
        im = images.get(ann.get("image_id"))
        if im is None:
            raise UsageError(f"{where}: image_id {ann.get('image_id')} is not among its images")
        if ann.get("category_id") not in names:
            raise UsageError(f"{where}: category_id {ann.get('category_id')} is not among its categories")
        cls = _class_id(names[ann["category_id"]], classes, where)
        h, w = int(im["height"]), int(im["width"])
        seg = ann.get("segmentation")
        if isinstance(seg, dict):
            mask = coco_rle_mask(seg, h, w)
        elif isinstance(seg, list) and seg:
            mask = np.zeros((h, w), bool)
            for poly in seg:
                mask |= polygon_mask(list(zip(poly[0::2], poly[1::2])), h, w)
        else:
            raise UsageError(f"{where}: no segmentation (polygons or RLE)")
        shapes[ann["image_id"]].append((cls, mask))
    return {Path(im["file_name"]).stem: _paint(shapes[i], int(im["height"]), int(im["width"])) for i, im in images.items()}


def read_cvat(path: Path, classes: list[str]) -> dict[str, np.ndarray]:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise UsageError(f"{path}: not readable as CVAT XML ({e})") from None
    out = {}
    for im in root.iter("image"):
        h, w = int(im.get("height")), int(im.get("width"))
        name = im.get("name", "")
        shapes = []
        elements = [e for e in im if e.tag in ("polygon", "mask", "box")]
        elements.sort(key=lambda e: int(e.get("z_order", 0)))  # stable: document order within a layer
        for e in elements:
            where = f"{path.name}: image {name}"
            cls = _class_id(e.get("label", ""), classes, where)
            if e.tag == "polygon":
                pts = [tuple(map(float, p.split(","))) for p in e.get("points", "").split(";") if p]
                mask = polygon_mask(pts, h, w)
            elif e.tag == "box":
                mask = np.zeros((h, w), bool)
                x0, y0, x1, y1 = (float(e.get(k)) for k in ("xtl", "ytl", "xbr", "ybr"))
                mask[int(round(y0)) : int(round(y1)), int(round(x0)) : int(round(x1))] = True
            else:
                left, top, bw, bh = (int(float(e.get(k))) for k in ("left", "top", "width", "height"))
                runs = [int(float(r)) for r in e.get("rle", "").split(",") if r.strip()]
                mask = np.zeros((h, w), bool)
                mask[top : top + bh, left : left + bw] = row_runs_mask(runs, bh, bw)
            shapes.append((cls, mask))
        out[Path(name).stem] = _paint(shapes, h, w)
    if not out:
        raise UsageError(f"{path}: no <image> in this CVAT file")
    return out


def read_label_studio(path: Path, classes: list[str]) -> dict[str, np.ndarray]:
    tasks = _json(path)
    if not isinstance(tasks, list):
        raise UsageError(f"{path}: not a Label Studio export (expected a list of tasks)")
    out = {}
    for t, task in enumerate(tasks):
        image = str((task.get("data") or {}).get("image", ""))
        key = (task.get("meta") or {}).get("key") or Path(image.split("?d=")[-1]).stem
        results = [r for a in task.get("annotations") or [] for r in a.get("result") or []]
        size = next(((int(r["original_height"]), int(r["original_width"])) for r in results if "original_height" in r), None)
        if size is None:
            continue  # a task nobody labelled
        h, w = size
        shapes = []
        for r in results:
            value, kind = r.get("value") or {}, r.get("type")
            where = f"{path.name}: task {task.get('id', t)}"
            if kind == "polygonlabels":
                cls = _class_id(value["polygonlabels"][0], classes, where)
                mask = polygon_mask([(x * w / 100.0, y * h / 100.0) for x, y in value["points"]], h, w)
            elif kind == "brushlabels" and value.get("format") == "rle":
                cls = _class_id(value["brushlabels"][0], classes, where)
                try:
                    mask = label_studio_brush_mask(value["rle"], h, w)
                except (ValueError, IndexError) as e:
                    raise UsageError(f"{where}: unreadable brush mask ({e})") from None
            else:
                continue
            shapes.append((cls, mask))
        out[key] = _paint(shapes, h, w)
    return out


def read_export(path: Path, classes: list[str]) -> dict[str, np.ndarray]:
    """{sample key: class-id mask} from a COCO, CVAT or Label Studio export (told apart by content)."""
    path = Path(path)
    if path.suffix.lower() == ".xml":
        return read_cvat(path, classes)
    data = _json(path)
    return read_label_studio(path, classes) if isinstance(data, list) else read_coco(path, classes)


def _json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not readable as JSON ({type(e).__name__})") from None


# -- the images to label, written for a tool ---------------------------------------------------------
def _hex(rgb) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def write_for_tool(fmt: str, folder: Path, keys: list[str], sizes: list[tuple[int, int]], classes: list[str], palette: list) -> Path:
    """The file the tool imports beside ``folder``/images/KEY.png; returns its path."""
    labels = [(i, c) for i, c in enumerate(classes) if i > 0 or c != "background"]
    if fmt == "coco":
        data = {
            "info": {"description": "images to label, exported by synth"},
            "images": [{"id": i + 1, "file_name": f"images/{k}.png", "width": w, "height": h} for i, (k, (h, w)) in enumerate(zip(keys, sizes))],
            "categories": [{"id": i, "name": c} for i, c in labels],
            "annotations": [],
        }
        path = folder / "coco.json"
        path.write_text(json.dumps(data, indent=1))
    elif fmt == "cvat":
        data = [{"name": c, "color": _hex(palette[i]) if i < len(palette) else "#ff0000", "type": "any", "attributes": []} for i, c in labels]
        path = folder / "cvat-labels.json"  # CVAT: create a task with these labels ("Raw" editor) and the images
        path.write_text(json.dumps(data, indent=1))
    elif fmt == "label-studio":
        tasks = [{"id": i + 1, "data": {"image": f"/data/local-files/?d=images/{k}.png"}, "meta": {"key": k}} for i, k in enumerate(keys)]
        (folder / "tasks.json").write_text(json.dumps(tasks, indent=1))
        rows = "\n".join(f'    <Label value="{c}" background="{_hex(palette[i]) if i < len(palette) else "#ff0000"}"/>' for i, c in labels)
        config = f'<View>\n  <Image name="image" value="$image" zoom="true"/>\n  <BrushLabels name="brush" toName="image">\n{rows}\n  </BrushLabels>\n  <PolygonLabels name="polygon" toName="image">\n{rows}\n  </PolygonLabels>\n</View>\n'
        path = folder / "label-config.xml"
        path.write_text(config)
        path = folder / "tasks.json"
    else:
        raise UsageError(f"--to: {fmt!r} is not one of {', '.join(FORMATS)}")
    return path
