"""The kit for expand stages (more rows out than in: views, interpolations, edits, copies), so
every expander, first-party or not, makes its children the same way: child seeds and indices
from (seed, parent index, op, parent key, j) alone; children decoded in batches, each with its
own sampler noise; parent and children adjacent in the shard; the record's group and how its
image is made again (decode); the label policy (seg never follows a change of geometry); the
batch's latents and conditions."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .batch import Batch
from .errors import UsageError
from .seeding import sample_rng, sample_seed


def child_op(op: str, parent_key: str, j: int) -> str:
    """The op string a child's randomness derives from: the parent's key keeps views of views
    (same source index, same j) apart."""
    return f"{op}:{parent_key}:{j}"


def child_index(seed: int, parent_index: int, op: str, parent_key: str, j: int) -> int:
    """A child's own 63-bit index: its sampler noise derives from (seed, this, "denoise")."""
    return sample_seed(seed, parent_index, child_op(op, parent_key, j))


def child_rng(seed: int, parent_index: int, op: str, parent_key: str, j: int = 0) -> np.random.Generator:
    return sample_rng(seed, parent_index, child_op(op, parent_key, j))


def need_latents(batch: Batch, stage: str) -> np.ndarray:
    if batch.latents is None:
        raise UsageError(
            f"stage {stage!r}: samples {batch.keys[0]}.. have no latents (a source without them, or a stage that dropped them); "
            f"put an invert stage before it"
        )
    return np.asarray(batch.latents, np.float32)


def conditions(batch: Batch) -> list[dict]:
    out = []
    for rec in batch.records:
        cond = dict(rec.get("condition") or {})
        if rec.get("class") is not None and "class" not in cond:
            cond["class"] = rec["class"]
        out.append(cond)
    return out


def decode_children(gen, latents: np.ndarray, conds: list[dict], indices: Sequence[int], seed: int, batch_size: int = 64) -> np.ndarray:
    """Decode children in batches; each child's sampler noise comes from its own index."""
    parts = []
    for s in range(0, len(latents), batch_size):
        parts.append(gen.decode(latents[s : s + batch_size], conds[s : s + batch_size], list(indices[s : s + batch_size]), seed))
    return np.concatenate(parts) if parts else np.zeros((0, 1, 1, 3), np.uint8)


def interleave(parents: Batch, children: Batch, per_parent: int, keep_parent: bool) -> Batch:
    """Parent, its children, next parent, ...: a parent and its children stay adjacent in the
    shard (siblings are also grouped by the `group` field of their json)."""
    if not keep_parent:
        return children
    both = Batch.concat([parents, children])
    n = len(parents)
    order = []
    for i in range(n):
        order.append(i)
        order += [n + i * per_parent + j for j in range(per_parent)]
    return both.take(order)


def drop_seg(batch: Batch) -> Batch:
    """Label policy: seg.png never follows a change of geometry; a later labeller re-labels."""
    batch.seg = None
    return batch


def mark(rec: dict[str, Any], group: str, decode_index: int | None, seed: int) -> None:
    """A child's group, and how its image is made again: decode of its latent with the sampler
    noise of (index, seed); None when no single decode makes it (compose)."""
    rec["group"] = group
    rec["decode"] = None if decode_index is None else {"index": int(decode_index), "seed": int(seed)}
