"""A task's trained downstream model, saved so other parts can ask it what it gets wrong:
``save_task_model`` writes a folder (``task-model.json``: the task, its classes, the image size it
trained at, the architecture; ``task-model.safetensors``: weights), and the ``task_model``
classifier reads it. A segmentation model gives per-pixel logits (``per_pixel``), so
``[generator.feedback]`` can steer sampling toward the scenes whose pixels it is unsure of: the
segmentation task's own uncertainty, not a stand-in classifier's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from synth.devices import DEVICE_PATTERN, torch_device
from synth.errors import RunError, UsageError
from synth.protocols import Classifier, PluginConfig

from . import models

FILES = ("task-model.json", "task-model.safetensors")


def save_task_model(task, model: Any, folder: Path, image_size: tuple[int, int], width: int | None = None) -> Path:
    """``model`` (trained by ``task``) as the ``task_model`` classifier reads it."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arch = {"kind": "small_unet", "width": width} if task.target == "seg" else {"kind": "small_classifier"}
    meta = {"task": task.name, "target": task.target, "classes": task.classes, "image_size": list(image_size), "architecture": arch}
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(folder / FILES[1]))
    (folder / FILES[0]).write_text(json.dumps(meta, indent=1))  # last: a folder with the json is whole
    return folder


class TaskModelConfig(PluginConfig):
    path: str = Field(description="A folder save_task_model wrote (synth optimise writes the best trial's as best-model/)")
    device: str = Field("auto", pattern=DEVICE_PATTERN)


class TaskModelClassifier(Classifier):
    """A task's downstream model: per-image logits for a classification task, per-pixel logits
    (N, C, H, W) for a segmentation one (usable where gradients are asked for: feedback)."""

    name = "task_model"
    Config = TaskModelConfig

    @classmethod
    def _folder(cls, config, resolve_path) -> Path:
        return Path(resolve_path(config.path))

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        folder = cls._folder(config, plan.resolve_path)
        missing = [f for f in FILES if not (folder / f).is_file()]
        return [f"path: {folder} has no {', '.join(missing)} (a folder synth optimise or save_task_model wrote)"] if missing else []

    def setup(self) -> None:
        import torch
        from safetensors.torch import load_file

        folder = self._folder(self.config, self.context.resolve_path)
        meta = json.loads((folder / FILES[0]).read_text())
        arch = meta.get("architecture") or {}
        self.classes = list(meta["classes"])
        self.image_size = tuple(meta["image_size"])
        self.per_pixel = meta.get("target") == "seg"
        if arch.get("kind") == "small_unet":
            net = models.small_unet(torch, len(self.classes), width=int(arch.get("width") or 16))
        elif arch.get("kind") == "small_classifier":
            net = models.small_classifier(torch, len(self.classes))
        else:
            raise RunError(f"classifier {folder}: unknown architecture {arch.get('kind')!r} (this plugin builds small_unet, small_classifier)")
        net.load_state_dict(load_file(str(folder / FILES[1])))
        self.torch, self.folder = torch, folder
        self.device = torch_device(torch, self.config.device)
        self.net = net.to(self.device).eval()

    def describe(self) -> dict:
        return {"name": self.name, "path": self.config.path, "classes": self.classes, "per_pixel": self.per_pixel}

    def differentiable(self, pixels):
        return self.net(pixels.to(self.device) * 2 - 1)  # the tasks' models take [-1, 1]

    def logits(self, images: np.ndarray) -> np.ndarray:
        if self.per_pixel:
            raise UsageError(f"classifier {self.folder.name}: a segmentation model gives per-pixel logits, not one class per image (use it for feedback)")
        torch = self.torch
        with torch.inference_mode():
            return self.net(models.pixels(torch, images).to(self.device)).float().cpu().numpy()
