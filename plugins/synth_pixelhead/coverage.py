"""How well the labelled images cover each class, said before the head trains on them.

A head learns a class from its labelled instances, not from the number of labelled images: on
the shapes world, triangles held by 4-9 labelled regions (1.8-4.4% of the labelled pixels) came
out at IoU 0.06-0.31 (mean 0.18), by 13-24 regions at 0.27-0.34 (mean 0.32) (README, "How many
images to label"). A rough rule; a user told so can label a few more images that show the class."""

from __future__ import annotations

import numpy as np

MIN_REGIONS = 10  # fewer labelled regions than this ...
MIN_SHARE = 0.05  # ... and less than this share of the labelled pixels: a thin class


def class_coverage(masks: np.ndarray, num_classes: int) -> tuple[list[int], list[int]]:
    """Per class id: its labelled pixels and its regions (4-connected, counted per mask) in
    ``masks`` (N, H, W)."""
    from scipy import ndimage

    pixels = np.bincount(masks.ravel().astype(np.int64), minlength=num_classes)[:num_classes]
    regions = [0] * num_classes
    for mask in masks:
        for c in np.unique(mask):
            if c < num_classes:
                regions[int(c)] += ndimage.label(mask == c)[1]
    return pixels.tolist(), regions


def thin_classes(pixels: list[int], regions: list[int], classes: list[str]) -> list[str]:
    """One sentence per class the labels hold too little of, naming it and its counts."""
    total = max(1, sum(pixels))
    out = []
    for name, p, r in zip(classes, pixels, regions):
        if p == 0:
            out.append(f"no labelled pixels of '{name}': the head will never label it")
        elif r < MIN_REGIONS and p / total < MIN_SHARE:
            out.append(
                f"'{name}' has {r} labelled region{'s' if r != 1 else ''} ({p} pixels, {p / total:.1%} of the labelled pixels): "
                f"a class with fewer than {MIN_REGIONS} is often learnt poorly; label more images that show it"
            )
    return out
