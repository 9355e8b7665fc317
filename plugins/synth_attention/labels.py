"""From per-class maps to class-id labels: pure numpy, no model.

The maps come from the generator (``Generator.attention`` or ``Generator.contrast``): for each
class of [dataset].classes, how much its token is attended at each pixel (zero for classes the
sample's condition does not name), and the null token's share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rule:
    """How a pixel gets its class from the maps."""

    background: int  # class id of background
    by_null: bool  # True: background where the null map beats every named class's
    thresholds: tuple[float, ...]  # per class id (by_null False): share of its own maximum to reach


def refine(classes: np.ndarray, null: np.ndarray, selfs: np.ndarray, side: tuple[int, int], power: int) -> tuple[np.ndarray, np.ndarray]:
    """Dataset Diffusion's refinement: each map at the self-attention's resolution, multiplied by
    the self-attention (rows: a query's distribution over keys) raised to ``power``, so a pixel
    takes the attention of the pixels it attends to; back at the image's size."""
    import torch
    import torch.nn.functional as F

    b, c, h, w = classes.shape
    stack = torch.from_numpy(np.concatenate([null[:, None], classes], 1))
    small = F.interpolate(stack, size=side, mode="area").reshape(b, c + 1, -1).transpose(1, 2)  # (B, N, C+1)
    attn = torch.from_numpy(selfs)
    step = attn
    for _ in range(power - 1):
        step = step @ attn
    out = (step @ small).transpose(1, 2).reshape(b, c + 1, *side)
    out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False).numpy()
    return out[:, 1:], out[:, 0]


def scaled(classes: np.ndarray) -> np.ndarray:
    """Each class map stretched to 0..1 over the image, from its minimum to its maximum (as
    DiffuMask normalises a word's map); a constant map becomes 0."""
    flat = classes.reshape(*classes.shape[:2], -1)
    lo, hi = flat.min(-1)[..., None, None], flat.max(-1)[..., None, None]
    span = hi - lo
    return np.where(span > 0, (classes - lo) / np.where(span > 0, span, 1), 0.0).astype(np.float32)


def label(classes: np.ndarray, named: np.ndarray, null: np.ndarray, rule: Rule) -> tuple[np.ndarray, np.ndarray]:
    """(labels (B, H, W) int64, pixel uncertainty (B, H, W) in 0..1: one minus the margin between
    the two best candidates, background among them)."""
    b, c, h, w = classes.shape
    if rule.by_null:
        total = null + classes.sum(1)
        share = classes / np.where(total > 0, total, 1)[:, None]
        back = null / np.where(total > 0, total, 1)
        score = np.where(named[..., None, None], share, -np.inf)
    else:
        t = np.asarray(rule.thresholds, np.float32)[None, :, None, None]
        score = np.where(named[..., None, None], scaled(classes) / t, -np.inf)
        # background takes a pixel where no class reaches its threshold (score 1); margins are
        # measured on the same scale, capped so one very strong map does not hide the rest
        score = np.minimum(score, 2.0) / 2.0
        back = np.full((b, h, w), 0.5, np.float32)
    score[:, rule.background] = -np.inf
    full = np.concatenate([back[:, None], score], 1)
    order = np.sort(full, 1)
    margin = np.clip(order[:, -1] - np.where(np.isfinite(order[:, -2]), order[:, -2], 0), 0, 1)
    best = full.argmax(1)
    labels = np.where(best == 0, rule.background, best - 1).astype(np.int64)
    return labels, (1.0 - margin).astype(np.float32)


def classes_of_regions(regions: np.ndarray, classes: np.ndarray, named: np.ndarray, background: int) -> np.ndarray:
    """Keep the regions an earlier labeller drew (its non-background pixels, split into
    4-connected regions) and give each the named class with the most attention inside it."""
    from scipy import ndimage

    out = np.full(regions.shape, background, np.int64)
    weights = np.where(named[..., None, None], scaled(classes), -1.0)
    weights[:, background] = -1.0
    for i in range(len(regions)):
        comp, n = ndimage.label(regions[i] != background)
        if n == 0:
            continue
        # per region, per class: the summed scaled attention inside it
        sums = np.stack([ndimage.sum_labels(weights[i, k], comp, index=np.arange(1, n + 1)) for k in range(classes.shape[1])], 1)
        winner = sums.argmax(1)
        out[i][comp > 0] = winner[comp[comp > 0] - 1]
    return out


def image_uncertainty(pixels: np.ndarray, top_fraction: float) -> np.ndarray:
    """Per image: the mean of its ``top_fraction`` most uncertain pixels (as DatasetGAN scores)."""
    flat = np.sort(pixels.reshape(len(pixels), -1), 1)
    k = max(1, int(round(flat.shape[1] * top_fraction)))
    return flat[:, -k:].mean(1)


def iou(pred: np.ndarray, truth: np.ndarray, k: int) -> float | None:
    """IoU of class k over a set of label maps (None when it occurs in neither)."""
    p, t = pred == k, truth == k
    union = (p | t).sum()
    return None if union == 0 else float((p & t).sum() / union)


def mean_iou(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    values = [v for v in (iou(pred, truth, k) for k in range(num_classes)) if v is not None]
    return float(np.mean(values)) if values else 0.0


def calibrate(classes: np.ndarray, named: np.ndarray, null: np.ndarray, truth: np.ndarray, background: int, grid: np.ndarray | None = None) -> tuple[Rule, dict]:
    """The rule that labels the labelled examples best: the null rule, or per-class thresholds
    (each class's threshold chosen for its own IoU, the others held, twice round); returns it
    and what each candidate scored."""
    c = classes.shape[1]
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2) if grid is None else grid
    null_rule = Rule(background, True, (0.5,) * c)
    scores = {"null": mean_iou(label(classes, named, null, null_rule)[0], truth, c)}
    thresholds = [0.4] * c
    for _ in range(2):
        for k in range(c):
            if k == background or not named[:, k].any():
                continue
            best, best_iou = thresholds[k], -1.0
            for t in grid:
                trial = thresholds.copy()
                trial[k] = float(t)
                value = iou(label(classes, named, null, Rule(background, False, tuple(trial)))[0], truth, k) or 0.0
                if value > best_iou + 1e-9:
                    best, best_iou = float(t), value
            thresholds[k] = best
    threshold_rule = Rule(background, False, tuple(thresholds))
    scores["threshold"] = mean_iou(label(classes, named, null, threshold_rule)[0], truth, c)
    rule = null_rule if scores["null"] >= scores["threshold"] else threshold_rule
    return rule, {k: round(v, 4) for k, v in scores.items()}
