"""Segmentation quality: one confusion matrix over every pixel of every image, per-class IoU
from it, mIoU as their mean over the classes that occur (in truth or prediction).

The same definition everywhere: `synth evaluate`, bench/label_efficiency.py and
bench/generator_quality.py use these functions.
"""

from __future__ import annotations

import numpy as np


def confusion(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) pixel counts, rows = truth, columns = prediction; ids outside 0..K-1 are an error."""
    pred, truth = np.asarray(pred).ravel().astype(np.int64), np.asarray(truth).ravel().astype(np.int64)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction has {pred.size} pixels, truth {truth.size}")
    for name, arr in (("prediction", pred), ("truth", truth)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} has class id {int(arr.max() if arr.max() >= num_classes else arr.min())} outside 0..{num_classes - 1}")
    return np.bincount(truth * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def class_ious_from(conf: np.ndarray) -> list[float]:
    """IoU per class; nan for a class absent from both truth and prediction."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan).tolist()


def class_ious(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> list[float]:
    return class_ious_from(confusion(pred, truth, num_classes))


def mean_iou(ious) -> float:
    vals = [v for v in ious if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def miou(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    return mean_iou(class_ious(pred, truth, num_classes))
