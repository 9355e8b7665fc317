"""What the operators alone share: the norm-preserving mix of a latent with noise (views and
their sigma = "auto" calibration). The kit every expander uses is the core's synth.expand."""

from __future__ import annotations

import numpy as np


def mix(z: np.ndarray, e: np.ndarray, sigma: float) -> np.ndarray:
    """Norm-preserving for Gaussian latents: sqrt(1 - s^2) z + s e keeps N(0, I) as N(0, I)."""
    return (np.sqrt(1.0 - sigma * sigma) * z + sigma * e).astype(np.float32)
