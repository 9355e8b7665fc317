"""Run a manifest: plan shards, make the pending ones, then write dataset.json and the card.

One task per shard, a pure function of (manifest, shard index): source indices
[i*shard_size, (i+1)*shard_size). Finished shards are skipped, so a killed run resumes where it
stopped and ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import errno
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .background import BackgroundWriter
from .batch import Batch
from .card import dataset_json, readme_card
from .errors import RunError
from .manifest import Manifest
from .output import OutputFolder
from .pipeline import Pipeline
from .threads import current_threads
from .reading import iter_samples
from .records import encode_sample, fields_of
from .writer import ShardFile, is_finished, remove_stale_temps, shard_name, stats_path, write_atomic


@dataclass(frozen=True)
class ShardTask:
    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan(manifest: Manifest) -> list[ShardTask]:
    n, size = manifest.dataset.num_samples, manifest.dataset.shard_size
    return [ShardTask(i, s, min(s + size, n)) for i, s in enumerate(range(0, n, size))]


@dataclass
class RunSummary:
    output: Path
    shards_total: int
    shards_made: int = 0
    shards_skipped: int = 0
    samples_written: int = 0
    source_samples_made: int = 0
    dropped: Counter = field(default_factory=Counter)
    drop_examples: list[str] = field(default_factory=list)  # the first few drops, naming sample and file
    filter_rows: dict[str, list[int]] = field(default_factory=dict)  # "stage[3] name" -> [in, out], this run's shards
    seconds: float = 0.0
    nothing_to_do: bool = False
    num_samples: int = 0
    threads: int | None = None


class Progress:
    """Callbacks the CLI turns into a progress bar; the engine knows nothing of tqdm."""

    def start(self, total_samples: int, total_shards: int, done_samples: int, done_shards: int) -> None: ...
    def advance(self, samples: int) -> None: ...
    def shard_done(self) -> None: ...
    def close(self) -> None: ...


class SampleEncoder:
    """Turns batch rows into shard members, adding what every sample's json carries."""

    def __init__(self, manifest: Manifest, generator: dict | None):
        ds = manifest.dataset
        self.common = {"generator": generator, "plugins": manifest.registry.versions(), "manifest_hash": manifest.hash}
        self.fmt, self.quality, self.latent_dtype = ds.image_format, ds.jpeg_quality, ds.latent_dtype
        self.classes = list(ds.classes)

    def __call__(self, batch: Batch, rows: range) -> list[dict]:
        out = []
        for i in rows:
            rec = {**batch.records[i], **self.common, "key": batch.keys[i]}
            cls = rec.get("class")
            if cls is not None and self.classes:
                if not 0 <= int(cls) < len(self.classes):
                    raise RunError(f"sample {batch.keys[i]}: class id {cls} outside the {len(self.classes)} classes of [dataset].classes")
                rec["class_name"] = self.classes[int(cls)]
            try:
                out.append(
                    encode_sample(
                        batch.keys[i],
                        batch.images[i],
                        rec,
                        latent=None if batch.latents is None else batch.latents[i],
                        seg=None if batch.seg is None else batch.seg[i],
                        image_format=self.fmt,
                        quality=self.quality,
                        latent_dtype=self.latent_dtype,
                    )
                )
            except (ValueError, TypeError) as e:
                raise RunError(f"sample {batch.keys[i]}: cannot encode: {e}") from None
        return out


class FieldCheck:
    """Every sample of a run must carry the same fields (HF's loader infers columns from a few)."""

    def __init__(self):
        self.fields: tuple[str, ...] | None = None

    def __call__(self, samples: list[dict]) -> list[dict]:
        for s in samples:
            f = fields_of(s)
            if self.fields is None:
                self.fields = f
            elif f != self.fields:
                raise RunError(
                    f"sample {s['__key__']} has fields {list(f)} but earlier samples have {list(self.fields)}; "
                    f"every sample of a run must carry the same fields"
                )
        return samples


def _io_error(e: OSError, path: Path) -> RunError:
    if e.errno == errno.ENOSPC:
        return RunError(f"disk full while writing {path}; finished shards are intact, free space and rerun to resume")
    return RunError(f"cannot write {path}: {e.strerror or e}")


