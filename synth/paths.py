"""How a manifest names a model (a local folder or a hub id), and where synth caches what it
computes once (reference features, trained heads, saved directions): one rule for every plugin."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def model_ref(ref: str, resolve_path: Callable[[str], Path]) -> tuple[str, bool]:
    """(where to load from, whether it is a local folder): a folder (relative to the manifest)
    when one exists or the ref looks like a path; else a hub id (org/name)."""
    local = resolve_path(ref)
    if local.exists() or Path(ref).is_absolute() or ref.startswith((".", "~")) or ref.count("/") != 1:
        return str(local), True
    return ref, False


def cache_dir(kind: str = "") -> Path:
    """The cache folder for ``kind`` ("features", "directions", ...): $SYNTH_CACHE_DIR, else
    ~/.cache/synth; the folder itself for an empty kind."""
    env = os.environ.get("SYNTH_CACHE_DIR")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "synth"
    return root / kind if kind else root


def replace_folder(folder: Path, fill: Callable[[Path], None]) -> None:
    """Make ``folder`` what ``fill`` writes into an empty temporary folder beside it, renamed into
    place only once complete: a process killed mid-write leaves the old folder or none, never half
    of one (a trained head, a cached classifier)."""
    import shutil

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    fill(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def cached_or_shipped(folder: Path, generator, kind: str) -> list[Path]:
    """Where a trained artefact cached as ``folder`` (``<cache>/<kind>/<key>``) may already be:
    there, then under the same name among what the run's model ships of ``kind``
    (``Generator.bundled``). Each is used only if it holds the same full key."""
    shipped = generator.bundled(kind) if generator is not None else []
    return [folder] + [b / folder.name for b in shipped]
