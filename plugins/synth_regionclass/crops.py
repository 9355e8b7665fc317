"""Regions as fixed-size crops: one square around each region, resampled to ``size`` x ``size``
(nearest pixel, so a silhouette stays binary), centred on the region's bounding box."""

from __future__ import annotations

import numpy as np

from synth.regions import instances_of


def crop(image: np.ndarray, region: np.ndarray, size: int, with_image: bool) -> np.ndarray:
    """(C, size, size) float32: the region's mask (and, with_image, its pixels in [-1, 1] where
    the mask is set) in the square around its bounding box, with a pixel and a half of margin."""
    ys, xs = np.nonzero(region)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    half = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 + 1.5
    steps = (np.arange(size) + 0.5) * (2 * half / size)
    yi, xi = np.floor(cy - half + steps).astype(int), np.floor(cx - half + steps).astype(int)
    h, w = region.shape
    inside = ((yi >= 0) & (yi < h))[:, None] & ((xi >= 0) & (xi < w))[None, :]
    yc, xc = np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)
    mask = (region[yc][:, xc] & inside).astype(np.float32)
    if not with_image:
        return mask[None]
    pixels = image[yc][:, xc].astype(np.float32) / 127.5 - 1
    return np.concatenate([(pixels * mask[..., None]).transpose(2, 0, 1), mask[None]])


def instances(images: np.ndarray, masks: np.ndarray, background: int, size: int, with_image: bool, min_pixels: int):
    """The labelled instances of (N, H, W, 3) ``images`` and their (N, H, W) class-id ``masks``:
    each 4-connected region of one class (not ``background``) with at least ``min_pixels``.
    Returns (crops (M, C, size, size), class ids (M,))."""
    crops, labels = [], []
    for image, mask in zip(images, masks):
        for c, region in instances_of(mask, background):
            if region.sum() >= min_pixels:
                crops.append(crop(image, region, size, with_image))
                labels.append(c)
    channels = 4 if with_image else 1
    if not crops:
        return np.zeros((0, channels, size, size), np.float32), np.zeros(0, np.int64)
    return np.stack(crops), np.array(labels, np.int64)
