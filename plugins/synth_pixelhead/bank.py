"""A bounded store of training pixels: fp16 features + class ids, filled image by image.

DatasetGAN and ddpm-segmentation hold every pixel's features of every training image at once
(16 x 512 x 512 x 5088 features: 128 GB at peak). Neighbouring pixels carry almost the same
information, so we keep a fixed budget of pixels, spread evenly over the images and sampled at
random within each (seeded per image), and never build a full-resolution feature map: pixels
are read straight from the feature pyramid (features.sample_pixels).
"""

from __future__ import annotations

import numpy as np

from synth.seeding import sample_rng


class PixelBank:
    def __init__(self, channels: int, num_images: int, pixels_per_image: int, budget_bytes: int):
        self.channels = channels
        row_bytes = 2 * channels
        cap = max(1, budget_bytes // row_bytes)
        self.per_image = max(1, min(pixels_per_image, cap // max(1, num_images)))
        self.capacity = self.per_image * num_images
        self.features = np.empty((self.capacity, channels), np.float16)
        self.labels = np.empty(self.capacity, np.int64)
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def pick(self, seed: int, image_index: int, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (rows, cols) of this image's pixels to keep: all of them when they fit, else a
        random subset (from (seed, image index) only)."""
        h, w = mask.shape
        flat = np.arange(h * w)
        if h * w > self.per_image:
            flat = np.sort(sample_rng(seed, image_index, "pixelhead-pixels").choice(h * w, self.per_image, replace=False))
        return flat // w, flat % w

    def add(self, feats: np.ndarray, labels: np.ndarray) -> None:
        k = len(labels)
        if self.n + k > self.capacity:
            raise ValueError("pixel bank over capacity")
        self.features[self.n : self.n + k] = feats
        self.labels[self.n : self.n + k] = labels
        self.n += k

    def rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.features[idx], self.labels[idx]

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std (float64 sums over ~32 MB chunks: no full-size copy)."""
        chunk = max(64, (32 << 20) // (8 * self.channels))
        s = np.zeros(self.channels)
        s2 = np.zeros(self.channels)
        for i in range(0, self.n, chunk):
            x = self.features[i : i + chunk].astype(np.float64)
            s += x.sum(0)
            s2 += (x * x).sum(0)
        mean = s / max(1, self.n)
        std = np.sqrt(np.maximum(s2 / max(1, self.n) - mean**2, 0)) + 1e-4
        return mean.astype(np.float32), std.astype(np.float32)

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels[: self.n], minlength=num_classes).tolist()
