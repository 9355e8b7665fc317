"""Downstream tasks (a plugin kind, ``register_tasks``): a small model trained on a dataset's
samples and scored on labelled real images. A core kit, so that a search command and a selection
stage read labelled images and name tasks the same way:

- ``build(registry, table, classes, where)``: the task a table names, its config validated;
- ``read_labelled(context, location, target, where)``: a labelled real set (a folder with masks
  ``NAME.seg.png`` beside the images or class subfolders, or shards with seg.png / cls), read
  through the installed source stages; every unusable image is an error naming it, never a skip;
- ``read_samples(folder, target)``: a finished synth output's samples with their labels.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError
from .extractors import resolve_named

TARGETS = ("seg", "class")


def build(registry, table: dict[str, Any], classes: list[str], where: str = "task"):
    """The task ``table`` names (``{name = "segmentation", steps = 300}``), configured."""
    problems: list[str] = []
    found = resolve_named(registry.task, dict(table), where, problems)
    if found is None:
        raise UsageError(problems[0])
    cls, config = found
    if cls.target not in TARGETS:
        raise UsageError(f"{where}: task {cls.name!r} has target {cls.target!r}; one of {', '.join(TARGETS)}")
    return cls(config, classes)


def _source_table(location: Path, target: str, size: int | None) -> dict[str, Any]:
    if location.is_dir() and any(location.glob("*.tar")):
        table: dict[str, Any] = {"name": "shards", "urls": [str(t.resolve()) for t in sorted(location.glob("*.tar")) if not t.name.startswith(".")]}
    elif location.suffix == ".tar":
        table = {"name": "shards", "urls": str(location.resolve())}
    elif target == "seg":
        table = {"name": "folder", "path": str(location.resolve()), "masks": "auto"}
    else:
        table = {"name": "folder", "path": str(location.resolve()), "masks": "none", "labels": "subfolder"}
    if size:
        table["size"] = size
    return table


def read_labelled(context, location: str | Path, target: str, where: str, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images, targets) of a labelled real set, read with the run's registry and classes
    (``context``: a RunContext; relative paths against its manifest's folder), resized to
    ``size`` when given. One-line errors: no such folder, no images, an image without its label,
    a class outside [dataset].classes."""
    from .manifest import source_step
    from .protocols import RunContext

    path = context.resolve_path(location)
    if not path.exists():
        raise UsageError(f"{where}: no such folder {path}")
    classes = list(context.classes)
    if len(classes) < 2:
        raise UsageError(f"{where}: a task needs [dataset].classes (the label names)")
    table = _source_table(path, target, size)
    context = RunContext(seed=0, manifest_dir=context.manifest_dir, classes=classes, registry=context.registry, quiet=True)
    step = source_step(context.registry, table, where)
    source = step.cls(step.config, context)
    source.setup()
    n = source.num_available()
    if not n:
        raise UsageError(f"{where}: {path} holds no images")
    images, targets = [], []
    for start in range(0, n, 256):
        batch = source.produce(list(range(start, min(start + 256, n))))
        if batch.dropped:
            d = batch.dropped[0]
            raise UsageError(f"{where}: {d.key}: {d.detail or d.reason}")
        if target == "seg":
            if batch.seg is None:
                raise UsageError(f"{where}: {path} has images without masks (a mask NAME.seg.png beside each image, or shards with seg.png)")
            labels = np.asarray(batch.seg).astype(np.int64)
            if labels.max(initial=0) >= len(classes):
                raise UsageError(f"{where}: a mask has class id {int(labels.max())}; [dataset].classes lists {len(classes)} classes")
        else:
            ids = [r.get("class") for r in batch.records]
            if any(c is None for c in ids):
                key = batch.keys[[c is None for c in ids].index(True)]
                raise UsageError(f"{where}: {key} has no class (class subfolders named as [dataset].classes, or shards with cls)")
            labels = np.asarray(ids, np.int64)
            if labels.max(initial=0) >= len(classes):
                raise UsageError(f"{where}: class id {int(labels.max())} is outside [dataset].classes ({len(classes)} classes)")
        images.append(np.asarray(batch.images))
        targets.append(labels)
    return np.concatenate(images), np.concatenate(targets)


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB") if im.mode not in ("L", "P", "I", "I;16") else im)


def read_samples(folder: str | Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, targets) of a finished synth output's samples; a sample without the target
    (no seg.png, no cls) is an error naming it."""
    from .reading import iter_samples, read_dataset_info, shard_paths

    folder = Path(folder)
    info = read_dataset_info(folder)
    images, targets = [], []
    for shard in shard_paths(folder):
        for sample in iter_samples(shard):
            image = next((sample[k] for k in ("png", "jpg", "jpeg", "webp") if k in sample), None)
            if image is None:
                raise UsageError(f"{shard.name}: sample {sample['__key__']} has no image")
            field = "seg.png" if target == "seg" else "cls"
            if field not in sample:
                raise UsageError(f"{folder}: sample {sample['__key__']} has no {field}; the task needs {'masks (a labelling stage)' if target == 'seg' else 'a class per sample'}")
            images.append(_decode(image))
            targets.append(_decode(sample[field]).astype(np.int64) if target == "seg" else int(sample[field]))
    if not images:
        raise UsageError(f"{folder}: no samples (all {info['num_samples']} dropped?)")
    return np.stack(images), np.asarray(targets, np.int64)
