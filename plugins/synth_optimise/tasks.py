"""The built-in tasks: segmentation (the label-efficiency bench's U-Net, scored by mIoU) and
classification (the views bench's CNN, scored by accuracy). Both train on the CPU, in seconds to
minutes at 32-64 px."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from synth.protocols import PluginConfig, Task
from synth.segmetrics import class_ious, mean_iou

from . import models


class SegmentationConfig(PluginConfig):
    steps: int = Field(300, ge=1, le=1_000_000, description="Training steps of the U-Net")
    batch_size: int = Field(32, ge=1, le=4096)
    lr: float = Field(1e-3, gt=0, le=1)
    width: int = Field(16, ge=4, le=256, description="Channels of the U-Net's first block (doubling twice)")


class SegmentationTask(Task):
    """A small U-Net trained on the samples' seg.png; score: mIoU on the validation masks."""

    name = "segmentation"
    Config = SegmentationConfig
    target = "seg"
    score = "miou"

    def train(self, images: np.ndarray, targets: np.ndarray, seed: int) -> Any:
        import torch

        c = self.config
        return models.train_segmenter(torch, [(images, targets, 1.0)], c.steps, seed, len(self.classes), batch=c.batch_size, lr=c.lr, width=c.width)

    def evaluate(self, model: Any, images: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        import torch

        pred = models.segment(torch, model, images)
        ious = class_ious(pred, targets, len(self.classes))
        out = {"miou": round(mean_iou(ious), 6)}
        out.update({f"iou_{name}": round(float(v), 6) for name, v in zip(self.classes, ious) if not np.isnan(v)})
        return out

    def sample_gradients(self, model: Any, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        # The loss's gradient in the last 1x1 convolution, per image: the product of each pixel's
        # (softmax - one-hot) with the features under it, summed (exact for that layer, one pass).
        import torch

        out = []
        with torch.inference_mode():
            for s in range(0, len(images), 128):
                x, y = models.to_tensors(torch, images[s : s + 128], targets[s : s + 128])
                feats = model.features(x)
                err = torch.softmax(model.out(feats), 1) - torch.nn.functional.one_hot(y, len(self.classes)).permute(0, 3, 1, 2).float()
                pixels = err.shape[2] * err.shape[3]
                weight = torch.einsum("nkhw,nchw->nkc", err, feats) / pixels
                bias = err.mean((2, 3))
                out.append(torch.cat([weight.flatten(1), bias], 1).numpy())
        return np.concatenate(out).astype(np.float32)


    def save(self, model: Any, folder, image_size: tuple[int, int]) -> None:
        from .task_model import save_task_model

        save_task_model(self, model, folder, image_size, width=self.config.width)


class ClassificationConfig(PluginConfig):
    steps: int = Field(300, ge=1, le=1_000_000, description="Training steps of the CNN")
    batch_size: int = Field(64, ge=1, le=4096)
    lr: float = Field(1e-3, gt=0, le=1)
    augment: list[models.Augment] = Field(
        default_factory=list,
        description="What each training batch is turned by, where the class does not change with it: a random quarter turn, a mirror, the colour channels' order",
    )


class ClassificationTask(Task):
    """A small CNN trained on the samples' class; score: accuracy on the validation images."""

    name = "classification"
    Config = ClassificationConfig
    target = "class"
    score = "accuracy"

    def train(self, images: np.ndarray, targets: np.ndarray, seed: int) -> Any:
        import torch

        c = self.config
        return models.train_classifier(torch, images, targets, c.steps, seed, len(self.classes), batch=c.batch_size, lr=c.lr, augment=tuple(c.augment))

    def evaluate(self, model: Any, images: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        import torch

        pred = models.classify(torch, model, images)
        out = {"accuracy": round(float((pred == targets).mean()), 6)}
        for c, name in enumerate(self.classes):
            if (targets == c).any():
                out[f"recall_{name}"] = round(float((pred[targets == c] == c).mean()), 6)
        return out

    def sample_gradients(self, model: Any, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        # Gradient of the cross-entropy in the last linear layer: (softmax - one-hot) x features.
        import torch

        body, head = model[:-1], model[-1]
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), 256):
                feats = body(models.pixels(torch, images[s : s + 256]))
                err = torch.softmax(head(feats), 1) - torch.nn.functional.one_hot(torch.from_numpy(targets[s : s + 256].astype(np.int64)), len(self.classes)).float()
                out.append(torch.cat([torch.einsum("nk,nc->nkc", err, feats).flatten(1), err], 1).numpy())
        return np.concatenate(out).astype(np.float32)

    def save(self, model: Any, folder, image_size: tuple[int, int]) -> None:
        from .task_model import save_task_model

        save_task_model(self, model, folder, image_size)
