"""Run a manifest: plan shards, have an executor make the pending ones, then write dataset.json
and the card.

One task per shard, a pure function of (manifest, shard index): source indices
[i*shard_size, (i+1)*shard_size). Finished shards are skipped, so a killed run resumes where it
stopped and ends byte-identical to an uninterrupted one, whichever executor made which shard.
Executors are a plugin kind (``register_executors``): the local one runs shards in this process,
others (synth_ray) on a cluster; all of them make a shard with ``make_shards`` below.
"""

from __future__ import annotations

import errno
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .background import BackgroundWriter
from .batch import THUMBNAILS_PER_REASON, Batch
from .card import dataset_json, readme_card
from .dataset_phase import (
    CANDIDATES,
    dataset_stages,
    load_table,
    measure,
    select,
    write_final,
)
from .errors import RunError, UsageError
from .manifest import Manifest
from .output import OutputFolder, stats_name
from .pipeline import Pipeline
from .protocols import DatasetStage, Executor
from .reading import iter_samples
from .records import encode_sample, fields_of
from .storage import Store, open_store
from .threads import Threads, current_threads, resolve_threads
from .writer import ShardFile, shard_name


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
class ShardJob:
    """What an executor needs to make a run's pending shards: the manifest (its text travels to
    other processes), the tasks, where finished shards go (a Store) and the run's settings."""

    manifest: Manifest
    tasks: list[ShardTask]
    store: Store
    name: str
    quiet: bool = False
    threads: Threads | None = None
    reports: dict[str, dict] = field(default_factory=dict)  # filled by the executor: Pipeline.reports()


@dataclass
class RunSummary:
    output: Path | str
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
    threads: Threads | None = None
    executor: str = "local"
    workers: list[dict] = field(default_factory=list)  # one report per worker (shards, samples, seconds, failures)
    metrics: dict = field(default_factory=dict)  # measuring stages' figures, as in dataset.json
    reports: dict = field(default_factory=dict)  # stages' set-up reports, by location (Stage.report)


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
                        instances=None if batch.instances is None else batch.instances[i],
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


def io_error(e: OSError, where: Path | str) -> RunError:
    if e.errno == errno.ENOSPC:
        return RunError(f"disk full while writing {where}; finished shards are intact, free space and rerun to resume")
    return RunError(f"cannot write {where}: {e.strerror or e}")


def make_shards(
    pipeline: Pipeline,
    tasks: list[ShardTask],
    store: Store,
    name: str,
    workers: int,
    advance: Callable[[int], None] = lambda n: None,
    shard_done: Callable[[dict], None] = lambda stats: None,
) -> None:
    """Make these shards with a set-up pipeline: the model on this thread, encoding and tar
    writing on ``workers`` threads beside it; each finished shard is published to ``store``
    (stats first, then its table when dataset-level stages need one, tar last) and reported with
    ``shard_done(stats)``."""
    from . import extractors
    from .table import TableRows, table_name

    batch_size = pipeline.manifest.run.batch_size
    wanted = dataset_features(pipeline.manifest)
    with_table = any(issubclass(s.cls, DatasetStage) for s in pipeline.manifest.stages)
    encoder = SampleEncoder(pipeline.manifest, pipeline.describe_generator())
    check = FieldCheck()
    bg = BackgroundWriter(lambda b, rows: check(encoder(b, rows)), workers)
    open_shards: list[ShardFile] = []

    def commit(shard: ShardFile, stats: dict, rows) -> dict:
        if rows is not None:  # written before the shard is renamed: a final tar always has its table
            from .writer import write_atomic

            write_atomic(store.staging / table_name(shard.final.name), rows.to_bytes())
        stats = shard.commit(stats)
        store.publish(stats_name(shard.final.name))
        if rows is not None:
            store.publish(table_name(shard.final.name))
        store.publish(shard.final.name)
        return stats

    try:
        for task in tasks:
            shard = ShardFile(store.staging / shard_name(name, task.index))
            open_shards.append(shard)
            pipeline.reset_rows()
            dropped = []
            shown: Counter = Counter()  # thumbnails per (stage, reason) in this shard's stats
            rows = TableRows() if with_table else None
            for start in range(task.start, task.stop, batch_size):
                indices = list(range(start, min(start + batch_size, task.stop)))
                batch = pipeline.run_batch(indices)
                for d in batch.dropped:
                    shown[(d.stage, d.reason)] += 1
                    dropped.append(d.record(thumbnail=shown[(d.stage, d.reason)] <= THUMBNAILS_PER_REASON))
                if rows is not None:
                    cols = {extractors.extractor_id(spec): extractors.features(pipeline.context, batch, spec) for spec in wanted} if len(batch) else {}
                    rows.add(batch, cols)
                bg.submit(shard, batch)
                advance(len(indices))
            stats = {"shard": task.index, "source_indices": [task.start, task.stop], "dropped": dropped, "stage_rows": pipeline.reset_rows()}
            fut = bg.after_writes(commit, shard, stats, rows)
            fut.add_done_callback(lambda f: not f.cancelled() and f.exception() is None and shard_done(f.result()))
        bg.drain()
    except OSError as e:
        bg.close(cancel=True)
        bad = next((s for s in open_shards if s.failed is not None), None) or next((s for s in open_shards if not s.closed), None)
        raise io_error(e, bad.final if bad else store.url) from e
    except BaseException:
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
            if not shard.final.exists() and not shard.closed:
                shard.abort()
            shard.tmp.unlink(missing_ok=True)


