"""Reference sets: real images from any source stage (folder, shards, the shapes world), turned
into features once and cached by what decides them (the source table, the count, the
extractor), so filters and metrics never embed the same reference twice."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from synth import extractors
from synth.errors import UsageError
from synth.manifest import source_step
from synth.paths import cache_dir
from synth.protocols import PluginConfig
from synth.refs import SourceRef


class ReferenceConfig(PluginConfig):
    source: SourceRef = Field(description="A source stage table of real images, e.g. {name = \"folder\", path = \"real/\"}")
    count: int = Field(1000, ge=4, le=10_000_000, description="How many images to read from it")


def check_size(plan, ref_source: dict[str, Any], where: str = "reference.source") -> list[str]:
    """A reference set whose images are another size than the run's samples, seen while
    validating (each source says its planned size; unknown sizes are checked when read)."""
    samples = plan.image_size()
    step = source_step(plan.registry, ref_source, where, [])
    if samples is None or step is None:
        return []
    ref = step.cls.planned_size(step.config, plan)
    if ref is None or tuple(ref) == tuple(samples):
        return []
    return [f"reference: images are {ref[1]}x{ref[0]}, the samples {samples[1]}x{samples[0]}; give the reference source size = {samples[0]}"]


def _cache(context) -> Path:
    return cache_dir("features")


def reference_images(context, ref: ReferenceConfig, where: str) -> np.ndarray:
    step = source_step(context.registry, ref.source, f"{where}.reference.source")
    stage = step.cls(step.config, context)
    stage.setup()
    n = ref.count
    if stage.num_available() is not None:
        n = min(n, stage.num_available())
    parts = []
    for s in range(0, n, 256):
        b = stage.produce(list(range(s, min(s + 256, n))))
        if len(b):
            parts.append(b.images)
    if not parts:
        raise UsageError(f"{where}.reference: the reference set is empty")
    shapes = {p.shape[1:] for p in parts}
    if len(shapes) > 1:
        raise UsageError(f"{where}.reference: images of different sizes {sorted(shapes)}; give the source a size")
    return np.concatenate(parts)


def reference_features(context, ref: ReferenceConfig, spec, where: str, image_shape: tuple | None = None) -> np.ndarray:
    """(N, D) features of the reference set, from the cache when computed before."""
    # relative paths of the source resolve against the manifest: key on where they point
    resolved = {k: (str(context.resolve_path(v)) if k in ("path", "urls", "masks") and isinstance(v, str) else v) for k, v in ref.source.items()}
    ident = json.dumps({"source": resolved, "count": ref.count, "extractor": extractors.as_table(spec), "seed": context.seed, "shape": image_shape}, sort_keys=True, default=str)
    path = _cache(context) / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    images = reference_images(context, ref, where)
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        raise UsageError(f"{where}.reference: images are {images.shape[2]}x{images.shape[1]}, the samples {image_shape[1]}x{image_shape[0]}; give the source size = {image_shape[0]}")
    feats = np.asarray(extractors.get(context, spec).embed(images), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}.npy")
    np.save(tmp, feats, allow_pickle=False)
    os.replace(tmp, path)
    return feats
