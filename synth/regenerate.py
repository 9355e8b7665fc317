"""`synth regenerate OUTPUT KEY`: rebuild a generated sample's image from its record alone.

A sample whose image is exactly decode(latent.npy, condition) under the run's generator (made
by generate, views, interpolate, direction or prompt_edit) carries ``decode`` = {index, seed} in
its json: the generator's sampler noise derives from those. The manifest comes from the output's
dataset.json, so nothing but the output folder is needed (and the model it names).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .errors import RunError, UsageError
from .reading import iter_samples, read_dataset_info

IMAGE_FIELDS = ("png", "jpg", "jpeg", "webp")


def find_sample(folder: Path, key: str) -> tuple[Path, dict]:
    for tar in sorted(p for p in folder.glob("*.tar") if not p.name.startswith(".")):
        for s in iter_samples(tar):
            if s["__key__"] == key:
                return tar, s
    raise UsageError(f"{folder}: no sample {key!r} in its shards")


def why_not(record: dict) -> str | None:
    """Why this record says its image is no single decode of its latent, or None. The record is
    trusted: every op that makes an image by one decode (generate, views, interpolate, direction,
    prompt edits) writes ``decode`` = {index, seed}; every op that makes it otherwise (reading a
    real image, inverting it, augmenting, composing two latents) clears it."""
    if record.get("decode"):
        return None
    ops = [step.get("op") for step in record.get("lineage") or []]
    last = ops[-1] if ops else "?"
    return f"its image is not one decode of its latent (its last op, {last!r}, made it otherwise)"


RUNTIME = "runtime"  # Generator.describe's machine facts: a difference there is named, not refused


def different_generator(made: dict, ours: dict, keys) -> str | None:
    """The first of ``keys`` on which the generator that made a sample and this manifest's differ."""
    for k in keys:
        if k == RUNTIME:
            continue
        if k in made and made.get(k) != ours.get(k):
            return f"it was made with generator {k} {made.get(k)!r}, this manifest's is {ours.get(k)!r}: another generator, version or setting may draw other pixels"
    return None


def regenerate(folder: Path, key: str, out: Path | None = None) -> dict:
    from .manifest import load_manifest
    from .pipeline import Pipeline
    from .records import encode_image

    folder = Path(folder)
    info = read_dataset_info(folder)
    tar, sample = find_sample(folder, key)
    record = json.loads(sample["json"])
    if "latent.npy" not in sample:
        raise UsageError(f"sample {key} cannot be regenerated: it has no latent.npy")
    state = folder / ".synth-run.json"
    original = Path(json.loads(state.read_text()).get("manifest", "")) if state.is_file() else None
    where = original if original is not None and original.parent.is_dir() else folder / info["manifest"]["file"]
    reason = why_not(record)
    if reason:
        raise UsageError(f"sample {key} cannot be regenerated from its record: {reason}")
    manifest = load_manifest(where, text=info["manifest"]["text"])  # relative paths resolve as they did
    pipe = Pipeline(manifest, quiet=True)
    gen = pipe.generator
    if gen is None:
        raise UsageError(f"sample {key} cannot be regenerated: the manifest has no generator")
    made = record.get("generator") or {}
    before = gen.describe()  # what the generator is without loading it: decided before any weights load
    # a field the generator only knows once loaded (None before, like a local model's licence)
    # waits for the second look
    reason = different_generator(made, before, sorted(k for k, v in before.items() if v is not None))
    if reason is None:
        gen.setup()
        after = gen.describe()
        reason = different_generator(made, after, sorted(k for k in after if before.get(k) is None or after[k] != before[k]))
    if reason:
        raise UsageError(f"sample {key} cannot be regenerated from its record: {reason}")
    latent = np.load(io.BytesIO(sample["latent.npy"]), allow_pickle=False).astype(np.float32)
    cond = dict(record.get("condition") or {})
    if record.get("class") is not None:
        cond.setdefault("class", record["class"])
    image = gen.decode(latent[None], [cond], [int(record["decode"]["index"])], int(record["decode"]["seed"]))[0]
    fmt = next(f for f in IMAGE_FIELDS if f in sample)
    data = encode_image(image, info.get("image_format", fmt), manifest.dataset.jpeg_quality)
    same = data == sample[fmt]
    target = out or Path(f"{key}.{fmt}")
    target.write_bytes(data)
    if not same:
        from PIL import Image

        old = np.asarray(Image.open(io.BytesIO(sample[fmt])).convert("RGB")).astype(int)
        diff = int(np.abs(old - image.astype(int)).max())
        was, now = made.get(RUNTIME) or {}, after.get(RUNTIME) or {}
        changed = [f"{k} {was.get(k)} -> {now.get(k)}" for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
        why = f"made with {', '.join(changed)}" if changed else "the machine's kernels or libraries differ"
        raise RunError(f"regenerated {key} into {target}, but it differs from the shard's image (largest pixel difference {diff}); {why}")
    return {"key": key, "shard": tar.name, "written": str(target), "identical": same}
