"""`synth inspect` and `synth preview`: look at shards without writing code."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .card import palette
from .errors import UsageError
from .reading import iter_samples, shard_paths

IMAGE_FIELDS = ("png", "jpg", "jpeg", "webp")


def _dataset_info(path: Path) -> dict | None:
    folder = path if path.is_dir() else path.parent
    p = folder / "dataset.json"
    if p.exists():
        try:
            return json.loads(p.read_text())
        except ValueError:
            return None
    return None


def inspect_path(path: Path, n_samples: int = 3) -> dict[str, Any]:
    tars = shard_paths(path)
    info = _dataset_info(path)
    classes = info.get("classes", []) if info else []
    counts: dict[str, int] = {}
    fields: Counter = Counter()
    class_counts: Counter = Counter()
    sizes: Counter = Counter()
    examples = []
    for tar in tars:
        n = 0
        for s in iter_samples(tar):
            n += 1
            fields.update(k for k in s if k != "__key__")
            if "cls" in s:
                class_counts[int(s["cls"])] += 1
            if len(examples) < n_samples:
                meta = json.loads(s["json"]) if "json" in s else {}
                img = next((s[f] for f in IMAGE_FIELDS if f in s), None)
                if img is not None:
                    sizes[Image.open(io.BytesIO(img)).size] += 1
                examples.append({"key": s["__key__"], "shard": tar.name, "json": meta})
        counts[tar.name] = n
    total = sum(counts.values())
    return {
        "path": str(path),
        "num_shards": len(tars),
        "num_samples": total,
        "samples_per_shard": counts,
        "fields": {k: v for k, v in sorted(fields.items())},
        "fields_consistent": all(v == total for v in fields.values()),
        "classes": classes,
        "class_counts": {(classes[k] if k < len(classes) else str(k)): v for k, v in sorted(class_counts.items())},
        "image_sizes": {f"{w}x{h}": v for (w, h), v in sizes.items()},
        "dataset": {k: info[k] for k in ("name", "num_samples", "num_dropped", "dropped_by_reason", "generator") if k in info} if info else None,
        "examples": examples,
    }


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"{r['path']}: {r['num_samples']} samples in {r['num_shards']} shards",
        "fields: " + ", ".join(f"{k} ({v})" for k, v in r["fields"].items())
        + ("" if r["fields_consistent"] else "  [NOT every sample has every field]"),
    ]
    if r["classes"] or r["class_counts"]:
        lines.append("classes: " + (", ".join(f"{k} {v}" for k, v in r["class_counts"].items()) or ", ".join(r["classes"])))
    if r["dataset"]:
        d = r["dataset"]
        gen = d.get("generator")
        made_by = f"generator {gen.get('name')} {gen.get('model', '')}".strip() if gen else "no generator (real images)"
        lines.append(f"dataset {d.get('name')}: {made_by}; dropped {d.get('num_dropped', 0)}")
        for reason, n in (d.get("dropped_by_reason") or {}).items():
            lines.append(f"  dropped {n}: {reason}")
    for ex in r["examples"]:
        meta = {k: v for k, v in ex["json"].items() if k not in ("plugins", "generator")}
        lines.append(f"{ex['key']} ({ex['shard']}): {json.dumps(meta, sort_keys=True)}")
    return "\n".join(lines)


def _decode_image(s: dict) -> np.ndarray:
    data = next((s[f] for f in IMAGE_FIELDS if f in s), None)
    if data is None:
        raise UsageError(f"sample {s['__key__']} has no image field")
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def overlay(image: np.ndarray, seg: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over the image; class 0 (background) stays untouched."""
    if seg.shape != image.shape[:2]:
        seg = np.asarray(Image.fromarray(seg).resize(image.shape[1::-1], Image.NEAREST))
    colour = colours[np.clip(seg, 0, len(colours) - 1)]
    mask = (seg > 0)[..., None]
    out = np.where(mask, (1 - alpha) * image + alpha * colour, image)
    return out.astype(np.uint8)


def _colours(info: dict | None, seg: np.ndarray) -> np.ndarray:
    n = len(info["palette"]) if info and info.get("palette") else int(seg.max()) + 1
    pal = info["palette"] if info and info.get("palette") else palette(max(n, 256))
    return np.array(pal + palette(256)[len(pal):], dtype=np.float32)


def _tile(img: np.ndarray, cell: int) -> Image.Image:
    tile = Image.fromarray(img)
    scale = cell / max(tile.size)
    return tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))), Image.NEAREST if scale >= 1 else Image.BILINEAR)


