"""Saved directions: what the ``direction`` operator reads with ``saved = NAME``, and what a tool
that finds directions (``synth discover``) writes: NAME.npy (the direction, float32) and
NAME.json (its space and how it was found) in the cache's directions/ folder.

A direction lives in one space, named by the json's "space":
- "latent" (the default): the generator's initial latent; a child is z + a w;
- "h": the generator's h-space (capability "hspace"); a child is decoded from its parent's
  latent with the shift ``shift(w, meta, a)`` = a * unit * w added there, where "unit" is the
  space's natural scale (the block's RMS) and "hspace" holds the spec options (block, until).
Both sides compute a shift with ``shift``, so an image a tool showed for a step and the image the
operator makes for the same step are the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError
from .paths import cache_dir

NAME_PATTERN = r"^[A-Za-z0-9_-]+$"


def folder() -> Path:
    return cache_dir("directions")


def exists(name: str) -> bool:
    return (folder() / f"{name}.npy").is_file()


def save(name: str, w: np.ndarray, meta: dict[str, Any], where: Path | None = None) -> Path:
    """Write NAME.npy and NAME.json into ``where`` (default: the cache's directions/)."""
    out = Path(where) if where is not None else folder()
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{name}.npy", np.asarray(w, np.float32), allow_pickle=False)
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1, default=str))
    return out / f"{name}.npy"


def load(name: str, where: str = "saved") -> tuple[np.ndarray, dict[str, Any]]:
    """The direction saved as ``name`` and its json ({} when it has none: a latent direction)."""
    path = folder() / f"{name}.npy"
    try:
        w = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"{where}: cannot read {path}: {e}") from None
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except (OSError, ValueError) as e:
        raise UsageError(f"{where}: cannot read {meta_path}: {e}") from None
    return np.asarray(w, np.float32), meta


def space(meta: dict[str, Any]) -> str:
    return str(meta.get("space", "latent"))


def shift(w: np.ndarray, meta: dict[str, Any], a: float) -> np.ndarray:
    """An h-space direction's shift for step ``a``: a * unit * w, float32."""
    return (np.float32(float(a) * float(meta.get("unit", 1.0))) * np.asarray(w, np.float32)).astype(np.float32)
