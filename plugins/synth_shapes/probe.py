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


CHANGED = 1.5  # the amount of an all-or-nothing change (a kind, a count, a shape that vanishes)


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

    def amount(self, before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """How far each attribute moved, in units of what counts as a change: a colour 0.2 apart
        (RGB, 0..1), a position 0.12 of the image, a background 0.12, a size by 30% (at least 2% of
        the image); a kind or a count that differs, or a shape that appears or vanishes, is 1.5."""

        def far(a, b, limit):
            d = np.linalg.norm(np.asarray(a, float) - np.asarray(b, float), axis=-1) / limit
            return np.where(np.isnan(d), np.where(np.isnan(a).any(-1) != np.isnan(b).any(-1), CHANGED, 0.0), d)

        size_b, size_a = before["size"], after["size"]
        return {
            "kind": np.where(before["kind"] != after["kind"], CHANGED, 0.0),
            "colour": far(before["colour"], after["colour"], 0.2),
            "size": np.abs(size_a - size_b) / np.maximum(0.3 * size_b, 0.02),
            "position": far(before["position"], after["position"], 0.12),
            "count": np.where(before["count"] != after["count"], CHANGED, 0.0),
            "background": far(before["background"], after["background"], 0.12),
        }

    def changed(self, before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {a: v > 1 for a, v in self.amount(before, after).items()}