def _legend(names: list[str], colours: np.ndarray, width: int) -> Image.Image:
    """One row per few classes: a colour swatch and the class name (id: name)."""
    from PIL import ImageDraw

    entries = [f"{i}: {n}" for i, n in enumerate(names)]
    per_row = max(1, width // 150)
    rows = -(-len(entries) // per_row) if entries else 0
    strip = Image.new("RGB", (width, 6 + 18 * rows), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for i, text in enumerate(entries):
        x, y = 6 + (i % per_row) * 150, 4 + (i // per_row) * 18
        c = tuple(int(v) for v in colours[i])
        draw.rectangle([x, y, x + 12, y + 12], fill=c, outline=(0, 0, 0))
        draw.text((x + 18, y), text, fill=(0, 0, 0))
    return strip


def _group_layout(samples: list[dict]) -> list[tuple[int, int]] | None:
    """(row, column) per sample when samples come in groups (a parent and its views, an
    interpolation, a prompt edit): one group per row, parent first. None when there are none."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        try:
            g = json.loads(s.get("json", b"{}")).get("group")
        except ValueError:
            g = None
        groups.setdefault(g if g is not None else f"\0{i}", []).append(i)
    if all(len(v) == 1 for v in groups.values()):
        return None
    slots: list[tuple[int, int]] = [(0, 0)] * len(samples)
    for row, members in enumerate(groups.values()):
        for col, i in enumerate(members):
            slots[i] = (row, col)
    return slots


def instance_colours(inst: np.ndarray) -> np.ndarray:
    """An RGB image of an instance map: each id its own colour (golden-ratio hues), 0 black."""
    import colorsys

    ids = np.arange(int(inst.max(initial=0)) + 1)
    table = np.array([(0, 0, 0)] + [tuple(int(255 * v) for v in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.95)) for i in ids[1:]], np.uint8)
    return table[inst]


def instance_outlines(inst: np.ndarray) -> np.ndarray:
    """Pixels of an instance whose right or lower neighbour belongs to another instance (or none)."""
    edge = np.zeros(inst.shape, bool)
    edge[:, :-1] |= inst[:, :-1] != inst[:, 1:]
    edge[:-1, :] |= inst[:-1, :] != inst[1:, :]
    edge[:, 1:] |= inst[:, 1:] != inst[:, :-1]
    edge[1:, :] |= inst[1:, :] != inst[:-1, :]
    return edge & (inst > 0)


def contact_sheet(path: Path, out: Path, count: int = 64, columns: int = 8, cell: int = 128, style: str = "side", by_group: bool | None = None) -> int:
    """A grid of samples. With labels (seg.png): each image beside its label map (``side``,
    with a class legend below) or the labels blended over the image (``overlay``). Instances
    (inst.png) are outlined in white on the label map, or coloured one by one without seg.png."""
    info = _dataset_info(path)
    samples = []
    for tar in shard_paths(path):
        for s in iter_samples(tar, limit=count - len(samples)):
            samples.append(s)
        if len(samples) >= count:
            break
    if not samples:
        raise UsageError(f"{path}: no samples to preview")
    with_seg = any("seg.png" in s for s in samples)
    with_inst = any("inst.png" in s for s in samples)
    side = (with_seg or with_inst) and style == "side"
    width = 2 * cell + 4 if side else cell  # image | 4 px gap | label map
    slots = _group_layout(samples) if by_group is not False else None
    grouped = slots is not None
    if slots is None:
        slots = [(i // columns, i % columns) for i in range(len(samples))]
    rows = max(r for r, _ in slots) + 1
    cols = max(c for _, c in slots) + 1
    gap = 4 if side or grouped else 0  # white lines between groups (and between image and labels)
    sheet = Image.new("RGB", (cols * (width + gap), rows * (cell + gap)), (255, 255, 255))
    colours = None
    for i, s in enumerate(samples):
        img = _decode_image(s)
        row, col = slots[i]
        x, y = col * (width + gap), row * (cell + gap)
        inst = np.asarray(Image.open(io.BytesIO(s["inst.png"]))).astype(np.int64) if "inst.png" in s else None
        if "seg.png" in s:
            seg = np.asarray(Image.open(io.BytesIO(s["seg.png"])))
            colours = _colours(info, seg) if colours is None else colours
            if side:
                sheet.paste(_tile(img, cell), (x, y))
                label = colours[np.clip(seg, 0, len(colours) - 1)].astype(np.uint8)
                if inst is not None:
                    label[instance_outlines(inst)] = 255
                sheet.paste(_tile(label, cell), (x + cell + 4, y))
                continue
            img = overlay(img, seg, colours)
        elif inst is not None and side:
            sheet.paste(_tile(img, cell), (x, y))
            sheet.paste(_tile(instance_colours(inst), cell), (x + cell + 4, y))
            continue
        sheet.paste(_tile(img, cell), (x, y))
    if with_seg and colours is not None:
        names = list(info.get("classes") or []) if info else []
        top = int(max(int(np.asarray(Image.open(io.BytesIO(s["seg.png"]))).max()) for s in samples if "seg.png" in s))
        names = names or [f"class {k}" for k in range(top + 1)]
        legend = _legend(names, colours, sheet.width)
        full = Image.new("RGB", (sheet.width, sheet.height + legend.height), (255, 255, 255))
        full.paste(sheet, (0, 0))
        full.paste(legend, (0, sheet.height))
        sheet = full
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return len(samples)