class LocalExecutor:
    """Runs shard tasks in this process, the model on this thread, encoding/writing beside it."""

    def __init__(self, workers: int):
        self.workers = workers

    def run(self, pipeline: Pipeline, tasks: list[ShardTask], out: Path, name: str, encoder: Callable, progress: Progress, summary: RunSummary) -> None:
        batch_size = pipeline.manifest.run.batch_size
        check = FieldCheck()
        bg = BackgroundWriter(lambda b, rows: check(encoder(b, rows)), self.workers)
        open_shards: list[ShardFile] = []
        try:
            for task in tasks:
                shard = ShardFile(out / shard_name(name, task.index))
                open_shards.append(shard)
                pipeline.reset_rows()
                dropped = []
                for start in range(task.start, task.stop, batch_size):
                    indices = list(range(start, min(start + batch_size, task.stop)))
                    batch = pipeline.run_batch(indices)
                    dropped += [d.__dict__ for d in batch.dropped]
                    bg.submit(shard, batch)
                    progress.advance(len(indices))
                    summary.source_samples_made += len(indices)
                stats = {"shard": task.index, "source_indices": [task.start, task.stop], "dropped": dropped, "stage_rows": pipeline.reset_rows()}
                fut = bg.commit(shard, stats)
                fut.add_done_callback(lambda f: not f.cancelled() and f.exception() is None and progress.shard_done())
            bg.drain()
        except OSError as e:
            bg.close(cancel=True)
            bad = next((s for s in open_shards if not s.closed), None)
            raise _io_error(e, bad.final if bad else out) from e
        except Exception:
            # A stage failed on the model's thread. Shards whose samples were all produced may still
            # sit in the writer's queue: finish them, so a rerun does not redo finished work.
            try:
                bg.drain()
            except Exception:
                pass  # the stage's error is the one to report
            raise
        finally:
            bg.close(cancel=True)
            for shard in open_shards:
                if not shard.final.exists():
                    shard.abort()


def run(
    manifest: Manifest,
    output: str | Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    executor=None,
    quiet: bool = False,
    threads: int | None = None,
) -> RunSummary:
    t0 = time.perf_counter()
    progress = progress or Progress()
    name = manifest.dataset.name
    folder = OutputFolder(manifest.output_dir(output), name)
    tasks = plan(manifest)
    summary = RunSummary(output=folder.path, shards_total=len(tasks))
    with folder:
        if overwrite:
            folder.clear()
        folder.check_same_manifest(manifest.hash)
        try:
            folder.write_state(manifest.hash, str(manifest.path))
        except OSError as e:
            raise _io_error(e, folder.path) from None
        remove_stale_temps(folder.path, name)

        pending = [t for t in tasks if not is_finished(folder.path / shard_name(name, t.index))]
        summary.shards_skipped = len(tasks) - len(pending)
        if not pending and (folder.path / "dataset.json").exists():
            summary.nothing_to_do = True
            info = json.loads((folder.path / "dataset.json").read_text())
            summary.num_samples = info.get("num_samples", 0)
            summary.seconds = time.perf_counter() - t0
            return summary

        pipeline = Pipeline(manifest, quiet=quiet, threads=threads)
        generator_info = None
        if pending:
            pipeline.setup()
            summary.threads = current_threads()
            generator_info = pipeline.describe_generator()
            done_samples = sum(t.size for t in tasks) - sum(t.size for t in pending)
            progress.start(manifest.dataset.num_samples, len(tasks), done_samples, summary.shards_skipped)
            try:
                (executor or LocalExecutor(manifest.run.workers)).run(
                    pipeline, pending, folder.path, name, SampleEncoder(manifest, generator_info), progress, summary
                )
            finally:
                progress.close()
            summary.shards_made = len(pending)

        stats = [json.loads(stats_path(folder.path / shard_name(name, t.index)).read_text()) for t in tasks]
        for st in stats:
            if st["shard"] in {t.index for t in pending}:
                summary.samples_written += st["count"]
                for d in st.get("dropped", []):
                    summary.dropped[f"{d['stage']}: {d['reason']}"] += 1
                    if len(summary.drop_examples) < 3:
                        summary.drop_examples.append(f"{d['key']} ({d['stage']}): {d.get('detail') or d['reason']}")
                for step in manifest.stages:
                    rows = st.get("stage_rows", {}).get(step.where)
                    if step.cls.kind == "filter" and rows:
                        acc = summary.filter_rows.setdefault(f"{step.where} {step.name}", [0, 0])
                        acc[0], acc[1] = acc[0] + rows[0], acc[1] + rows[1]
        if generator_info is None:
            generator_info = _first_generator_info(folder.path, stats)
        fields = _fields_from_shards(folder.path, stats)
        info = dataset_json(manifest, stats, generator_info, fields)
        try:
            folder.write_own({"dataset.json": json.dumps(info, indent=1, sort_keys=True).encode(), "README.md": readme_card(manifest, info).encode()})
        except OSError as e:
            raise _io_error(e, folder.path / "dataset.json") from None
        summary.num_samples = info["num_samples"]
    summary.seconds = time.perf_counter() - t0
    return summary


def _iter_first_sample(path: Path) -> dict | None:
    return next(iter_samples(path, limit=1), None)


def _fields_from_shards(folder: Path, stats: list[dict]) -> list[str]:
    """Fields every sample carries (read from the first non-empty shard), checked across shards."""
    found = None
    for st in stats:
        if st["count"] == 0:
            continue
        fields = sorted(k for k in _iter_first_sample(folder / st["file"]) if k != "__key__")
        if found is None:
            found = fields
        elif fields != found:
            raise RunError(f"shard {st['file']} has fields {fields}, earlier shards {found}")
    return found or []


def _first_generator_info(folder: Path, stats: list[dict]) -> dict | None:
    for st in stats:
        if st["count"]:
            sample = _iter_first_sample(folder / st["file"])
            return json.loads(sample["json"]).get("generator")
    return None
