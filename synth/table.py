"""A run's samples as a table for the stages that need the whole dataset (dedup, selection,
metrics): keys, source indices, classes, scores and features, read from the small side file
each shard task writes beside its shard (``<shard>.table.npz``), never from the images."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np

SUFFIX = ".table.npz"


def table_name(tar_name: str) -> str:
    return tar_name[: -len(".tar")] + SUFFIX


@dataclass
class SampleTable:
    keys: list[str]
    index: np.ndarray  # (N,) int64 source index
    cls: np.ndarray  # (N,) int64 class id, -1 when none
    shard: np.ndarray  # (N,) int32 which shard
    scores: list[dict]
    features: dict[str, np.ndarray] = field(default_factory=dict)  # extractor id -> (N, D) float32

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, mask: np.ndarray) -> "SampleTable":
        rows = np.flatnonzero(mask)
        return SampleTable(
            keys=[self.keys[i] for i in rows],
            index=self.index[rows],
            cls=self.cls[rows],
            shard=self.shard[rows],
            scores=[self.scores[i] for i in rows],
            features={k: v[rows] for k, v in self.features.items()},
        )

    @staticmethod
    def concat(parts: list["SampleTable"]) -> "SampleTable":
        names = set.intersection(*(set(p.features) for p in parts)) if parts else set()
        return SampleTable(
            keys=[k for p in parts for k in p.keys],
            index=np.concatenate([p.index for p in parts]) if parts else np.zeros(0, np.int64),
            cls=np.concatenate([p.cls for p in parts]) if parts else np.zeros(0, np.int64),
            shard=np.concatenate([p.shard for p in parts]) if parts else np.zeros(0, np.int32),
            scores=[s for p in parts for s in p.scores],
            features={n: np.concatenate([p.features[n] for p in parts]) for n in sorted(names)},
        )


class TableRows:
    """Collects one shard's rows while its batches are made."""

    def __init__(self):
        self.keys: list[str] = []
        self.index: list[int] = []
        self.cls: list[int] = []
        self.scores: list[str] = []
        self.features: dict[str, list[np.ndarray]] = {}

    def add(self, batch, feature_columns: dict[str, np.ndarray]) -> None:
        self.keys += list(batch.keys)
        for rec in batch.records:
            self.index.append(int(rec.get("index", -1)))
            self.cls.append(-1 if rec.get("class") is None else int(rec["class"]))
            self.scores.append(json.dumps(rec.get("scores") or {}, sort_keys=True))
        for name, feats in feature_columns.items():
            self.features.setdefault(name, []).append(np.asarray(feats, np.float16))

    def to_bytes(self) -> bytes:
        arrays = {
            "keys": np.array(self.keys, dtype="U200"),
            "index": np.array(self.index, np.int64),
            "cls": np.array(self.cls, np.int64),
            "scores": np.array(self.scores, dtype=str),
        }
        for name, parts in self.features.items():
            arrays[f"features:{name}"] = np.concatenate(parts) if parts else np.zeros((0, 0), np.float16)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()


def read_table(data: bytes, shard: int) -> SampleTable:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        keys = [str(k) for k in z["keys"]]
        return SampleTable(
            keys=keys,
            index=z["index"].astype(np.int64),
            cls=z["cls"].astype(np.int64),
            shard=np.full(len(keys), shard, np.int32),
            scores=[json.loads(str(s)) for s in z["scores"]],
            features={f[len("features:") :]: z[f].astype(np.float32) for f in z.files if f.startswith("features:")},
        )
