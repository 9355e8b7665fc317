"""Which rows get which features: a generated sample's own path needs its initial latent.

With feature source "trajectory", rows that are untouched generated samples (a latent, and no op
after generation changed the image) are read from their denoising path; every other row (a real
image, a perturbed view) is inverted by the generator instead. The two groups are extracted
separately so a row's features never depend on which rows share its batch.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def feature_groups(
    generator, spec, images: np.ndarray, conditions: Sequence[dict], latents: Sequence | None, decode: Sequence | None = None
) -> Iterator[tuple[np.ndarray, list]]:
    """Yield (row indices, feature pyramid of those rows), together covering every row once.

    ``latents[i]`` is row i's initial latent, or None when it has none worth replaying;
    ``decode[i]`` how it was decoded ({"index", "seed"}: a stochastic sampler's noise).
    """
    n = len(images)
    if getattr(spec, "source", "noised") != "trajectory" or latents is None:
        yield np.arange(n), generator.features(images, list(conditions), spec)
        return
    with_latent = np.array([i for i in range(n) if latents[i] is not None], dtype=np.int64)
    without = np.array([i for i in range(n) if latents[i] is None], dtype=np.int64)
    if len(with_latent):
        z = np.stack([latents[i] for i in with_latent])
        how = None if decode is None else [decode[i] for i in with_latent]
        yield with_latent, generator.features(images[with_latent], [conditions[i] for i in with_latent], spec, latents=z, decode=how)
    if len(without):
        yield without, generator.features(images[without], [conditions[i] for i in without], spec)
