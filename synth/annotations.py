"""Labelled examples for a labeller (the pixel head, the attention labeller's calibration): real
images with masks from any source stage, or masks drawn on generated samples of an earlier run
(keyed by sample key; the image comes from the shards). A core kit: labeller plugins share it
rather than each reading annotations its own way.

Annotations are few and precious, so unlike a source's bulk reading every problem here is an
error naming the file and sample, never a silent skip.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from .errors import UsageError
from .protocols import PluginConfig, RunContext
from .refs import ExtractorRef, SourceRef


class AnnotationsConfig(PluginConfig):
    """Where the labelled examples come from: real images with masks, or generated samples."""

    source: SourceRef | None = Field(
        None, description="A source stage table whose samples carry masks, e.g. {name = \"shapes\", split = \"train\"}"
    )
    count: int = Field(8, ge=1, le=100000, description="How many labelled images to read from the source")
    pick_from: int | None = Field(
        None,
        ge=1,
        le=100000,
        description="Label the `count` most varied of the source's first pick_from images (greedy k-center in pick_extractor's "
        "space, the select stage's choice) instead of its first `count`: which images of an unlabelled pool to label",
    )
    pick_extractor: ExtractorRef | None = Field(
        None, description="Features pick_from chooses by (default with pick_from: \"generator\", the run's own, which the pixel head reads)"
    )
    shards: str | None = Field(None, description="Shards of an earlier synth run (path, brace pattern or output folder)")
    masks: str | None = Field(
        None,
        description="Class-id masks for samples of `shards`: a folder of KEY.png, or an annotation tool's export "
        "(COCO or Label Studio JSON, CVAT for images XML) of the images `synth export` wrote",
    )

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.source is None) == (self.shards is None):
            raise ValueError("give either source (labelled real images) or shards + masks (labelled generated samples)")
        if (self.shards is None) != (self.masks is None):
            raise ValueError("shards and masks go together")
        if self.source is not None and not isinstance(self.source.get("name"), str):
            raise ValueError("source needs a name, e.g. source = {name = \"folder\", path = \"labelled/\"}")
        if self.pick_from is not None:
            if self.source is None:
                raise ValueError("pick_from chooses among a source's images; with shards + masks, the masks say which were labelled")
            if self.pick_from < self.count:
                raise ValueError(f"pick_from ({self.pick_from}) must be at least count ({self.count})")
            if self.pick_extractor is None:  # set here, so validation checks the generator has features
                self.pick_extractor = "generator"
        elif self.pick_extractor is not None:
            raise ValueError("pick_extractor says how pick_from chooses; give pick_from too")
        return self


def replayable(record: dict) -> bool:
    """True when the sample's image is exactly what its latent decodes to (no op after generation
    changed it), so its own denoising path can be replayed."""
    # one op, its source's: nothing changed the image since. Asked only of samples that carry a
    # latent, whose source made the image by decoding it (a real image carries none, an
    # inverted one has the invert op after its source)
    return len(record.get("lineage") or []) == 1


MASK_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L")
IMAGE_FIELDS = ("png", "jpg", "jpeg", "webp")


@dataclass
class Examples:
    images: np.ndarray  # (N, H, W, 3) uint8
    masks: np.ndarray  # (N, H, W) int64 class ids
    conditions: list[dict]
    keys: list[str]
    kind: str  # "real" | "generated"
    latents: list | None = None  # per example: its initial latent when it is an untouched generated sample
    decode: list | None = None  # per example: its record's decode {"index", "seed"} (a stochastic sampler's noise)
    # per example: the image-level tags its source recorded (None where it gave none); kept out of
    # the conditions (and so the digest) until a labeller's generator conditions on tags
    tags: list | None = None

    def __post_init__(self):
        self.conditions = list(self.conditions)

    def with_tags(self, where: str, model: str) -> "Examples":
        """These examples with each one's tags in its condition, for a generator conditioned on
        tags (its features of an image depend on them, as at generation); one without tags is an
        error naming it."""
        conditions = []
        for i, (cond, key) in enumerate(zip(self.conditions, self.keys)):
            if "tags" not in cond:
                tags = self.tags[i] if self.tags is not None else None
                if tags is None:
                    raise UsageError(f"{where}: labelled image {key} has no tags, and {model} is conditioned on tags; "
                                     "give the source its tags (for a folder, a tags file beside it)")
                cond = {**cond, "tags": list(tags)}
            conditions.append(cond)
        return replace(self, conditions=conditions)

    def digest(self) -> str:
        h = hashlib.sha256()
        for arr in (self.images, self.masks.astype(np.int64)):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(json.dumps(self.conditions, sort_keys=True, default=str).encode())
        for z in self.latents or []:
            h.update(b"-" if z is None else np.ascontiguousarray(z, dtype=np.float32).tobytes())
        for d in self.decode or []:
            h.update(json.dumps(d, sort_keys=True).encode())
        return h.hexdigest()


def load_examples(cfg: AnnotationsConfig, context: RunContext, where: str) -> Examples:
    if cfg.source is not None:
        return _from_source(cfg, context, f"{where}.annotations.source")
    return _from_generated(cfg, context, f"{where}.annotations")


def _check_ids(mask: np.ndarray, num_classes: int, what: str) -> None:
    top = int(mask.max(initial=0))
    if top >= num_classes:
        raise UsageError(f"{what} has class id {top}, but [dataset].classes lists {num_classes} classes (ids 0..{num_classes - 1})")


def _from_source(cfg: AnnotationsConfig, context: RunContext, where: str) -> Examples:
    from .manifest import source_step

    step = source_step(context.registry, cfg.source, where)
    stage = step.cls(step.config, context)
    stage.setup()
    batch = stage.produce(list(range(cfg.pick_from or cfg.count)))
    if batch.dropped:
        d = batch.dropped[0]
        raise UsageError(f"{where}: labelled sample {d.key} is unusable: {d.detail or d.reason}")
    if cfg.pick_from is not None:
        batch = batch.take(_picks(cfg, context, batch.images))
    if batch.seg is None:
        raise UsageError(f"{where}: stage {step.name!r} gives images without masks; labelled images need masks")
    k = len(context.classes)
    for key, mask in zip(batch.keys, batch.seg):
        _check_ids(mask, k, f"{where}: the mask of {key}")
    conditions = [{**(r.get("condition") or {}), **({"class": r["class"]} if r.get("class") is not None else {})} for r in batch.records]
    tags = [r.get("tags") for r in batch.records]
    return Examples(batch.images, batch.seg.astype(np.int64), conditions, list(batch.keys), "real",
                    tags=tags if any(t is not None for t in tags) else None)


def _picks(cfg: AnnotationsConfig, context: RunContext, images: np.ndarray) -> list[int]:
    """The rows of the ``count`` most varied images, in source order: greedy k-center from the
    first image, as the select stage and `synth export --pick` choose."""
    from . import extractors
    from .selection import k_center

    feats = np.asarray(extractors.get(context, cfg.pick_extractor).embed(images), np.float32)
    return sorted(k_center(feats, np.arange(len(images)), cfg.count))


def _shard_files(context: RunContext, pattern: str, where: str) -> list[Path]:
    import braceexpand

    paths = []
    for p in braceexpand.braceexpand(pattern):
        path = context.resolve_path(p)
        if path.is_dir():
            paths += sorted(q for q in path.glob("*.tar") if not q.name.startswith("."))
        elif path.is_file():
            paths.append(path)
        else:
            raise UsageError(f"{where}.shards: no such shard or folder {path}")
    if not paths:
        raise UsageError(f"{where}.shards: {pattern} holds no shards")
    return paths


def _open(data, what: str):
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        img.load()
        return img
    except Exception as e:
        raise UsageError(f"{what}: not a readable image ({type(e).__name__})") from None


def _given_masks(cfg: AnnotationsConfig, context: RunContext, where: str) -> dict[str, tuple[str, Any]]:
    """{sample key: (name in messages, a function giving its class-id mask)} from a folder of
    KEY.png masks or an annotation tool's export (COCO, CVAT, Label Studio: annotation_formats)."""
    path = context.resolve_path(cfg.masks)
    if path.is_file():
        from .annotation_formats import read_export

        return {key: (f"{path.name} ({key})", lambda m=m: m) for key, m in read_export(path, list(context.classes)).items()}
    if not path.is_dir():
        raise UsageError(f"{where}.masks: no such folder or annotation file {path}")
    out = {}
    for p in sorted(path.iterdir()):
        if p.suffix.lower() == ".png":
            key = p.name[: -len(".seg.png")] if p.name.endswith(".seg.png") else p.stem
            out[key] = (p.name, lambda p=p: _mask_png(p, where))
    if not out:
        raise UsageError(f"{where}.masks: {path} holds no KEY.png masks")
    return out


