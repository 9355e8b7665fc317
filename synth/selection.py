"""Choosing a few varied samples: greedy k-center over features. A core kit: the select stage,
`synth export --pick` and the benches choose the same way."""

from __future__ import annotations

import numpy as np


def k_center(f: np.ndarray, order: np.ndarray, k: int) -> list[int]:
    """Greedy k-center: start from the first row of ``order``, then repeatedly the row farthest
    from everything chosen (ties: earliest in ``order``). O(N k) distances, O(N) memory."""
    if k <= 0:
        return []
    f = f[order]
    chosen = [0]
    dist = np.linalg.norm(f - f[0], axis=1)
    for _ in range(1, k):
        j = int(dist.argmax())  # first maximum: the lowest position in order
        chosen.append(j)
        dist = np.minimum(dist, np.linalg.norm(f - f[j], axis=1))
    return [int(order[j]) for j in chosen]
