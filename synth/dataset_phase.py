"""Dataset-level stages: what runs after every shard task, on the whole run.

With a selecting stage (dedup, select) the shard tasks write *candidate* shards into a hidden
``.candidates/`` folder of the output, each with its table (synth.table). The selecting stages
then decide, from the tables alone and deterministically, which samples the dataset keeps, and
each final shard is its candidate with the dropped samples left out (member bytes copied, same
order), written atomically like any shard. A kill at any point resumes: finished candidates and
finished final shards are kept, and the selection, a pure function of the candidates, comes out
the same. Candidates are removed once dataset.json is written. Measuring stages (metrics) then
read the final tables.

So selection interacts with sharding only through names: final shard i holds what survived of
candidate shard i, shards may end up of different sizes (or empty), and a sample's fate depends on
the whole run, never on which shard or worker made it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .batch import THUMBNAILS_PER_REASON, Dropped
from .errors import RunError
from .output import OutputFolder, stats_name
from .protocols import DatasetStage
from .reading import iter_samples
from .table import SampleTable, read_table, table_name
from .writer import ShardFile, shard_name

CANDIDATES = ".candidates"


def load_table(folder: OutputFolder, indices: list[int]) -> SampleTable:
    parts = []
    for i in indices:
        name = table_name(shard_name(folder.name, i))
        if not folder.store.exists(name):
            raise RunError(f"{folder.path}: {name} is missing; the dataset-level stages need it (rerun with --overwrite)")
        parts.append(read_table(folder.store.read_bytes(name), i))
    return SampleTable.concat(parts)


def dataset_stages(pipeline) -> list[tuple[Any, Any]]:
    """(step, set-up stage) for every dataset-level stage, on the driver."""
    out = []
    for step in pipeline.manifest.stages:
        if issubclass(step.cls, DatasetStage):
            stage = step.cls(step.config, pipeline.context)
            pipeline._guard(step, "set-up", stage.setup)
            out.append((step, stage))
    return out


def select(stages, table: SampleTable) -> tuple[np.ndarray, dict[str, tuple[str, str, str]], dict[str, list[int]]]:
    """Run the selecting stages in order. Returns (keep mask over the table, {key: (stage,
    reason, detail)} for every dropped sample, {stage where: [rows in, rows out]})."""
    keep = np.ones(len(table), bool)
    why: dict[str, tuple[str, str, str]] = {}
    counts: dict[str, list[int]] = {}
    for step, stage in stages:
        if not step.cls.selects:
            continue
        rows = np.flatnonzero(keep)
        sub = table.take(keep)
        mask, reasons, details = stage.select(sub)
        mask = np.asarray(mask, bool)
        if len(mask) != len(sub):
            raise RunError(f"{step.where} {step.name!r} returned {len(mask)} decisions for {len(sub)} samples")
        for j in np.flatnonzero(~mask):
            why[sub.keys[j]] = (step.name, reasons[j], details[j])
        keep[rows[~mask]] = False
        counts[step.where] = [len(sub), int(mask.sum())]
    return keep, why, counts


def write_final(
    final: OutputFolder, candidates: OutputFolder, index: int, why: dict, table: SampleTable, counts_by_shard: dict[str, list[int]], dropped_scores: dict | None = None
) -> dict:
    """Final shard ``index``: its candidate without the dropped samples (bytes copied, order
    kept); each drop recorded with its reason, its scores (``dropped_scores``) and, for the first
    few per reason, a thumbnail."""
    from .table import TableRows

    name = shard_name(final.name, index)
    stats = json.loads(candidates.store.read_bytes(stats_name(name)))
    shard = ShardFile(final.store.staging / name)
    kept_keys = []
    scores = dropped_scores or {}
    shown: dict[tuple[str, str], int] = {}
    try:
        with candidates.store.open(name) as fh:
            for sample in iter_samples(fh):
                key = sample["__key__"]
                if key in why:
                    stage, reason, detail = why[key]
                    shown[(stage, reason)] = shown.get((stage, reason), 0) + 1
                    image = _image_of(sample) if shown[(stage, reason)] <= THUMBNAILS_PER_REASON else None
                    drop = Dropped(key, stage, reason, detail, scores.get(key) or None, image)
                    stats["dropped"].append(drop.record(thumbnail=image is not None))
                    continue
                shard.write(sample)
                kept_keys.append(key)
        stats["stage_rows"] = {**stats.get("stage_rows", {}), **counts_by_shard}
        own = table.take(np.isin(np.asarray(table.keys, dtype=object), kept_keys) & (table.shard == index)) if len(table) else table
        rows = TableRows()
        rows.keys, rows.index, rows.cls = list(own.keys), own.index.tolist(), own.cls.tolist()
        rows.scores = [json.dumps(s, sort_keys=True) for s in own.scores]
        rows.features = {k: [v.astype(np.float16)] for k, v in own.features.items()}
        from .writer import write_atomic

        write_atomic(final.store.staging / table_name(name), rows.to_bytes())
        committed = shard.commit({k: v for k, v in stats.items() if k not in ("file", "count", "sha256")})
        final.store.publish(stats_name(name))
        final.store.publish(table_name(name))
        final.store.publish(name)
        return committed
    except BaseException:
        if not shard.closed:
            shard.abort()
        raise


def _image_of(sample: dict) -> np.ndarray | None:
    import io

    from PIL import Image

    data = next((sample[f] for f in ("png", "jpg", "jpeg", "webp") if f in sample), None)
    return None if data is None else np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def measure(stages, table: SampleTable) -> dict[str, Any]:
    out = {}
    for step, stage in stages:
        result = stage.measure(table)
        if result is not None:
            out[step.where] = {"stage": step.name, **result}
    return out