def _mask_png(path: Path, where: str) -> np.ndarray:
    m = _open(path, f"{where}.masks: {path.name}")
    if m.mode not in MASK_MODES:
        raise UsageError(f"{where}.masks: {path.name} must be single-channel class ids, got mode {m.mode}")
    return np.asarray(m).astype(np.int64)


def _from_generated(cfg: AnnotationsConfig, context: RunContext, where: str) -> Examples:
    from .reading import iter_samples

    masks = _given_masks(cfg, context, where)
    found: dict[str, tuple[np.ndarray, dict]] = {}
    for shard in _shard_files(context, cfg.shards, where):
        for sample in iter_samples(shard):
            key = sample["__key__"]
            if key not in masks:
                continue
            field = next((f for f in IMAGE_FIELDS if f in sample), None)
            if field is None:
                raise UsageError(f"{where}.shards: sample {key} in {shard.name} has no image")
            image = np.asarray(_open(sample[field], f"{shard.name}: sample {key}").convert("RGB"))
            record = json.loads(sample.get("json", b"{}"))
            cond = dict(record.get("condition") or {})
            if record.get("class") is not None:
                cond["class"] = record["class"]
            latent = _latent(sample, f"{shard.name}: sample {key}") if replayable(record) else None
            found[key] = (image, cond, latent, record.get("decode"))
    missing = sorted(set(masks) - set(found))
    if missing:
        raise UsageError(f"{where}.masks: {masks[missing[0]][0]} names sample {missing[0]}, which is not in {cfg.shards}")
    images, segs, conds, keys, latents, decode = [], [], [], [], [], []
    k = len(context.classes)
    for key in sorted(masks):
        image, cond, latent, how = found[key]
        name, load = masks[key]
        mask = load()
        if mask.shape != image.shape[:2]:
            raise UsageError(f"{where}.masks: {name} is {mask.shape[1]}x{mask.shape[0]}, sample {key} is {image.shape[1]}x{image.shape[0]}")
        _check_ids(mask, k, f"{where}.masks: {name}")
        images.append(image)
        segs.append(mask)
        conds.append(cond)
        keys.append(key)
        latents.append(latent)
        decode.append(how)
    return Examples(np.stack(images), np.stack(segs), conds, keys, "generated", latents, decode)


def _latent(sample: dict, what: str) -> np.ndarray | None:
    """The sample's initial latent from its latent.npy (None when the run stored none)."""
    data = sample.get("latent.npy")
    if data is None:
        return None
    try:
        return np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)
    except Exception as e:
        raise UsageError(f"{what}: unreadable latent.npy ({type(e).__name__})") from None
