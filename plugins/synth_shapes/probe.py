"""`shapes` attribute probe: what a shapes-world image shows, read by the shipped oracle
segmenter, as the attributes a classifier might rely on: the main (largest) shape's kind, colour,
size and position, how many shapes there are, and the background's colour. ``changed`` applies
thresholds a person would agree with on 32 px scenes (a kind or count that differs, a colour
0.2 apart in RGB, a radius 15% larger or smaller (an area about 30%), a centre 0.12 of the image
away). Size is the radius the world draws a shape with, read from its area and kind, so that a
triangle redrawn as a square of the same radius keeps its size: by area, the square would be
twice as large.

``changed`` follows the same shapes: after an edit, the main shape is the kind that covers most
of where the main shape was, not whichever kind is largest now. Otherwise an edit that grows
a second shape a little past the first would count as a change of kind, colour, size and
position at once, though a person sees one shape grow."""

from __future__ import annotations

import numpy as np

from synth.protocols import PluginConfig, Probe

from .classify import largest_shape
from .world import AREA_PER_RADIUS2, TAG_MIN_PIXELS

ATTRIBUTES = ("kind", "colour", "size", "position", "count", "background")


class ShapesProbeConfig(PluginConfig):
    pass


def _count(mask: np.ndarray) -> int:
    from scipy import ndimage

    parts, n = ndimage.label(mask)
    return int(sum((parts == k).sum() >= TAG_MIN_PIXELS for k in range(1, n + 1)))


def _main_shape(pixels: np.ndarray, labels: np.ndarray, kinds: np.ndarray) -> dict[str, list]:
    """Kind, colour, size (radius, a share of the image's side) and position of each image's
    shapes of the given kind (0: none)."""
    h, w = labels.shape[1:]
    yy, xx = (np.mgrid[0:h, 0:w] + 0.5) / np.array([h, w])[:, None, None]
    out = {a: [] for a in ("kind", "colour", "size", "position")}
    for im, lab, k in zip(pixels, labels, kinds):
        main = lab == k if k else np.zeros_like(lab, bool)
        out["kind"].append(k)
        out["colour"].append(im[main].mean(0) if main.any() else np.full(3, np.nan))
        out["size"].append(float(np.sqrt(main.mean() / AREA_PER_RADIUS2[int(k)])) if k else 0.0)
        out["position"].append(np.array([xx[main].mean(), yy[main].mean()]) if main.any() else np.full(2, np.nan))
    return out


def _followed(before: dict[str, np.ndarray], labels_after: np.ndarray) -> np.ndarray:
    """Per image, the kind that covers most of where ``before``'s main shape was; the largest kind
    where none of it is covered by a shape any more."""
    out = largest_shape(labels_after)
    for i, (lab_b, k, lab_a) in enumerate(zip(before["_labels"], before["kind"], labels_after)):
        under = lab_a[(lab_b == k) & (lab_a != 0)] if k else np.zeros(0, int)
        if len(under):
            out[i] = np.bincount(under).argmax()
    return out


class ShapesProbe(Probe):
    """The shapes world's attributes (kind, colour, size, position, count, background), by the oracle."""

    name = "shapes"
    Config = ShapesProbeConfig

    def setup(self) -> None:
        from .oracle import Oracle

        self.oracle = Oracle()
        self.attributes = list(ATTRIBUTES)

    def measure(self, images: np.ndarray) -> dict[str, np.ndarray]:
        labels, _ = self.oracle.predict(images)
        if labels.shape[1:] != images.shape[1:3]:  # the oracle reads 32 px; measure on its grid
            from PIL import Image

            images = np.stack([np.asarray(Image.fromarray(im).resize(labels.shape[1:][::-1], Image.BILINEAR)) for im in images])
        pixels = images.astype(np.float64) / 255.0
        out = {**_main_shape(pixels, labels, largest_shape(labels)), "count": [], "background": []}
        for im, lab in zip(pixels, labels):
            out["count"].append(_count(lab != 0))
            out["background"].append(im[lab == 0].mean(0) if (lab == 0).any() else np.full(3, np.nan))
        # kept for changed(), which follows the main shape into an edited image
        return {**{a: np.asarray(v) for a, v in out.items()}, "_labels": labels, "_pixels": pixels}

    def changed(self, before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        def far(a, b, limit):
            d = np.linalg.norm(np.asarray(a, float) - np.asarray(b, float), axis=-1)
            return np.where(np.isnan(d), np.isnan(a).any(-1) != np.isnan(b).any(-1), d > limit)

        if "_labels" in before and "_labels" in after:
            after = {**after, **{a: np.asarray(v) for a, v in _main_shape(after["_pixels"], after["_labels"], _followed(before, after["_labels"])).items()}}

        size_b, size_a = before["size"], after["size"]
        return {
            "kind": before["kind"] != after["kind"],
            "colour": far(before["colour"], after["colour"], 0.2),
            # at least 0.025 of the side (0.8 px at 32 px): about what the area rule allowed a small shape
            "size": np.abs(size_a - size_b) > np.maximum(0.15 * size_b, 0.025),
            "position": far(before["position"], after["position"], 0.12),
            "count": before["count"] != after["count"],
            "background": far(before["background"], after["background"], 0.12),
        }
