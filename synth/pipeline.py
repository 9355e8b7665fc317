"""A manifest's generator and stages, instantiated and set up once, run batch by batch."""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np

from .batch import Batch, inherit_labels
from .errors import RunError, SynthError
from .manifest import Manifest, Step
from .plugins import one_line
from .protocols import DatasetStage, RunContext
from .threads import Threads, apply_threads

# Every sample's json carries these keys (Hugging Face's loader infers one schema from a few
# samples): group (a parent and its children share it), decode (what regenerates the image),
# class_soft (an interpolation between two classes).
COMMON_RECORD_FIELDS = {"scores": {}, "class": None, "class_name": None, "condition": {}, "lineage": [], "group": None, "decode": None, "class_soft": None}


def _range_text(keys: list[str]) -> str:
    if not keys:
        return "(empty batch)"
    return keys[0] if len(keys) == 1 else f"{keys[0]}..{keys[-1]}"


class Pipeline:
    def __init__(self, manifest: Manifest, quiet: bool = False, threads: Threads | None = None):
        self.manifest = manifest
        self.threads_wanted = threads or manifest.run.threads
        self.context = RunContext(
            seed=manifest.dataset.seed,
            manifest_dir=manifest.folder,
            classes=list(manifest.dataset.classes),
            registry=manifest.registry,
            quiet=quiet,
            num_samples=manifest.dataset.num_samples,
            batch_size=manifest.run.batch_size,
            latent_dtype=manifest.dataset.latent_dtype,
        )
        self.generator = None
        if manifest.generator is not None:
            self.generator = manifest.generator.cls(manifest.generator.config, self.context)
            self.context.generator = self.generator
        per_sample = [s for s in manifest.stages if not issubclass(s.cls, DatasetStage)]
        self.steps: list[tuple[Step, object]] = [(s, s.cls(s.config, self.context)) for s in per_sample]
        self.dataset_steps = [s for s in manifest.stages if issubclass(s.cls, DatasetStage)]
        self.is_set_up = False
        self.timings: dict[str, float] = {}
        self.rows: dict[str, list[int]] = {}  # per step: [rows in, rows out] since reset_rows()

    def setup(self, shared: dict[str, Any] | None = None) -> None:
        """Set the generator and every stage up; with ``shared`` (another process's
        ``shared_state()``), stages adopt what was computed there instead of recomputing it."""
        if self.is_set_up:
            return
        self.threads = apply_threads(self.threads_wanted)  # before set-up imports the model library
        if self.generator is not None:
            self._guard(self.manifest.generator, "set-up", self.generator.setup)
        for step, stage in self.steps:
            if shared is not None and shared.get(step.where) is not None:
                self._guard(step, "set-up", lambda: stage.adopt(shared[step.where]))
            else:
                self._guard(step, "set-up", stage.setup)
        apply_threads(self.threads)  # and after, should set-up have imported it before us
        self.is_set_up = True

    def reports(self) -> dict[str, dict]:
        """Each stage's set-up report (Stage.report), by location."""
        out = {}
        for step, stage in self.steps:
            rep = stage.report()
            if rep is not None:
                out[step.where] = {"stage": step.name, **rep}
        return out

    def shared_state(self) -> dict[str, Any]:
        """What other processes need to set this pipeline up identically (Stage.share)."""
        return {step.where: stage.share() for step, stage in self.steps}

    def describe_generator(self) -> dict | None:
        return self.generator.describe() if self.generator is not None else None

    def run_batch(self, indices: Sequence[int]) -> Batch:
        """Source stage on these indices, then every per-sample stage in order."""
        (source_step, source), rest = self.steps[0], self.steps[1:]
        first = f"s{indices[0]:08d}" if indices else ""
        last = f"s{indices[-1]:08d}" if indices else ""
        batch = self._timed(source_step, lambda: source.produce(indices), first if first == last else f"{first}..{last}")
        self._check_batch(source_step, batch)
        self._count(source_step, len(indices), len(batch))
        for step, stage in rest:
            if len(batch) == 0:
                self._count(step, 0, 0)  # every stage has counts for every shard
                continue
            keys = _range_text(batch.keys)
            parents = batch
            batch = self._timed(step, lambda: stage.process(parents), keys)
            self._check_batch(step, batch)
            self._count(step, len(parents), len(batch))
            if stage.kind == "expand":
                inherit_labels(parents, batch)
        for rec in batch.records:
            for k, v in COMMON_RECORD_FIELDS.items():
                rec.setdefault(k, type(v)() if v is not None else None)
        return self._drop_non_finite(batch)

    def _drop_non_finite(self, batch: Batch) -> Batch:
        """A sample whose latent (as latent.npy will store it) or a score is inf or NaN is dropped
        with the reason, never written: its image is black or noise, and its json unreadable. So
        is one its generator withheld (condition "withheld": why, e.g. a safety checker's flag)."""
        reasons = [""] * len(batch)
        for i, rec in enumerate(batch.records):
            withheld = (rec.get("condition") or {}).get("withheld")
            if withheld:
                reasons[i] = f"withheld by the generator: {withheld}"
                continue
            if batch.latents is not None and not np.isfinite(self.context.as_stored(batch.latents[i])).all():
                reasons[i] = f"latent is not finite (inf or NaN as {self.context.latent_dtype} stores it)"
            bad = [k for k, v in (rec.get("scores") or {}).items() if isinstance(v, float) and not math.isfinite(v)]
            if bad and not reasons[i]:
                reasons[i] = f"score {bad[0]} is not finite"
        if not any(reasons):
            return batch
        return batch.keep([not r for r in reasons], "synth", [r or "-" for r in reasons], [r for r in reasons])

    def _count(self, step: Step, rows_in: int, rows_out: int) -> None:
        counts = self.rows.setdefault(step.where, [0, 0])
        counts[0] += rows_in
        counts[1] += rows_out

    def reset_rows(self) -> dict[str, list[int]]:
        """The [rows in, rows out] of every step since the last reset (a shard's), then zero."""
        rows, self.rows = self.rows, {}
        return rows

    def _timed(self, step: Step, fn, keys: str):
        t0 = time.perf_counter()
        out = self._guard(step, f"samples {keys}", fn)
        self.timings[step.where] = self.timings.get(step.where, 0.0) + time.perf_counter() - t0
        return out

    def _guard(self, step: Step, what: str, fn):
        try:
            return fn()
        except SynthError:
            raise
        except Exception as e:  # a plugin's failure: one line naming the stage, its code and the samples
            kind = "generator" if step.where == "generator" else "stage"
            info = self.manifest.registry.plugin_of(kind, step.name)
            package = f" ({info.package})" if info else ""
            raise RunError(f"{step.where} {step.name!r}{package} failed on {what}: {one_line(e)}") from e

    @staticmethod
    def _check_batch(step: Step, batch) -> None:
        if not isinstance(batch, Batch):
            raise RunError(f"{step.where} {step.name!r} returned {type(batch).__name__}, expected a Batch")