class LocalExecutor(Executor):
    """Shard tasks in this process, one after another; encoding and writing overlap the model."""

    name = "local"
    in_process = True

    def run(self, job: ShardJob, progress: Progress) -> list[dict]:
        pipeline = Pipeline(job.manifest, quiet=job.quiet, threads=job.threads)
        pipeline.setup()
        job.reports.update(pipeline.reports())
        t0 = time.perf_counter()
        made = {"shards": 0, "samples": 0}

        def done(stats):
            made["shards"] += 1
            made["samples"] += stats["count"]
            progress.shard_done()

        make_shards(pipeline, job.tasks, job.store, job.name, job.manifest.run.workers, progress.advance, done)
        return [{"worker": "local", "shards": made["shards"], "samples": made["samples"], "seconds": round(time.perf_counter() - t0, 2), "failures": 0, "threads": current_threads()}]


def dataset_features(manifest: Manifest) -> list:
    """Extractor tables the dataset-level stages need for every sample (Stage.wants)."""
    out, seen = [], set()
    for step in manifest.stages:
        if issubclass(step.cls, DatasetStage):
            for spec in step.cls.wants(step.config):
                from .extractors import extractor_id

                if extractor_id(spec) not in seen:
                    seen.add(extractor_id(spec))
                    out.append(spec)
    return out


def choose_executor(manifest: Manifest, name: str | None, options: dict[str, Any]) -> Executor:
    """The executor named on the command line or in [run] executor, with its own table
    ([run.<name>]) and the command line's options for it (``-X key=value``) on top, validated
    by the executor's Config."""
    from pydantic import ValidationError

    from .manifest import format_errors

    wanted = name or manifest.run.executor
    cls = manifest.registry.executor(wanted, "--executor" if name else "run.executor")
    given = manifest.executors.get(wanted)
    merged = {**(given.model_dump(exclude_unset=True) if given is not None else {}), **{k: v for k, v in options.items() if v is not None}}
    try:
        config = cls.Config.model_validate(merged)
    except ValidationError as e:
        raise UsageError(f"executor {wanted!r}: {format_errors(e, f'run.{wanted}')[0]}") from None
    run_config = manifest.run.model_copy(update={"executor": wanted})
    problems = cls.check_run(run_config, config)
    if problems:
        raise UsageError(f"executor {wanted!r}: {problems[0]}")
    return cls(run_config, config)


def run_threads(asked: Threads | None, manifest: Manifest, executor: Executor, folder: OutputFolder) -> Threads | None:
    """The model library's threads for a local run: a count as asked (--threads, [run] threads),
    else what the folder's earlier run used (a sample's bytes depend on it, so a resumed run makes
    the shards the first run would have made, "auto" included), else the default or the "auto"
    count, recorded for the next resume. A distributed run's workers choose their own."""
    asked = asked or manifest.run.threads
    if not executor.in_process:
        return asked
    if isinstance(asked, int):
        return asked
    recorded = (folder.read_state() or {}).get("threads")
    return recorded or resolve_threads(asked)


