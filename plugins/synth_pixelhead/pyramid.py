"""Feature pyramids: one (B, C_i, h_i, w_i) map per feature source, as generators return them.

Upsampling to the label resolution is linear, so a consumer can sample pixels straight from the
pyramid (training) or apply its first linear layer before upsampling (labelling), and never hold
a (C, H, W) map of thousands of channels at full resolution.
"""

from __future__ import annotations

import numpy as np


def upsample(pyramid: list, size: tuple[int, int]):
    """The full-resolution (B, sum C_i, H, W) map: bilinear, as DatasetGAN and ddpm-segmentation."""
    import torch
    import torch.nn.functional as F

    return torch.cat([F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in pyramid], dim=1)


def sample_pixels(pyramid: list, rows: np.ndarray, cols: np.ndarray, size: tuple[int, int], item: int):
    """Features (P, sum C_i) of image ``item`` at pixel (rows, cols) of an (H, W) label map.

    Equal to ``upsample(pyramid, size)[item, :, rows, cols].T`` without building the full map:
    grid_sample at the pixel centres, clamped at the border like F.interpolate.
    """
    import torch
    import torch.nn.functional as F

    h, w = size
    # normalised pixel centres; align_corners=False matches F.interpolate(..., align_corners=False)
    gx = (torch.as_tensor(cols, dtype=torch.float32) + 0.5) / w * 2 - 1
    gy = (torch.as_tensor(rows, dtype=torch.float32) + 0.5) / h * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).view(1, 1, -1, 2)
    parts = []
    for f in pyramid:
        g = grid.to(f.device)
        parts.append(F.grid_sample(f[item : item + 1], g, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T)
    return torch.cat(parts, dim=1)


def channels(pyramid: list) -> int:
    return int(sum(f.shape[1] for f in pyramid))
