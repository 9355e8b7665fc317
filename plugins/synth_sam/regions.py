"""Masks as numbers: boxes, connected regions of a label map, interior points, stability, NMS,
small-region clean-up, and painting instances into id and class maps."""

from __future__ import annotations

import numpy as np


def box_xyxy(mask: np.ndarray) -> list[int]:
    """Tightest box [x0, y0, x1, y1] (inclusive pixel indices) around a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def box_xywh(mask: np.ndarray) -> list[int]:
    """[x, y, width, height] as COCO and segment-anything's records give it; zeros when empty."""
    if not mask.any():
        return [0, 0, 0, 0]
    x0, y0, x1, y1 = box_xyxy(mask)
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


def class_regions(seg: np.ndarray, background: int, min_area: int) -> list[tuple[int, np.ndarray]]:
    """Connected regions (8-connectivity) of every non-background class, largest first:
    [(class id, mask)]. Regions smaller than ``min_area`` pixels are left out."""
    from scipy import ndimage

    out = []
    for c in np.unique(seg):
        if int(c) == background:
            continue
        labelled, n = ndimage.label(seg == c, structure=np.ones((3, 3), bool))
        for i in range(1, n + 1):
            m = labelled == i
            if m.sum() >= min_area:
                out.append((int(c), m))
    out.sort(key=lambda cm: (-int(cm[1].sum()), cm[0], box_xyxy(cm[1])))
    return out


def interior_points(mask: np.ndarray, n: int) -> np.ndarray:
    """``n`` points (x, y) well inside a region: the one farthest from its border, then each next
    the farthest (inside the region) from the border and from the points chosen so far."""
    from scipy import ndimage

    if n <= 0:
        return np.zeros((0, 2), np.float32)
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    ys, xs = np.nonzero(mask)
    score = depth[ys, xs].astype(np.float64)
    chosen = []
    for _ in range(min(n, len(xs))):
        i = int(np.argmax(score))  # ties: the first in row-major order, so the choice is stable
        chosen.append((xs[i], ys[i]))
        score = np.minimum(score, np.hypot(xs - xs[i], ys - ys[i]))
    return np.asarray(chosen, np.float32)


def stability_score(logits: np.ndarray, offset: float) -> np.ndarray:
    """IoU of the mask thresholded at +offset with the one at -offset (SAM's stability), per mask."""
    flat = logits.reshape(len(logits), -1)
    inner = (flat > offset).sum(1)
    outer = (flat > -offset).sum(1)
    return np.where(outer > 0, inner / np.maximum(outer, 1), 0.0)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def nms(masks: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Indices kept by non-maximum suppression on the masks' boxes (torchvision's, as SAM uses),
    highest score first."""
    import torch
    from torchvision.ops import nms as box_nms

    if len(masks) == 0:
        return []
    boxes = torch.tensor([box_xyxy(m) for m in masks], dtype=torch.float32)
    boxes[:, 2:] += 1  # inclusive pixel indices -> box edges
    return box_nms(boxes, torch.as_tensor(scores, dtype=torch.float32), threshold).tolist()


def remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """The mask without islands and holes smaller than ``min_area`` pixels."""
    from scipy import ndimage

    out = mask.copy()
    for value in (True, False):  # islands, then holes
        labelled, n = ndimage.label(out == value)
        if n == 0:
            continue
        sizes = ndimage.sum(np.ones_like(labelled), labelled, index=np.arange(1, n + 1))
        small = np.isin(labelled, 1 + np.nonzero(sizes < min_area)[0])
        if value and small.all():  # never erase the whole mask
            continue
        out[small] = not value
    return out


def paint(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Instance map: ids 1..N in list order, later (smaller) instances drawn over earlier ones."""
    inst = np.zeros(shape, np.uint16)
    for i, m in enumerate(masks, start=1):
        inst[m] = i
    return inst
