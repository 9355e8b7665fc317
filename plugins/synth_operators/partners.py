"""Where an operator's second sample comes from (interpolate, compose): another sample of the
same run, recomputed from its seed, or a sample of earlier shards, read by key."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from synth.errors import UsageError
from synth.seeding import sample_rng


def generated_partner(gen, seed: int, num_samples: int, index: int, key: str, op: str, same_class: bool, label) -> int:
    """A partner index for sample ``index`` among the run's source indices, drawn from (seed,
    index, op) only; within the sample's class when asked (by the generator's conditions)."""
    rng = sample_rng(seed, index, f"{op}-partner:{key}")
    if num_samples < 2:
        raise UsageError(f"stage {op!r}: a partner needs at least 2 source samples")
    for _ in range(1000):
        j = int(rng.integers(0, num_samples))
        if j == index:
            continue
        if not same_class or gen.condition(j).get("class") == label:
            return j
    raise UsageError(f"stage {op!r}: no partner of class {label!r} among the {num_samples} source samples")


def shard_latents(paths: list[Path], keys: set[str]) -> dict[str, dict[str, Any]]:
    """{key: {"latent", "record", "image" bytes, "seg" bytes}} for the wanted keys of these shards."""
    from synth.reading import iter_samples

    found = {}
    for path in paths:
        for s in iter_samples(path):
            if s["__key__"] in keys:
                rec = json.loads(s.get("json", b"{}"))
                lat = s.get("latent.npy")
                found[s["__key__"]] = {
                    "latent": None if lat is None else np.load(io.BytesIO(lat), allow_pickle=False).astype(np.float32),
                    "record": rec,
                    "seg": s.get("seg.png"),
                }
    return found


def expand_shards(pattern: str, resolve) -> list[Path]:
    import braceexpand

    out = []
    for p in braceexpand.braceexpand(pattern):
        path = resolve(p)
        if path.is_dir():
            out += sorted(q for q in path.glob("*.tar") if not q.name.startswith("."))
        elif path.is_file():
            out.append(path)
        else:
            raise UsageError(f"shards: no such shard or folder {path}")
    if not out:
        raise UsageError(f"shards: {pattern} holds no shards")
    return out
