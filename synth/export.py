"""`synth export OUTPUT --to coco|cvat|label-studio --out DIR [--pick K]`: the images to label, as
an annotation tool imports them. With --pick, the K samples greedy k-center finds most varied
(the select stage's choice) in a feature extractor's space, or, by default, in a small colour
layout of each image (an 8x8 thumbnail and a colour histogram: no model needed). The labels come
back as the pixel head's or the attention stage's annotations: `masks = "the tool's export"`
beside `shards = OUTPUT` (synth.annotation_formats reads it)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .annotation_formats import write_for_tool
from .errors import UsageError
from .reading import iter_samples, read_dataset_info

IMAGE_FIELDS = ("png", "jpg", "jpeg", "webp")


def layout_features(images: np.ndarray) -> np.ndarray:
    """Model-free features for picking varied images: an 8x8 colour thumbnail and an 8-bin
    histogram per channel, each part scaled to unit length."""
    thumbs = np.stack([np.asarray(Image.fromarray(im).resize((8, 8), Image.BILINEAR), np.float32).ravel() / 255 for im in images])
    hists = np.stack([np.concatenate([np.histogram(im[..., c], bins=8, range=(0, 256))[0] for c in range(3)]).astype(np.float32) for im in images])
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)  # noqa: E731
    return np.concatenate([unit(thumbs), unit(hists)], 1)


def export(output: Path, to: str, out: Path, pick: int | None = None, extractor: str | None = None) -> dict:
    info = read_dataset_info(output)
    keys, images = [], []
    for tar in sorted(p for p in Path(output).glob("*.tar") if not p.name.startswith(".")):
        for s in iter_samples(tar):
            field = next((f for f in IMAGE_FIELDS if f in s), None)
            if field is None:
                continue
            keys.append(s["__key__"])
            images.append(np.asarray(Image.open(io.BytesIO(s[field])).convert("RGB")))
    if not keys:
        raise UsageError(f"{output}: no samples to export")
    chosen = list(range(len(keys)))
    how = "every sample"
    if pick is not None and pick < len(keys):
        from .selection import k_center

        feats = _features(np.stack(images), extractor, info, output) if extractor else layout_features(np.stack(images))
        chosen = sorted(k_center(feats, np.arange(len(keys)), pick))
        how = f"{pick} of {len(keys)} by k-center on {'the ' + extractor + ' extractor' if extractor else 'colour layout'}"
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out: {out} is not empty; give a new folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    for i in chosen:
        Image.fromarray(images[i]).save(out / "images" / f"{keys[i]}.png")
    picked = [keys[i] for i in chosen]
    (out / "picked.txt").write_text("\n".join(picked) + "\n")
    tool_file = write_for_tool(to, out, picked, [images[i].shape[:2] for i in chosen], list(info.get("classes") or []), info.get("palette") or [])
    return {"images": len(picked), "how": how, "file": str(tool_file), "folder": str(out)}


def _features(images: np.ndarray, spec: str, info: dict, output: Path) -> np.ndarray:
    """Features through a registered extractor (a name, or a TOML inline table)."""
    import tomllib

    from . import extractors
    from .plugins import load_registry
    from .protocols import RunContext

    table = spec
    if spec.strip().startswith("{"):
        try:
            table = tomllib.loads(f"t = {spec}")["t"]
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"--extractor: not a name or an inline TOML table: {e}") from None
    context = RunContext(seed=0, manifest_dir=Path(output), classes=list(info.get("classes") or []), registry=load_registry(), quiet=True)
    return np.asarray(extractors.get(context, table).embed(images), np.float32)


def describe(result: dict, to: str) -> str:
    next_step = {
        "coco": "import images/ and coco.json into your COCO tool",
        "cvat": "create a CVAT task with the labels of cvat-labels.json and the files of images/; export it as 'CVAT for images 1.1'",
        "label-studio": "create a Label Studio project with label-config.xml, serve images/ as local files, import tasks.json; export JSON",
    }[to]
    return f"wrote {result['images']} images ({result['how']}) to {result['folder']}: {next_step}; then give the export as masks = \"...\" with shards = the output"
