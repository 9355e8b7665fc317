"""Turn one row of a batch into the bytes of its shard members.

Members per sample: the image (png/jpg/webp), ``json`` (everything else), ``latent.npy``,
``seg.png`` (lossless class ids), ``inst.png`` (16-bit instance ids, 0 = none; the instances'
records are in the json) and ``cls`` when labels exist. Keys carry no dots, slashes or
``..``: webdataset splits a member name at the key's first dot.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import numpy as np
from PIL import Image

KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise ValueError(f"invalid sample key {key!r}: use letters, digits, '_' and '-' only (no dots or slashes)")
    return key


def sample_key(index: int) -> str:
    """The key of source sample ``index``; derived samples append ``_<suffix>``."""
    return f"s{index:08d}"


def encode_image(image: np.ndarray, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(image))
    if fmt == "png":
        pil.save(buf, format="PNG", compress_level=6)
    elif fmt == "jpg":
        pil.save(buf, format="JPEG", quality=quality)
    elif fmt == "webp":
        pil.save(buf, format="WEBP", quality=quality, method=4)
    else:  # guarded by the manifest model; here for callers outside the engine
        raise ValueError(f"unsupported image format {fmt!r}")
    return buf.getvalue()


def encode_seg(seg: np.ndarray) -> bytes:
    """Class-id map as a lossless single-channel PNG: 8-bit, or 16-bit past 255 classes."""
    seg = np.asarray(seg)
    if seg.min(initial=0) < 0 or seg.max(initial=0) > 65535:
        raise ValueError("segmentation ids must lie in 0..65535")
    arr = seg.astype(np.uint8) if seg.max(initial=0) < 256 else seg.astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def encode_instances(inst: np.ndarray) -> bytes:
    """Instance-id map as a lossless 16-bit single-channel PNG (always 16-bit, so every sample's
    member decodes to the same dtype)."""
    inst = np.asarray(inst)
    if inst.min(initial=0) < 0 or inst.max(initial=0) > 65535:
        raise ValueError("instance ids must lie in 0..65535")
    buf = io.BytesIO()
    Image.fromarray(inst.astype(np.uint16)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def encode_sample(
    key: str,
    image: np.ndarray,
    record: dict[str, Any],
    *,
    latent: np.ndarray | None,
    seg: np.ndarray | None,
    instances: np.ndarray | None = None,
    image_format: str,
    quality: int,
    latent_dtype: str,
) -> dict[str, Any]:
    """All members of one sample, as bytes, keyed by field name (webdataset convention)."""
    sample: dict[str, Any] = {"__key__": check_key(key)}
    sample[image_format] = encode_image(image, image_format, quality)
    sample["json"] = encode_json(record)
    if latent is not None:
        sample["latent.npy"] = encode_npy(np.asarray(latent, dtype=latent_dtype))
    if seg is not None:
        sample["seg.png"] = encode_seg(seg)
    if instances is not None:
        sample["inst.png"] = encode_instances(instances)
    if record.get("class") is not None:
        sample["cls"] = str(int(record["class"])).encode()
    return sample


def fields_of(sample: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(k for k in sample if not k.startswith("__")))


THUMBNAIL_SIDE = 48


def thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> str:
    """A small PNG of an image, base64 (what a shard's stats keep of a few dropped samples, for
    the report): the longer side ``side`` pixels at most."""
    import base64

    pil = Image.fromarray(np.ascontiguousarray(image))
    pil.thumbnail((side, side), Image.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=9)
    return base64.b64encode(buf.getvalue()).decode("ascii")
