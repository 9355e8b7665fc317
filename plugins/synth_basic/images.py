"""Turning whatever a user has (grayscale, RGBA, palette, odd sizes) into the batch's RGB uint8,
and masks into class-id maps; each failure is a reason, not a crash."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

ResizeMode = Literal["resize", "center_crop", "none"]


class SkipSample(Exception):
    """This sample cannot be used; the message is the reason recorded for it (the part before the
    first colon groups drops in the summary, the whole message is the sample's detail)."""


def open_image(data_or_path) -> Image.Image:
    try:
        src = io.BytesIO(data_or_path) if isinstance(data_or_path, (bytes, bytearray)) else data_or_path
        img = Image.open(src)
        img.load()
        return img
    except Image.DecompressionBombError as e:  # not an OSError: a size limit, checked from the header
        raise SkipSample(f"image too large: {e}".split("\n")[0][:240]) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise SkipSample(f"unreadable image: {type(e).__name__}: {e}".split("\n")[0][:200]) from None


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return Image.fromarray(np.repeat(high_depth_to_8bit(img)[..., None], 3, axis=-1))
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (0, 0, 0))
        flat.paste(rgba, mask=rgba.getchannel("A"))  # transparent areas become black
        return flat
    return img.convert("RGB")


def high_depth_to_8bit(img: Image.Image) -> np.ndarray:
    """A 16- or 32-bit integer or float grayscale image as 8 bits, scaled, never clipped: 16-bit
    values (and 32-bit ones within 0..65535, as PIL opens most 16-bit PNGs) by 255/65535, other
    32-bit integers by their own maximum, floats from 0..1 (or their own range beyond it)."""
    a = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        lo, hi = min(a.min(initial=0.0), 0.0), max(a.max(initial=1.0), 1.0)
    elif img.mode.startswith("I;16") or (a.min(initial=0) >= 0 and a.max(initial=0) <= 65535):
        lo, hi = 0.0, 65535.0
    else:
        lo, hi = a.min(initial=0.0), max(a.max(initial=1.0), a.min(initial=0.0) + 1)
    return np.clip((a - lo) * 255.0 / (hi - lo) + 0.5, 0, 255).astype(np.uint8)


def fit_size(img: Image.Image, size: int | None, mode: ResizeMode, resample) -> Image.Image:
    if size is None or mode == "none":
        return img
    if mode == "center_crop":
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size != (size, size):
        img = img.resize((size, size), resample)
    return img


def prepare_image(img: Image.Image, size: int | None, mode: ResizeMode) -> np.ndarray:
    return np.asarray(fit_size(to_rgb(img), size, mode, Image.BICUBIC), dtype=np.uint8)


def prepare_mask(mask: Image.Image, image_size: tuple[int, int], size: int | None, mode: ResizeMode, num_classes: int | None) -> np.ndarray:
    """Class ids from a single-channel mask the same size as its image, resized like it (nearest)."""
    if mask.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise SkipSample(f"mask must be single-channel class ids, got mode {mask.mode}")
    if mask.size != image_size:
        raise SkipSample(f"mask size {mask.size[0]}x{mask.size[1]} differs from image size {image_size[0]}x{image_size[1]}")
    ids = np.asarray(fit_size(mask, size, mode, Image.NEAREST)).astype(np.int64)
    if num_classes and ids.max(initial=0) >= num_classes:
        raise SkipSample(f"mask has class id {int(ids.max())}, beyond the {num_classes} classes of [dataset].classes")
    return ids
