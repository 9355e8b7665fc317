"""`classify`: each image's class from an image classifier (any registered one), with its
confidence. The classifier's class names map to [dataset].classes by name (case, spaces and
underscores ignored) or through `labels`; only the logits of mapped names compete.

The usual classifiers have short forms: `model = "..."` is {name = "transformers", model = ...};
`method = "zero_shot"` with `extractor` is {name = "zero_shot", extractor = ...} over
[dataset].classes without `skip`; any other: `classifier = {name = ..., ...}`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from synth import classifiers, extractors
from synth.batch import Batch
from synth.devices import DEVICE_PATTERN, accelerator_resources
from synth.errors import UsageError
from synth.protocols import PluginConfig, Stage
from synth.refs import ClassifierRef

from .classifiers import ZeroShotClassifier


def _norm(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").split())


class ClassifyConfig(PluginConfig):
    method: Literal["model", "zero_shot"] = Field("model", description="model: an image-classification model (or the classifier table); zero_shot: CLIP against a prompt per class")
    model: str | None = Field(None, description="method = model: hub id or local folder of a transformers image-classification model")
    revision: str | None = None
    classifier: ClassifierRef | None = Field(None, description='Any registered classifier, e.g. {name = "torch", path = "models/my-classifier"}')
    labels: dict[str, str] = Field(default_factory=dict, description="Classifier class -> dataset class, where the names differ")
    extractor: str | dict[str, Any] | None = Field(None, description='method = zero_shot: a CLIP extractor table, e.g. {name = "clip", model = "openai/clip-vit-base-patch32"}')
    prompt: str = Field("a photo of a {}", description="method = zero_shot: the text per class ({} is the class name)")
    skip: list[str] = Field(default_factory=lambda: ["background"], description="Classes no image is labelled with (background)")
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    batch_size: int = Field(64, ge=1)
    added_later = frozenset({"classifier"})

    @model_validator(mode="after")
    def _what_each_method_needs(self):
        if self.classifier is not None:
            if self.model is not None or self.method != "model" or not isinstance(self.classifier.get("name"), str):
                raise ValueError('classifier = {name = ...} stands alone: no model or method with it')
            return self
        if self.method == "model" and not self.model:
            raise ValueError('method = "model" needs model = "<hub id or folder>" (or give classifier = {name = ...})')
        if self.method == "zero_shot" and self.extractor is None:
            raise ValueError('method = "zero_shot" needs extractor = {name = "clip", model = "..."}')
        if "{}" not in self.prompt:
            raise ValueError("prompt needs {} where the class name goes")
        return self

    def classifier_table(self, classes: list[str]) -> dict[str, Any]:
        if self.classifier is not None:
            return dict(self.classifier)
        if self.method == "zero_shot":
            return {"name": "zero_shot", "extractor": self.extractor, "prompt": self.prompt, "classes": [c for c in classes if c not in self.skip]}
        return {"name": "transformers", "model": self.model, "revision": self.revision, "device": self.device, "batch_size": self.batch_size}


class Classify(Stage):
    """Each image's class (the index in [dataset].classes) from a classifier, with
    scores.class_confidence (the softmax probability of that class among the candidates)."""

    name = "classify"
    kind = "transform"
    Config = ClassifyConfig
    scores = frozenset({"class_confidence"})

    @classmethod
    def resources(cls, config):
        # the transformers classifier runs on the stage's device; zero-shot on its extractor's
        return accelerator_resources(config.device) if config.method == "model" and config.classifier is None else super().resources(config)

    @staticmethod
    def _check_classes(config, classes: list[str]) -> list[str]:
        if not [c for c in classes if c not in config.skip]:
            return ["classify needs [dataset].classes (the names it labels with)"]
        unknown = sorted(set(config.labels.values()) - set(classes))
        if unknown:
            return [f"labels: {unknown[0]!r} is not one of [dataset].classes {list(classes)}"]
        return []

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        wrong = cls._check_classes(config, plan.classes)
        if wrong:  # the classifier's own check needs the class names right
            return wrong
        if config.classifier is not None:
            return []  # a classifier table: checked as a reference (synth.refs)
        # the short forms (model, zero_shot) make a classifier table; they name their own fields
        return [p.removeprefix("classifier.") for p in classifiers.check(plan, config.classifier_table(plan.classes))]

    def setup(self) -> None:
        classes = list(self.context.classes)
        self.classifier = classifiers.get(self.context, self.config.classifier_table(classes))
        by_name = {_norm(c): i for i, c in enumerate(classes)}
        mapping = {_norm(k): v for k, v in self.config.labels.items()}
        self.columns, self.candidates = [], []
        for j, label in enumerate(self.classifier.classes):
            k = by_name.get(_norm(mapping.get(_norm(label), label)))
            if k is not None and classes[k] not in self.config.skip:
                self.columns.append(j)
                self.candidates.append(k)
        if not self.candidates:
            names = list(self.classifier.classes)[:5]
            raise UsageError(f"stage 'classify': none of the model's labels ({', '.join(map(str, names))}, ...) is one of [dataset].classes; map them with labels = {{...}}")

    def _probabilities(self, batch: Batch) -> np.ndarray:
        clf = self.classifier
        if isinstance(clf, ZeroShotClassifier):  # its image features are shared with later stages that ask
            logits = clf.logits(batch.images, extractors.features(self.context, batch, clf.config.extractor))
        else:
            logits = clf.logits(batch.images)
        logits = np.asarray(logits, np.float64)[:, self.columns]
        logits = logits - logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def process(self, batch: Batch) -> Batch:
        if not len(batch):
            return batch
        p = self._probabilities(batch)
        best = p.argmax(1)
        for rec, j, row in zip(batch.records, best, p):
            rec["class"] = int(self.candidates[int(j)])
            rec.setdefault("scores", {})["class_confidence"] = round(float(row[j]), 5)
        return batch
