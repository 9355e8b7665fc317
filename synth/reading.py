"""Read our own shards back, member by member, without extracting anything to disk."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any, Iterator

from .errors import UsageError


def iter_samples(tar_path, limit: int | None = None) -> Iterator[dict[str, bytes]]:
    """Samples of a shard (a path or a binary file object) as {"__key__": key, field: bytes};
    members of a sample are adjacent."""
    n = 0
    current: dict[str, bytes] = {}
    source = {"fileobj": tar_path} if hasattr(tar_path, "read") else {"name": tar_path}
    try:
        with tarfile.open(mode="r|", **source) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                key, _, field = base.partition(".")
                if current and current["__key__"] != key:
                    yield current
                    n += 1
                    if limit is not None and n >= limit:
                        return
                    current = {}
                current.setdefault("__key__", key)
                current[field] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError) as e:
        raise UsageError(f"{getattr(tar_path, 'name', tar_path)}: not a readable shard: {e}") from None
    if current:
        yield current


def shard_paths(path: Path) -> list[Path]:
    """A shard, or every shard in an output folder."""
    if path.is_dir():
        tars = sorted(p for p in path.glob("*.tar") if not p.name.startswith("."))
        if not tars:
            raise UsageError(f"{path}: no .tar shards in this folder")
        return tars
    if path.suffix != ".tar":
        raise UsageError(f"{path}: expected a .tar shard or an output folder")
    return [path]


# What every finished run's dataset.json holds, by type: a reader checks these before using any.
DATASET_FIELDS = {"name": str, "num_samples": int, "shards": list, "manifest": dict, "classes": list}


def read_dataset_info(folder: Path) -> dict[str, Any]:
    """A finished run's dataset.json, checked: one line naming the folder and what is wrong when
    it is missing, unreadable or lacks a field (then the caller has written nothing yet)."""
    path = Path(folder) / "dataset.json"
    if not path.is_file():
        raise UsageError(f"{folder}: not a finished synth output (no dataset.json)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not readable as JSON ({type(e).__name__}); rerun the manifest to rewrite it") from None
    if not isinstance(info, dict):
        raise UsageError(f"{path}: not a synth dataset.json (expected an object)")
    for field, kind in DATASET_FIELDS.items():
        if not isinstance(info.get(field), kind):
            raise UsageError(f"{path}: not a synth dataset.json ({field!r} is missing or not a {kind.__name__}); rerun the manifest to rewrite it")
    manifest = info["manifest"]
    if not all(isinstance(manifest.get(k), str) for k in ("file", "sha256", "text")):
        raise UsageError(f"{path}: not a synth dataset.json (its manifest lacks file, sha256 or text); rerun the manifest to rewrite it")
    return info


def local_folder(location: str | Path) -> Path:
    """A path or file:// URL, as the local path commands that read an output use; other URLs
    (s3://, memory://) are refused in one line."""
    from urllib.parse import unquote, urlsplit

    text = str(location)
    if text.startswith("file://"):
        return Path(unquote(urlsplit(text).path))
    if "://" in text:
        raise UsageError(f"{text}: this command reads a local folder (or a file:// URL); copy the output here first")
    return Path(text).expanduser()
