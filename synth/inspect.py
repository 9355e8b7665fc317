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


def contact_sheet(path: Path, out: Path, count: int = 64, columns: int = 8, cell: int = 128) -> int:
    info = _dataset_info(path)
    samples = []
    for tar in shard_paths(path):
        for s in iter_samples(tar, limit=count - len(samples)):
            samples.append(s)
        if len(samples) >= count:
            break
    if not samples:
        raise UsageError(f"{path}: no samples to preview")
    rows = -(-len(samples) // columns)
    cols = min(columns, len(samples))
    sheet = Image.new("RGB", (cols * cell, rows * cell), (255, 255, 255))
    colours = None
    for i, s in enumerate(samples):
        img = _decode_image(s)
        if "seg.png" in s:
            seg = np.asarray(Image.open(io.BytesIO(s["seg.png"])))
            if colours is None:
                n = len(info["palette"]) if info and info.get("palette") else int(seg.max()) + 1
                pal = info["palette"] if info and info.get("palette") else palette(max(n, 256))
                colours = np.array(pal + palette(256)[len(pal):], dtype=np.float32)
            img = overlay(img, seg, colours)
        tile = Image.fromarray(img)
        scale = cell / max(tile.size)
        tile = tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))), Image.NEAREST if scale >= 1 else Image.BILINEAR)
        sheet.paste(tile, ((i % columns) * cell, (i // columns) * cell))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return len(samples)