def run(
    manifest: Manifest,
    output: str | Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    executor: Executor | str | None = None,
    quiet: bool = False,
    threads: Threads | None = None,
    executor_options: dict[str, Any] | None = None,
) -> RunSummary:
    t0 = time.perf_counter()
    progress = progress or Progress()
    name = manifest.dataset.name
    if not isinstance(executor, Executor):
        executor = choose_executor(manifest, executor, executor_options or {})
    store = open_store(manifest.output_location(output))
    folder = OutputFolder(store, name)
    tasks = plan(manifest)
    summary = RunSummary(output=folder.path, shards_total=len(tasks), executor=executor.name)
    try:
        with folder:
            if overwrite:
                folder.clear()
            folder.check_same_manifest(manifest.hash)
            threads = run_threads(threads, manifest, executor, folder)
            try:
                folder.write_state(manifest.hash, str(manifest.path), threads)
            except OSError as e:
                raise io_error(e, folder.path) from None
            folder.remove_stale_temps()

            pending = [t for t in tasks if not folder.is_finished(t.index)]
            summary.shards_skipped = len(tasks) - len(pending)
            selecting = any(issubclass(s.cls, DatasetStage) and s.cls.selects for s in manifest.stages)
            candidates_left = selecting and bool(open_store(f"{store.location}/{CANDIDATES}").glob("*"))
            if not pending and folder.finished() and not candidates_left:
                summary.nothing_to_do = True
                summary.num_samples = json.loads(store.read_bytes("dataset.json")).get("num_samples", 0)
                summary.seconds = time.perf_counter() - t0
                return summary

            candidates = OutputFolder(open_store(f"{store.location}/{CANDIDATES}"), name) if selecting else None
            shard_folder = candidates or folder
            to_make = [t for t in tasks if not shard_folder.is_finished(t.index)] if pending else []
            if candidates is not None and to_make:
                candidates.store.lock()
                candidates.remove_stale_temps()
            if to_make:
                done_samples = sum(t.size for t in tasks) - sum(t.size for t in to_make)
                progress.start(manifest.dataset.num_samples, len(tasks), done_samples, len(tasks) - len(to_make))
                job = ShardJob(manifest, to_make, shard_folder.store, name, quiet, threads)
                try:
                    summary.workers = executor.run(job, progress)
                finally:
                    progress.close()
                if job.reports:
                    folder.write_reports(job.reports)
                    summary.reports = job.reports
                summary.source_samples_made = sum(t.size for t in to_make)
                summary.threads = next((w.get("threads") for w in summary.workers if w.get("threads")), None)
            summary.shards_made = len(pending)

            stages = dataset_stages(Pipeline(manifest, quiet=quiet, threads=threads)) if any(issubclass(s.cls, DatasetStage) for s in manifest.stages) else []
            if candidates is not None and pending:  # a kill after the last final shard: candidates may be half removed
                _finalise(folder, candidates, tasks, pending, stages)
            metrics = measure(stages, load_table(folder, [t.index for t in tasks])) if stages else {}
            _summarise(folder, manifest, tasks, {t.index for t in pending}, summary, metrics)
            if candidates is not None:
                candidates.store.remove_all()
    finally:
        store.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _finalise(folder: OutputFolder, candidates: OutputFolder, tasks: list[ShardTask], pending: list[ShardTask], stages) -> None:
    """Selection over every candidate's table, then each pending final shard from its candidate."""
    table = load_table(candidates, [t.index for t in tasks])
    keep, why, _ = select(stages, table)
    dropped_scores = {k: sc for k, sc in zip(table.keys, table.scores) if k in why}
    selecting = [(step, stage) for step, stage in stages if step.cls.selects]
    for task in pending:
        own = table.shard == task.index
        counts, alive = {}, own.copy()
        for step, _ in selecting:  # rows in and out of each selecting stage, in this shard
            dropped_here = np.array([why.get(k, ("",))[0] == step.name for k in table.keys]) & alive
            counts[step.where] = [int(alive.sum()), int((alive & ~dropped_here).sum())]
            alive &= ~dropped_here
        try:
            write_final(folder, candidates, task.index, why, table.take(keep), counts, dropped_scores)
        except OSError as e:
            raise io_error(e, f"{folder.path}/{shard_name(folder.name, task.index)}") from None


def _summarise(folder: OutputFolder, manifest: Manifest, tasks: list[ShardTask], made: set[int], summary: RunSummary, metrics: dict | None = None) -> None:
    """dataset.json and the card from every shard's stats (written last: the run's end marker)."""
    stats = [folder.read_stats(t.index) for t in tasks]
    for st in stats:
        if st["shard"] in made:
            summary.samples_written += st["count"]
            for d in st.get("dropped", []):
                summary.dropped[f"{d['stage']}: {d['reason']}"] += 1
                if len(summary.drop_examples) < 3:
                    summary.drop_examples.append(f"{d['key']} ({d['stage']}): {d.get('detail') or d['reason']}")
            for step in manifest.stages:
                rows = st.get("stage_rows", {}).get(step.where)
                if step.cls.kind in ("filter", "dataset") and rows:
                    acc = summary.filter_rows.setdefault(f"{step.where} {step.name}", [0, 0])
                    acc[0], acc[1] = acc[0] + rows[0], acc[1] + rows[1]
    first = _first_sample(folder, stats)
    generator_info = json.loads(first["json"]).get("generator") if first else None
    fields = _fields_from_shards(folder, stats)
    info = dataset_json(manifest, stats, generator_info, fields)
    reports = folder.read_reports()
    if reports:
        info["reports"] = reports
    if metrics:
        info["metrics"] = metrics
        summary.metrics = metrics
    try:
        folder.write_own({"dataset.json": json.dumps(info, indent=1, sort_keys=True).encode(), "README.md": readme_card(manifest, info).encode()})
    except OSError as e:
        raise io_error(e, f"{folder.path}/dataset.json") from None
    summary.num_samples = info["num_samples"]


def _first_sample_of(folder: OutputFolder, file: str) -> dict | None:
    with folder.store.open(file) as fh:
        return next(iter_samples(fh, limit=1), None)


def _first_sample(folder: OutputFolder, stats: list[dict]) -> dict | None:
    for st in stats:
        if st["count"]:
            return _first_sample_of(folder, st["file"])
    return None


def _fields_from_shards(folder: OutputFolder, stats: list[dict]) -> list[str]:
    """Fields every sample carries (read from the first non-empty shard), checked across shards."""
    found = None
    for st in stats:
        if st["count"] == 0:
            continue
        fields = sorted(k for k in _first_sample_of(folder, st["file"]) if k != "__key__")
        if found is None:
            found = fields
        elif fields != found:
            raise RunError(f"shard {st['file']} has fields {fields}, earlier shards {found}")
    return found or []
