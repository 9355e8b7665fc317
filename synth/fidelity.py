"""Fidelity and diversity of a set of features against a reference set, in bounded memory.

- precision / recall (Kynkaanniemi et al. 2019) and density / coverage (Naeem et al. 2020, as the
  prdc package defines them), with k-NN radii (k = 3);
- the realism score of each sample (Kynkaanniemi et al.): max over reference r of
  radius_r / d(g, r), over the reference spheres whose radius is at most the median (outliers'
  huge spheres would make anything look real); >= 1 means inside the reference manifold;
- FID (Frechet distance between Gaussians fitted to the features) and KID (unbiased MMD^2 with
  the cubic polynomial kernel, averaged over random subsets, as torchmetrics and torch-fidelity).

Never an N x M distance matrix: distances are computed in row blocks (``block`` rows against all
of the other set, float32), reduced on the fly to what each metric needs. numpy only.
"""

from __future__ import annotations

import numpy as np

BLOCK = 512


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _block_sq(a: np.ndarray, b: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of the rows of ``a`` to every row of ``b`` (float32, in place)."""
    d = a @ b.T
    d *= -2.0
    d += _sq_norms(a)[:, None]
    d += bb[None, :]
    np.maximum(d, 0, out=d)
    return d


def _block_dists(a: np.ndarray, b: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """Euclidean distances of the rows of ``a`` to every row of ``b`` (float32)."""
    d = _block_sq(a, b, bb)
    return np.sqrt(d, out=d)


def _f32(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def pairwise_sq_dists(a: np.ndarray, b: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """The full (A, B) matrix of squared distances, float64: for small sets and checks only; the
    metrics below never build it."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    bb = _sq_norms(b)
    out = np.empty((len(a), len(b)), np.float64)
    for s in range(0, len(a), block):
        out[s : s + block] = _block_sq(a[s : s + block], b, bb)
    return out


def knn_radii(x: np.ndarray, k: int, block: int = BLOCK) -> np.ndarray:
    """Distance of each row to its k-th nearest other row."""
    x = _f32(x)
    xx = _sq_norms(x)
    out = np.empty(len(x), np.float32)
    for s in range(0, len(x), block):
        d = _block_sq(x[s : s + block], x, xx)  # squared: the order is the same, the sqrt is for k values only
        d[np.arange(len(d)), np.arange(s, s + len(d))] = np.inf  # not itself
        out[s : s + block] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return np.sqrt(out)


def nearest(a: np.ndarray, b: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each row of ``a``'s nearest row in ``b``."""
    a, b = _f32(a), _f32(b)
    bb = _sq_norms(b)
    dist, idx = np.empty(len(a), np.float32), np.empty(len(a), np.int64)
    for s in range(0, len(a), block):
        d = _block_dists(a[s : s + block], b, bb)
        j = d.argmin(1)
        idx[s : s + block] = j
        dist[s : s + block] = d[np.arange(len(d)), j]
    return dist, idx


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 3, block: int = BLOCK) -> dict[str, float]:
    """precision, recall, density, coverage of ``fake`` against ``real`` (prdc's definitions)."""
    real, fake = _f32(real), _f32(fake)
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"need more than k={k} real and fake samples (got {len(real)} and {len(fake)})")
    r_real, r_fake = knn_radii(real, k, block), knn_radii(fake, k, block)
    r2_real, r2_fake = r_real.astype(np.float64) ** 2, r_fake.astype(np.float64) ** 2
    ff = _sq_norms(fake)
    inside_count = np.zeros(len(fake), np.int64)  # how many real spheres hold each fake
    recall_hits = coverage_hits = 0
    for s in range(0, len(real), block):  # one pass over real x fake, squared distances throughout
        d = _block_sq(real[s : s + block], fake, ff)  # (block, F)
        inside = d <= r2_real[s : s + block, None].astype(np.float32)
        inside_count += inside.sum(0)
        recall_hits += int((d <= r2_fake[None, :].astype(np.float32)).any(1).sum())  # real inside some fake sphere
        coverage_hits += int(inside.any(1).sum())  # some fake inside the real sphere (its nearest is)
    return {
        "precision": float((inside_count > 0).mean()),
        "recall": recall_hits / len(real),
        "density": float(inside_count.sum() / (k * len(fake))),
        "coverage": coverage_hits / len(real),
    }


def realism(real: np.ndarray, fake: np.ndarray, k: int = 3, block: int = BLOCK, radii: np.ndarray | None = None) -> np.ndarray:
    """The realism score of each fake (>= 1: inside the real manifold)."""
    real, fake = _f32(real), _f32(fake)
    r = knn_radii(real, k, block) if radii is None else _f32(radii)
    keep = r <= np.median(r)
    real, r = real[keep], r[keep]
    rr = _sq_norms(real)
    out = np.empty(len(fake), np.float32)
    for s in range(0, len(fake), block):
        d = _block_dists(fake[s : s + block], real, rr)
        out[s : s + block] = (r[None, :] / np.maximum(d, 1e-12)).max(1)
    return out


def _sqrtm_psd_trace(a: np.ndarray, b: np.ndarray) -> float:
    """trace(sqrt(a b)) for symmetric PSD a, b: sqrt(a) b sqrt(a) is symmetric PSD, same spectrum."""
    w, v = np.linalg.eigh(a)
    sa = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = sa @ b @ sa
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def gaussian(x: np.ndarray, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased) of features, accumulated in float64 blocks."""
    n, d = x.shape
    s = np.zeros(d)
    ss = np.zeros((d, d))
    for i in range(0, n, block):
        c = np.asarray(x[i : i + block], np.float64)
        s += c.sum(0)
        ss += c.T @ c
    mu = s / n
    cov = (ss - n * np.outer(mu, mu)) / (n - 1)
    return mu, cov


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    mu1, s1 = gaussian(real)
    mu2, s2 = gaussian(fake)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * _sqrtm_psd_trace(s1, s2))


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID mean and std over random subsets (cubic polynomial kernel k(x, y) = (x.y / d + 1)^3)."""
    n = min(len(real), len(fake))
    if n < 2:
        raise ValueError("KID needs at least 2 real and 2 fake samples")
    m = min(subset_size, n)
    rng = np.random.default_rng(seed)
    d = real.shape[1]
    vals = []
    for _ in range(subsets):
        x = np.asarray(real[rng.choice(len(real), m, replace=False)], np.float64)
        y = np.asarray(fake[rng.choice(len(fake), m, replace=False)], np.float64)
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        np.fill_diagonal(kxx, 0)
        np.fill_diagonal(kyy, 0)
        vals.append(kxx.sum() / (m * (m - 1)) + kyy.sum() / (m * (m - 1)) - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))
