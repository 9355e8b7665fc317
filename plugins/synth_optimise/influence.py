"""The `influence` stage: what each sample would teach, as the alignment of its training gradient
with the validation set's.

At set-up a probe (the task's model) trains on the labelled validation images; its mean loss
gradient there is the direction that would still improve the validation score. Each sample's
gradient under the same probe (in the model's last layer, exact and cheap) is compared with it:
``scores.influence`` is their cosine, positive when a training step on the sample lowers the
validation loss (a first-order influence estimate, as TracIn takes at one checkpoint). A sample
with wrong labels, or showing what validation never does, points elsewhere. `select` with
``method = "influence"`` keeps the highest.

The probe must have learned something: on the shapes world with half the masks shuffled, a probe
of 20-60 steps ranks right and wrong masks alike (its gradients all say "find more shapes"),
one of 600 steps puts 24-27 right ones among the top 32 of 64 (tests/test_optimise.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from synth import tasks
from synth.batch import Batch
from synth.errors import UsageError
from synth.protocols import PlanContext, PluginConfig, Stage
from synth.seeding import sample_seed


class InfluenceConfig(PluginConfig):
    validation: str = Field(description="Labelled real images: a folder (NAME.seg.png beside each image, or class subfolders) or shards")
    task: dict[str, Any] = Field(default_factory=lambda: {"name": "segmentation"}, description='The downstream task whose model probes, e.g. {name = "segmentation"}')
    probe_steps: int = Field(600, ge=1, le=100_000, description="Training steps of the probe on the validation images")


class Influence(Stage):
    """Record ``influence``: the cosine between a sample's training gradient and the validation
    set's, under a probe trained on the validation images."""

    name = "influence"
    kind = "transform"
    Config = InfluenceConfig
    scores = frozenset({"influence"})

    @classmethod
    def check_plan(cls, config: InfluenceConfig, plan: PlanContext) -> list[str]:
        problems = []
        try:
            task = tasks.build(plan.registry, config.task, plan.classes, where="task")
        except UsageError as e:
            return [str(e)]
        if len(plan.classes) < 2:
            problems.append("the task needs [dataset].classes (the label names)")
        if not plan.resolve_path(config.validation).exists():
            problems.append(f"validation: no such folder {plan.resolve_path(config.validation)}")
        declared = [s for s in plan.earlier() if s.cls.seg in ("makes", "drops")]
        if task.target == "seg" and declared and declared[-1].cls.seg == "drops":
            problems.append(f"task {task.name!r} needs masks, and {declared[-1].name!r} drops them: put a labeller (pixelhead, attention, sam) before influence")
        return problems

    def setup(self) -> None:
        self.task = tasks.build(self.context.registry, self.config.task, self.context.classes, where=f"{self.name}.task")
        x, y = tasks.read_labelled(self.context, self.config.validation, self.task.target, f"{self.name}.validation")
        self._probe(x, y)

    def _probe(self, x: np.ndarray, y: np.ndarray) -> None:
        train = self.task.Config(**{**self.task.config.model_dump(), "steps": self.config.probe_steps})
        probe_task = type(self.task)(train, self.context.classes)
        self.model = probe_task.train(x, y, sample_seed(self.context.seed, 0, "influence-probe"))
        self.direction = self.task.sample_gradients(self.model, x, y).mean(0)
        self.direction /= max(float(np.linalg.norm(self.direction)), 1e-12)

    def process(self, batch: Batch) -> Batch:
        if self.task.target == "seg":
            if batch.seg is None:
                raise UsageError(f"{self.name}: samples {batch.keys[0]}.. carry no masks; put a labelling stage before influence")
            targets = np.asarray(batch.seg).astype(np.int64)
        else:
            ids = [r.get("class") for r in batch.records]
            if any(c is None for c in ids):
                raise UsageError(f"{self.name}: sample {batch.keys[ids.index(None)]} has no class; the {self.task.name} task needs one")
            targets = np.asarray(ids, np.int64)
        g = self.task.sample_gradients(self.model, batch.images, targets)
        cos = g @ self.direction / np.maximum(np.linalg.norm(g, axis=1), 1e-12)
        for rec, c in zip(batch.records, cos):
            rec.setdefault("scores", {})["influence"] = round(float(c), 6)
        return batch
