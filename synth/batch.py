"""A batch: columns for a handful of samples, the unit every stage works on.

Images and latents are stacked arrays so a model sees a whole batch; filters and expanders
change the row count by returning a new batch. Each sample also carries one JSON-able record
(seed, condition, lineage, scores, ...), which becomes its ``.json`` in the shard.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

# Dropped samples a shard's stats keep a thumbnail of, per stage and reason (the report shows them).
THUMBNAILS_PER_REASON = 4


@dataclass
class Dropped:
    """Why a filter dropped a sample: ``reason`` groups drops (e.g. "contrast < min 0.1"),
    ``detail`` is this sample's own value; ``scores`` what it had scored, ``image`` its pixels
    (kept only until the shard's stats take a thumbnail of the first few per reason)."""

    key: str
    stage: str
    reason: str
    detail: str = ""
    scores: dict[str, Any] | None = None
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    def record(self, thumbnail: bool = False) -> dict[str, Any]:
        """What a shard's stats keep of this drop (JSON), with a small thumbnail if asked."""
        from .records import thumbnail as small

        out: dict[str, Any] = {"key": self.key, "stage": self.stage, "reason": self.reason, "detail": self.detail}
        if self.scores:
            out["scores"] = self.scores
        if thumbnail and self.image is not None:
            out["thumbnail"] = small(self.image)
        return out


@dataclass
class Batch:
    keys: list[str]
    images: np.ndarray  # (B, H, W, 3) uint8
    records: list[dict[str, Any]]
    latents: np.ndarray | None = None  # (B, ...) float
    seg: np.ndarray | None = None  # (B, H, W) integer class ids
    instances: np.ndarray | None = None  # (B, H, W) instance ids, 0 = none (uint16; inst.png)
    dropped: list[Dropped] = field(default_factory=list)
    # Other per-row columns stages share within a shard task (e.g. "features:<extractor>"); a
    # derived child has none of its parent's (they describe the parent's image).
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.keys)
        for name in ("images", "records", "latents", "seg", "instances"):
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise ValueError(f"batch column {name!r} has {len(col)} rows, expected {n}")
        for name, col in self.extras.items():
            if len(col) != n:
                raise ValueError(f"batch column {name!r} has {len(col)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, rows) -> "Batch":
        """The rows at the given positions (in that order); dropped list carried over."""
        rows = list(rows)
        pick = (lambda a: None if a is None else a[rows]) if rows else (lambda a: None if a is None else a[:0])
        return replace(
            self,
            keys=[self.keys[i] for i in rows],
            images=pick(self.images),
            records=[self.records[i] for i in rows],
            latents=pick(self.latents),
            seg=pick(self.seg),
            instances=pick(self.instances),
            dropped=list(self.dropped),
            extras={k: pick(v) for k, v in self.extras.items()},
        )

    def keep(self, mask, stage: str, reasons, details=None) -> "Batch":
        """Filter helper: keep rows where mask is true, record a reason for each dropped row."""
        mask = [bool(m) for m in mask]
        if len(mask) != len(self):
            raise ValueError(f"filter mask has {len(mask)} rows, batch has {len(self)}")
        if isinstance(reasons, str):
            reasons = [reasons] * len(self)
        details = details if details is not None else [""] * len(self)
        out = self.take([i for i, m in enumerate(mask) if m])
        out.dropped += [
            Dropped(self.keys[i], stage, reasons[i], str(details[i]), dict(self.records[i].get("scores") or {}), self.images[i])
            for i, m in enumerate(mask)
            if not m
        ]
        return out

    def derive(self, rows, keys: list[str], ops: list[dict[str, Any]]) -> "Batch":
        """Expand-stage helper: children of ``rows`` under new ``keys``. Each child starts as a copy
        of its parent (columns and record, class label included) with ``op`` + the parent's key
        appended to its lineage; the stage then changes what its op changes."""
        rows = list(rows)
        if not len(rows) == len(keys) == len(ops):
            raise ValueError(f"derive: {len(rows)} rows, {len(keys)} keys, {len(ops)} ops")
        out = self.take(rows)
        out.extras = {}
        out.keys = list(keys)
        out.images = None if out.images is None else out.images.copy()
        out.seg = None if out.seg is None else out.seg.copy()
        out.instances = None if out.instances is None else out.instances.copy()
        out.latents = None if out.latents is None else out.latents.copy()
        out.records = []
        for r, op in zip(rows, ops):
            rec = copy.deepcopy(self.records[r])
            rec["lineage"] = list(rec.get("lineage", [])) + [{**op, "parent": self.keys[r]}]
            out.records.append(rec)
        return out

    @staticmethod
    def concat(batches: list["Batch"]) -> "Batch":
        if not batches:
            raise ValueError("cannot concatenate zero batches")

        def cat(name):
            cols = [getattr(b, name) for b in batches]
            if all(c is None for c in cols):
                return None
            if any(c is None for c in cols):
                raise ValueError(f"column {name!r} present in some batches only")
            return np.concatenate(cols)

        shared = set.intersection(*(set(b.extras) for b in batches))  # a column some rows lack is recomputed later
        return Batch(
            keys=[k for b in batches for k in b.keys],
            images=cat("images"),
            records=[r for b in batches for r in b.records],
            latents=cat("latents"),
            seg=cat("seg"),
            instances=cat("instances"),
            dropped=[d for b in batches for d in b.dropped],
            extras={k: np.concatenate([b.extras[k] for b in batches]) for k in sorted(shared)},
        )


INHERITED = ("class", "class_name")


def inherit_labels(parents: Batch, children: Batch) -> None:
    """After an expand stage: a new sample whose lineage names a parent in ``parents`` gets the
    parent's class label when the stage did not set one (a view of a cat is still a cat)."""
    by_key = {k: r for k, r in zip(parents.keys, parents.records)}
    for key, rec in zip(children.keys, children.records):
        if key in by_key:
            continue
        parent = next((op.get("parent") for op in reversed(rec.get("lineage") or []) if op.get("parent") in by_key), None)
        if parent is None:
            continue
        for name in INHERITED:
            if rec.get(name) is None and by_key[parent].get(name) is not None:
                rec[name] = by_key[parent][name]
