"""Read our own shards back, member by member, without extracting anything to disk."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Iterator

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
