"""One class per region: a labeller that labels pixels one at a time (the pixel head, attention
maps) often leaves a shape a patchwork of classes. Here each region of labelled (non-background)
pixels whose neighbours differ in colour by at most a tolerance takes the class most of its
pixels were given. A core kit for labeller plugins; scipy is imported only when it runs."""

from __future__ import annotations

import numpy as np


def colour_regions(image: np.ndarray, foreground: np.ndarray, tolerance: int) -> np.ndarray:
    """(H, W) region ids of the ``foreground`` pixels of ``image`` (H, W, 3) uint8, -1 elsewhere:
    4-neighbours join when both are foreground and no channel differs by more than ``tolerance``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    h, w = foreground.shape
    ids = np.arange(h * w).reshape(h, w)
    colour = image.astype(np.int16)
    every, head, tail = slice(None), slice(0, -1), slice(1, None)
    rows, cols = [], []
    for a, b in (((every, head), (every, tail)), ((head, every), (tail, every))):  # right, then down neighbours
        joined = foreground[a] & foreground[b] & (np.abs(colour[a] - colour[b]).max(-1) <= tolerance)
        rows.append(ids[a][joined])
        cols.append(ids[b][joined])
    r, c = np.concatenate(rows), np.concatenate(cols)
    _, region = connected_components(coo_matrix((np.ones(len(r)), (r, c)), shape=(h * w, h * w)), directed=False)
    region = region.reshape(h, w)
    region[~foreground] = -1
    return region


def vote_in_regions(image: np.ndarray, labels: np.ndarray, tolerance: int, background: int = 0) -> np.ndarray:
    """``labels`` (H, W) with each colour region of non-background pixels set to its most common
    class (ties: the lower class id). Background pixels, and so the foreground's outline, stay."""
    region = colour_regions(image, labels != background, tolerance)
    out = labels.copy()
    inside = region >= 0
    if not inside.any():
        return out
    _, rid = np.unique(region[inside], return_inverse=True)
    cls = labels[inside]
    # counts[r, c]: pixels of region r labelled c; the winner per region by argmax (first on ties)
    counts = np.zeros((rid.max() + 1, max(int(labels.max()), background) + 1), np.int64)
    np.add.at(counts, (rid, cls), 1)
    counts[:, background] = -1
    out[inside] = counts.argmax(1)[rid]
    return out


def vote_each(images: np.ndarray, labels: np.ndarray, tolerance: int, background: int = 0) -> np.ndarray:
    """vote_in_regions on each of ``images`` (N, H, W, 3) and its ``labels`` (N, H, W)."""
    return np.stack([vote_in_regions(image, one, tolerance, background) for image, one in zip(images, labels)])


def instances_of(mask: np.ndarray, background: int = 0):
    """Yield (class id, (H, W) bool region) for each 4-connected region of one class of ``mask``
    (H, W) class ids, ``background`` excepted: its instances, as far as a class mask tells."""
    from scipy import ndimage

    for c in np.unique(mask):
        if c == background:
            continue
        parts, n = ndimage.label(mask == c)
        for i in range(1, n + 1):
            yield int(c), parts == i
