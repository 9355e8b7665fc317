"""`classify`: each image's class from an image classifier, with its confidence.

method = "model": a transformers image-classification model (AutoModelForImageClassification,
safetensors, no remote code); its labels map to [dataset].classes by name (case and spaces
ignored) or through `labels`, and only the logits of mapped labels compete.
method = "zero_shot": CLIP, through the clip extractor, against one prompt per class
("a photo of a {}"), the classes being [dataset].classes without `skip` (background).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from synth import extractors
from synth.batch import Batch
from synth.errors import RunError, UsageError
from synth.paths import model_ref
from synth.protocols import PluginConfig, Stage


def _norm(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").split())


class ClassifyConfig(PluginConfig):
    method: Literal["model", "zero_shot"] = Field("model", description="model: an image-classification model; zero_shot: CLIP against a prompt per class")
    model: str | None = Field(None, description="method = model: hub id or local folder of a transformers image-classification model")
    revision: str | None = None
    labels: dict[str, str] = Field(default_factory=dict, description="method = model: model label -> dataset class, where the names differ")
    extractor: str | dict[str, Any] | None = Field(None, description='method = zero_shot: a CLIP extractor table, e.g. {name = "clip", model = "openai/clip-vit-base-patch32"}')
    prompt: str = Field("a photo of a {}", description="method = zero_shot: the text per class ({} is the class name)")
    skip: list[str] = Field(default_factory=lambda: ["background"], description="Classes no image is labelled with (background)")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    batch_size: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _what_each_method_needs(self):
        if self.method == "model" and not self.model:
            raise ValueError('method = "model" needs model = "<hub id or folder>"')
        if self.method == "zero_shot" and self.extractor is None:
            raise ValueError('method = "zero_shot" needs extractor = {name = "clip", model = "..."}')
        if "{}" not in self.prompt:
            raise ValueError("prompt needs {} where the class name goes")
        return self


class Classify(Stage):
    """Each image's class (the index in [dataset].classes) from a classifier, with
    scores.class_confidence (the softmax probability of that class among the candidates)."""

    name = "classify"
    kind = "transform"
    Config = ClassifyConfig
    scores = frozenset({"class_confidence"})

    @classmethod
    def check_context(cls, config, classes: list[str]) -> list[str]:
        if not [c for c in classes if c not in config.skip]:
            return ["classify needs [dataset].classes (the names it labels with)"]
        unknown = sorted(set(config.labels.values()) - set(classes))
        if unknown:
            return [f"labels: {unknown[0]!r} is not one of [dataset].classes {list(classes)}"]
        return []

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        if config.method == "zero_shot":
            return extractors.check(plan, config.extractor)
        where, local = model_ref(config.model, plan.resolve_path)
        return [f"model: no such folder {where}"] if local and not Path(where).is_dir() else []

    def setup(self) -> None:
        classes = list(self.context.classes)
        self.candidates = [i for i, c in enumerate(classes) if c not in self.config.skip]
        if self.config.method == "zero_shot":
            ex = extractors.get(self.context, self.config.extractor)
            self.text = ex.embed_text([self.config.prompt.format(classes[i]) for i in self.candidates])
        else:
            self._load_model(classes)

    def _load_model(self, classes: list[str]) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        where, _ = model_ref(self.config.model, self.context.resolve_path)
        try:
            self.model = AutoModelForImageClassification.from_pretrained(where, revision=self.config.revision, trust_remote_code=False)
            self.processor = AutoImageProcessor.from_pretrained(where, revision=self.config.revision, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise RunError(f"stage 'classify': cannot load {self.config.model!r}: {str(e).splitlines()[0]} (offline? a local folder works)") from None
        dev = self.config.device
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if dev == "auto" else dev)
        self.model.to(self.device).eval()
        self.torch = torch
        by_name = {_norm(c): i for i, c in enumerate(classes)}
        mapping = {_norm(k): v for k, v in self.config.labels.items()}
        self.logit_rows, self.candidates = [], []
        for j, label in sorted(self.model.config.id2label.items()):
            target = mapping.get(_norm(label), label)
            k = by_name.get(_norm(target))
            if k is not None and classes[k] not in self.config.skip:
                self.logit_rows.append(int(j))
                self.candidates.append(k)
        if not self.candidates:
            names = list(self.model.config.id2label.values())[:5]
            raise UsageError(f"stage 'classify': none of the model's labels ({', '.join(map(str, names))}, ...) is one of [dataset].classes; map them with labels = {{...}}")

    def _probabilities(self, batch: Batch) -> np.ndarray:
        images = batch.images
        if self.config.method == "zero_shot":
            img = extractors.features(self.context, batch, self.config.extractor)  # shared with later stages that ask
            logits = 100.0 * (img / np.linalg.norm(img, axis=1, keepdims=True)) @ (self.text / np.linalg.norm(self.text, axis=1, keepdims=True)).T
        else:
            torch = self.torch
            parts = []
            with torch.inference_mode():
                for s in range(0, len(images), self.config.batch_size):
                    x = self.processor(images=list(images[s : s + self.config.batch_size]), return_tensors="pt")["pixel_values"].to(self.device)
                    parts.append(self.model(pixel_values=x).logits.float().cpu().numpy())
            logits = np.concatenate(parts)[:, self.logit_rows]
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
