"""Deterministic shapes scenes with exact class masks.

A scene is a textured background with a few circles, squares and triangles (rotated, sized,
coloured, possibly occluding each other). ``difficulty`` in [0, 1] raises the number of shapes,
their overlap, how often a shape's colour is close to the background or to another shape, the
background texture and the pixel noise. Every scene derives from (seed, index, split) only.
"""

from __future__ import annotations

import numpy as np

from synth.seeding import sample_rng

CLASSES = ("background", "circle", "square", "triangle")


def _background(rng, size: int, difficulty: float) -> tuple[np.ndarray, np.ndarray]:
    base = rng.uniform(0.1, 0.9, 3)
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    amp = 0.04 + 0.16 * difficulty
    kind = rng.integers(0, 3)
    if kind == 0:  # a linear gradient
        angle = rng.uniform(0, 2 * np.pi)
        tex = (np.cos(angle) * xx + np.sin(angle) * yy) - 0.5
    elif kind == 1:  # stripes
        freq = rng.uniform(2, 6)
        angle = rng.uniform(0, np.pi)
        tex = 0.5 * np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    else:  # smooth blotches: coarse noise, upsampled
        coarse = rng.standard_normal((5, 5))
        idx = np.minimum((np.arange(size) * 4 / size).astype(int), 3)
        frac = (np.arange(size) * 4 / size) - idx
        rows = coarse[idx] * (1 - frac)[:, None] + coarse[idx + 1] * frac[:, None]
        tex = 0.35 * (rows[:, idx] * (1 - frac) + rows[:, idx + 1] * frac)
    tint = rng.uniform(-1, 1, 3)
    img = base[None, None, :] + amp * tex[..., None] * (0.6 + 0.4 * tint)
    return img, base


def _shape_colour(rng, background: np.ndarray, others: list[np.ndarray], difficulty: float) -> np.ndarray:
    r = rng.random()
    if r < 0.35 * difficulty:  # close to the background: hard to see
        return np.clip(background + rng.uniform(-0.18, 0.18, 3), 0, 1)
    if others and r < 0.6 * difficulty:  # close to another shape: hard to tell apart
        return np.clip(others[rng.integers(len(others))] + rng.uniform(-0.12, 0.12, 3), 0, 1)
    for _ in range(10):  # otherwise a colour clearly away from the background
        c = rng.uniform(0, 1, 3)
        if np.abs(c - background).max() > 0.3:
            return c
    return c


# The area each kind covers when drawn with radius r (as _inside draws it), in units of r**2:
# a disc pi, a square of half-side 0.8 r 2.56, an equilateral triangle of circumradius r 3 sqrt(3) / 4.
AREA_PER_RADIUS2 = {1: float(np.pi), 2: 2.56, 3: 3 * np.sqrt(3) / 4}


def _inside(kind: int, xx, yy, cx, cy, r, angle):
    dx, dy = xx - cx, yy - cy
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if kind == 1:
        return dx * dx + dy * dy <= r * r
    if kind == 2:
        h = r * 0.8
        return (np.abs(u) <= h) & (np.abs(v) <= h)
    # equilateral triangle with circumradius r, as three half-planes
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        a = 2 * np.pi * k / 3 - np.pi / 2
        inside &= (np.cos(a) * u + np.sin(a) * v) <= r * 0.5
    return inside


def render(seed: int, index: int, size: int = 32, difficulty: float = 0.5, split: str = "train", supersample: int = 4):
    """One scene: (image uint8 HxWx3, mask uint8 HxW with ids into CLASSES)."""
    rng = sample_rng(seed, index, f"shapes:{split}")
    ss = supersample
    fine = size * ss
    img, bg = _background(rng, fine, difficulty)
    label = np.zeros((fine, fine), np.uint8)
    yy, xx = (np.mgrid[0:fine, 0:fine] + 0.5) / fine
    n = rng.integers(1, 3 + int(round(3 * difficulty)))
    colours: list[np.ndarray] = []
    min_r = 0.16 - 0.07 * difficulty
    for _ in range(n):
        kind = int(rng.integers(1, 4))
        r = rng.uniform(min_r, 0.3)
        cx, cy = rng.uniform(r * 0.6, 1 - r * 0.6, 2)
        colour = _shape_colour(rng, bg, colours, difficulty)
        colours.append(colour)
        m = _inside(kind, xx, yy, cx, cy, r, rng.uniform(0, 2 * np.pi))
        shade = 1.0 + (0.15 * difficulty) * (yy - cy) / max(r, 1e-3)  # a little shading
        img = np.where(m[..., None], np.clip(colour[None, None, :] * shade[..., None], 0, 1), img)
        label[m] = kind
    # Area-average the image; the mask takes the class covering most of each pixel.
    img = img.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    blocks = label.reshape(size, ss, size, ss).transpose(0, 2, 1, 3).reshape(size, size, ss * ss)
    counts = np.stack([(blocks == k).sum(-1) for k in range(len(CLASSES))], -1)
    mask = counts.argmax(-1).astype(np.uint8)
    img = img + rng.normal(0, 0.03 * difficulty, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), mask


def render_many(seed: int, indices, size: int = 32, difficulty: float = 0.5, split: str = "train"):
    pairs = [render(seed, i, size, difficulty, split) for i in indices]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


# A kind counts as shown when at least this many of its pixels survive occlusion: a sliver of
# one or two pixels is no longer recognisable as its kind.
TAG_MIN_PIXELS = 3


def tags_of(mask: np.ndarray) -> list[str]:
    """The kinds of shape a scene's mask shows, in CLASSES order (background is no tag)."""
    counts = np.bincount(mask.ravel(), minlength=len(CLASSES))
    return [CLASSES[k] for k in range(1, len(CLASSES)) if counts[k] >= TAG_MIN_PIXELS]
