"""Between a sample's pixels and SAM's input frame, both ways.

SAM's encoder takes a square of ``size`` pixels (1024 for the released models): the image is
resized so its longest side is ``size`` (so a 32 px sample is upsampled 32 times), normalised
and padded at the bottom and right. Prompts are scaled the same way. The mask decoder answers
with logits on a quarter-size grid of that square; masks come back by upsampling the logits to
the square, cropping the padding away and resizing to the sample's own size, then thresholding
at 0. Both backends go through these functions, so their only difference is the network.
"""

from __future__ import annotations

import numpy as np

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def resized_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """(h, w) scaled so the longer side is ``size`` (rounded as segment-anything rounds)."""
    scale = size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def to_input(images: np.ndarray, size: int, torch):
    """(B, H, W, 3) uint8 -> (B, 3, size, size) float: resized (bilinear), normalised, padded."""
    b, h, w, _ = images.shape
    nh, nw = resized_shape(h, w, size)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    if (nh, nw) != (h, w):
        x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h)
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    return torch.nn.functional.pad(x, (0, size - nw, 0, size - nh))


def coords_to_input(xy: np.ndarray, h: int, w: int, size: int) -> np.ndarray:
    """Pixel coordinates (..., 2) as (x, y) in the sample -> the same points in SAM's frame."""
    nh, nw = resized_shape(h, w, size)
    out = np.asarray(xy, np.float32).copy()
    out[..., 0] *= nw / w
    out[..., 1] *= nh / h
    return out


def boxes_to_input(boxes: np.ndarray, h: int, w: int, size: int) -> np.ndarray:
    """XYXY boxes (..., 4) in the sample -> SAM's frame."""
    b = np.asarray(boxes, np.float32).reshape(-1, 2, 2)
    return coords_to_input(b, h, w, size).reshape(np.shape(boxes))


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) matrix of torch's 1-D bilinear resize (align_corners=False, no antialias)."""
    m = np.zeros((out_size, in_size))
    src = np.maximum((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = src - i0
    np.add.at(m, (np.arange(out_size), i0), 1 - frac)
    np.add.at(m, (np.arange(out_size), i1), frac)
    return m


def logits_to_image(low_res, h: int, w: int, size: int, torch):
    """(N, K, s/4, s/4) mask logits -> (N, K, h, w) logits at the sample's size.

    The same as upsampling to the (size x size) input square, cropping the padding and resizing to
    (h, w), both bilinear, as segment-anything does, but as one small matrix product per axis
    (bilinear resizes are separable and linear): never a (N, K, size, size) tensor, which for
    the automatic mode's 192 masks per point batch would be 0.8 GB at size 1024."""
    nh, nw = resized_shape(h, w, size)
    low = low_res.shape[-1]
    rows = bilinear_matrix(nh, h) @ bilinear_matrix(low, size)[:nh]
    cols = bilinear_matrix(nw, w) @ bilinear_matrix(low, size)[:nw]
    my = torch.from_numpy(rows).to(low_res.device, torch.float32)
    mx = torch.from_numpy(cols).to(low_res.device, torch.float32)
    return torch.einsum("hi,nkij,wj->nkhw", my, low_res.float(), mx)


def mask_to_low_res(mask: np.ndarray, size: int, torch):
    """A (h, w) binary mask carried forward into SAM's frame and down to the decoder's grid, as
    logits (+10 inside, -10 outside): the inverse of ``logits_to_image``, for tests and for mask
    prompts."""
    h, w = mask.shape
    nh, nw = resized_shape(h, w, size)
    m = torch.from_numpy(np.where(mask, 10.0, -10.0).astype(np.float32))[None, None]
    m = torch.nn.functional.interpolate(m, size=(nh, nw), mode="nearest")
    m = torch.nn.functional.pad(m, (0, size - nw, 0, size - nh), value=-10.0)
    return torch.nn.functional.interpolate(m, size=(size // 4, size // 4), mode="bilinear", align_corners=False)
