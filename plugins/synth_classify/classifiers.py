"""The classifiers this plugin registers:

- ``torch``: a small convolutional network saved by synth (``classifier.json``: classes, image
  size, normalisation, architecture; ``classifier.safetensors``: weights), from a local folder
  or a registered ``builtin:`` name; ``save_classifier`` writes one (the benches train them);
- ``transformers``: an image-classification model (AutoModelForImageClassification, hub id or
  local folder, safetensors, no remote code), its classes the model's labels;
- ``zero_shot``: CLIP against one prompt per class (through the clip extractor).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import Field

from synth import extractors
from synth.devices import DEVICE_PATTERN, torch_device
from synth.errors import RunError, UsageError
from synth.paths import model_ref
from synth.protocols import Classifier, PluginConfig
from synth.refs import ExtractorRef

FILES = ("classifier.json", "classifier.safetensors")


def small_cnn(torch, classes: int, width: int = 16, depth: int = 3):
    """Conv-BN-ReLU blocks, each halving the size, global pooling and a linear layer."""
    nn = torch.nn
    layers, c = [], 3
    for i in range(depth):
        layers += [nn.Conv2d(c, width * 2**i, 3, padding=1), nn.BatchNorm2d(width * 2**i), nn.ReLU(), nn.MaxPool2d(2)]
        c = width * 2**i
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))


def save_classifier(module, folder: Path, classes: list[str], image_size: tuple[int, int], width: int, depth: int,
                    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> Path:
    """A ``small_cnn`` as the ``torch`` classifier reads it."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"classes": list(classes), "image_size": list(image_size), "mean": list(mean), "std": list(std), "architecture": {"kind": "small_cnn", "width": width, "depth": depth}}
    (folder / "classifier.json").write_text(json.dumps(meta, indent=1))
    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(folder / "classifier.safetensors"))
    return folder


class TorchClassifierConfig(PluginConfig):
    path: str = Field(description="Folder with classifier.json and classifier.safetensors, or builtin:NAME")
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    batch_size: int = Field(256, ge=1)


class TorchClassifier(Classifier):
    """A small convolutional classifier saved by synth (safetensors weights, JSON metadata)."""

    name = "torch"
    Config = TorchClassifierConfig

    @classmethod
    def _folder(cls, config, resolve_path, registry) -> Path:
        return Path(resolve_path(registry.resolve_model(config.path, "classifier")))

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        try:
            folder = cls._folder(config, plan.resolve_path, plan.registry)
        except UsageError as e:
            return [f"path: {e}"]
        missing = [f for f in FILES if not (folder / f).is_file()]
        return [f"path: {folder} has no {', '.join(missing)}"] if missing else []

    def setup(self) -> None:
        import torch
        from safetensors.torch import load_file

        folder = self._folder(self.config, self.context.resolve_path, self.context.registry)
        meta = json.loads((folder / "classifier.json").read_text())
        arch = meta.get("architecture") or {}
        if arch.get("kind") != "small_cnn":
            raise RunError(f"classifier {folder}: unknown architecture {arch.get('kind')!r} (this plugin builds small_cnn)")
        self.torch = torch
        self.classes = list(meta["classes"])
        self.image_size = tuple(meta["image_size"])
        self.device = torch_device(torch, self.config.device)
        self.net = small_cnn(torch, len(self.classes), int(arch.get("width", 16)), int(arch.get("depth", 3)))
        self.net.load_state_dict(load_file(str(folder / "classifier.safetensors")))
        self.net.to(self.device).eval()
        self.mean = torch.tensor(meta.get("mean", (0.5,) * 3), device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(meta.get("std", (0.5,) * 3), device=self.device).view(1, 3, 1, 1)
        self.folder = folder

    def describe(self) -> dict:
        return {"name": self.name, "path": self.config.path, "classes": self.classes}

    def differentiable(self, pixels):
        return self.net((pixels.to(self.device) - self.mean) / self.std)

    def logits(self, images: np.ndarray) -> np.ndarray:
        torch = self.torch
        h, w = self.image_size
        if images.shape[1:3] != (h, w):
            raise UsageError(f"classifier {self.folder.name}: images are {images.shape[2]}x{images.shape[1]}, it takes {w}x{h}")
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), self.config.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[s : s + self.config.batch_size])).permute(0, 3, 1, 2).float() / 255.0
                out.append(self.differentiable(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)


class TransformersClassifierConfig(PluginConfig):
    model: str = Field(description="Hub id or local folder of a transformers image-classification model")
    revision: str | None = None
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    batch_size: int = Field(64, ge=1)


class TransformersClassifier(Classifier):
    """An image-classification model through transformers; its classes are its labels."""

    name = "transformers"
    Config = TransformersClassifierConfig

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        where, local = model_ref(config.model, plan.resolve_path)
        return [f"model: no such folder {where}"] if local and not Path(where).is_dir() else []

    def setup(self) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        where, _ = model_ref(self.config.model, self.context.resolve_path)
        try:
            self.model = AutoModelForImageClassification.from_pretrained(where, revision=self.config.revision, trust_remote_code=False)
            self.processor = AutoImageProcessor.from_pretrained(where, revision=self.config.revision, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise RunError(f"classifier 'transformers': cannot load {self.config.model!r}: {str(e).splitlines()[0]} (offline? a local folder works)") from None
        self.torch = torch
        self.device = torch_device(torch, self.config.device)
        self.model.to(self.device).eval()
        self.classes = [str(label) for _, label in sorted(self.model.config.id2label.items())]

    def describe(self) -> dict:
        return {"name": self.name, "model": self.config.model, "revision": self.config.revision}

    def logits(self, images: np.ndarray) -> np.ndarray:
        torch = self.torch
        parts = []
        with torch.inference_mode():
            for s in range(0, len(images), self.config.batch_size):
                x = self.processor(images=list(images[s : s + self.config.batch_size]), return_tensors="pt")["pixel_values"].to(self.device)
                parts.append(self.model(pixel_values=x).logits.float().cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, len(self.classes)), np.float32)


class ZeroShotConfig(PluginConfig):
    extractor: ExtractorRef = Field(description='A CLIP extractor table, e.g. {name = "clip", model = "openai/clip-vit-base-patch32"}')
    prompt: str = Field("a photo of a {}", description="The text per class ({} is the class name)")
    classes: list[str] | None = Field(None, description="Its class names (default: [dataset].classes without background)")


class ZeroShotClassifier(Classifier):
    """CLIP: each image against one prompt per class, logits 100 x cosine."""

    name = "zero_shot"
    Config = ZeroShotConfig

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        problems = []
        if "{}" not in config.prompt:
            problems.append("prompt needs {} where the class name goes")
        return problems

    def setup(self) -> None:
        self.classes = list(self.config.classes or [c for c in self.context.classes if c != "background"])
        if not self.classes:
            raise UsageError("classifier 'zero_shot' needs class names ([dataset].classes or its own classes)")
        self.text = extractors.get(self.context, self.config.extractor).embed_text([self.config.prompt.format(c) for c in self.classes])
        self.text = self.text / np.linalg.norm(self.text, axis=1, keepdims=True)

    def describe(self) -> dict:
        return {"name": self.name, "extractor": self.config.extractor, "prompt": self.config.prompt}

    def logits(self, images: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        img = extractors.get(self.context, self.config.extractor).embed(images) if features is None else features
        return 100.0 * (img / np.linalg.norm(img, axis=1, keepdims=True)) @ self.text.T
