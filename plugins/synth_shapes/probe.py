"""`shapes` attribute probe: what a shapes-world image shows, read by the shipped oracle
segmenter, as the attributes a classifier might rely on: the main (largest) shape's kind, colour,
size and position, how many shapes there are, and the background's colour. ``changed`` applies
thresholds a person would agree with on 32 px scenes (a kind or count that differs, a colour
0.2 apart in RGB, an area 30% larger or smaller, a centre 0.12 of the image away)."""

from __future__ import annotations

import numpy as np

from synth.protocols import PluginConfig, Probe

from .classify import largest_shape
from .world import TAG_MIN_PIXELS

ATTRIBUTES = ("kind", "colour", "size", "position", "count", "background")


class ShapesProbeConfig(PluginConfig):
    pass


def _count(mask: np.ndarray) -> int:
    from scipy import ndimage

    parts, n = ndimage.label(mask)
    return int(sum((parts == k).sum() >= TAG_MIN_PIXELS for k in range(1, n + 1)))


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
        kind = largest_shape(labels)
        pixels = images.astype(np.float64) / 255.0
        h, w = labels.shape[1:]
        yy, xx = (np.mgrid[0:h, 0:w] + 0.5) / np.array([h, w])[:, None, None]
        out = {a: [] for a in ATTRIBUTES}
        for im, lab, k in zip(pixels, labels, kind):
            main = lab == k if k else np.zeros_like(lab, bool)
            fg, bg = lab != 0, lab == 0
            out["kind"].append(k)
            out["colour"].append(im[main].mean(0) if main.any() else np.full(3, np.nan))
            out["size"].append(main.mean())
            out["position"].append(np.array([xx[main].mean(), yy[main].mean()]) if main.any() else np.full(2, np.nan))
            out["count"].append(_count(fg))
            out["background"].append(im[bg].mean(0) if bg.any() else np.full(3, np.nan))
        return {a: np.asarray(v) for a, v in out.items()}

    def changed(self, before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        def far(a, b, limit):
            d = np.linalg.norm(np.asarray(a, float) - np.asarray(b, float), axis=-1)
            return np.where(np.isnan(d), np.isnan(a).any(-1) != np.isnan(b).any(-1), d > limit)

        size_b, size_a = before["size"], after["size"]
        return {
            "kind": before["kind"] != after["kind"],
            "colour": far(before["colour"], after["colour"], 0.2),
            "size": np.abs(size_a - size_b) > np.maximum(0.3 * size_b, 0.02),
            "position": far(before["position"], after["position"], 0.12),
            "count": before["count"] != after["count"],
            "background": far(before["background"], after["background"], 0.12),
        }
