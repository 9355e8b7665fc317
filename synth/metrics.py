"""Fidelity and diversity of generated samples, on features (numpy only).

precision/recall: Kynkaanniemi et al. 2019 (k-NN hyperspheres around real, resp. fake, features);
density/coverage: Naeem et al. 2020. Distances are computed in blocks so 10k x 10k stays small.
"""

from __future__ import annotations

import numpy as np


def pairwise_sq_dists(a: np.ndarray, b: np.ndarray, block: int = 2048) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    bb = (b * b).sum(1)
    out = np.empty((len(a), len(b)), np.float64)
    for i in range(0, len(a), block):
        x = a[i : i + block]
        out[i : i + block] = np.maximum((x * x).sum(1)[:, None] + bb[None, :] - 2.0 * x @ b.T, 0.0)
    return out


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row to its k-th nearest other row."""
    d = pairwise_sq_dists(x, x)
    np.fill_diagonal(d, np.inf)
    return np.sqrt(np.partition(d, k - 1, axis=1)[:, k - 1])


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """precision, recall, density, coverage of fake features against real ones."""
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"need more than k={k} real and fake samples")
    r_real = knn_radii(real, k)
    r_fake = knn_radii(fake, k)
    d = np.sqrt(pairwise_sq_dists(real, fake))  # (R, F)
    inside_real = d <= r_real[:, None]  # fake j inside real sphere i
    precision = float(inside_real.any(axis=0).mean())
    recall = float((d <= r_fake[None, :]).any(axis=1).mean())
    density = float(inside_real.sum(axis=0).mean() / k)
    coverage = float((d.min(axis=1) <= r_real).mean())
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}
