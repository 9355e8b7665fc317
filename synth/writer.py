"""Shard files: written under a temporary name, fsynced, then renamed.

A shard is finished when its final ``.tar`` exists. Its ``.stats.json`` (count, sha256, drops)
is renamed into place first, so a final tar always has its stats beside it. A killed run leaves
only hidden ``.tmp`` files, which the next run removes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

# Fixed member metadata so that reruns give byte-identical shards.
MEMBER_MTIME = 946684800  # 2000-01-01T00:00:00Z
TMP_MARK = ".tmp-"


def shard_name(name: str, index: int) -> str:
    return f"{name}-{index:06d}.tar"


def stats_path(tar_path: Path) -> Path:
    return tar_path.with_name(tar_path.name[: -len(".tar")] + ".stats.json")


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


class _HashingFile:
    """A write-only file wrapper that hashes what passes through (no second read)."""

    def __init__(self, fh):
        self.fh = fh
        self.sha = hashlib.sha256()

    def write(self, data):
        if self.fh is None:  # aborted: tarfile may still flush from __del__; drop it
            return len(data)
        self.sha.update(data)
        return self.fh.write(data)

    def flush(self):
        if self.fh is not None:
            self.fh.flush()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ShardFile:
    """One shard being written. ``commit()`` makes it final; ``abort()`` removes the temp."""

    def __init__(self, final_path: Path):
        self.final = final_path
        self.tmp = temp_path(final_path)
        self._fh = open(self.tmp, "wb")
        self._hashing = _HashingFile(self._fh)
        # Imported here: the webdataset package imports torch on import, and the core must not.
        from webdataset import TarWriter

        self._tar = TarWriter(self._hashing, encoder=False, mtime=MEMBER_MTIME, user="synth", group="synth", mode=0o444)
        self.count = 0
        self.fields: tuple[str, ...] | None = None
        self.closed = False
        self.failed: BaseException | None = None  # a sample that could not be encoded or written

    def write(self, sample: dict[str, Any]) -> None:
        self._tar.write(sample)
        self.count += 1

    def commit(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Close, fsync, write stats, rename into place. Returns the stats written. A shard one of
        whose samples failed is never published: the failure is raised again instead."""
        if self.failed is not None:
            self.abort()
            raise self.failed
        self._tar.close()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self.closed = True
        stats = {**stats, "file": self.final.name, "count": self.count, "sha256": self._hashing.sha.hexdigest()}
        write_atomic(stats_path(self.final), json.dumps(stats, indent=1, sort_keys=True).encode())
        os.replace(self.tmp, self.final)
        fsync_dir(self.final.parent)
        return stats

    def abort(self) -> None:
        if not self.closed:
            self._hashing.fh = None
            try:
                self._tar.close()
            except Exception:  # already failing; the temp file is removed below anyway
                pass
            try:
                self._fh.close()
            except OSError:
                pass
            self.closed = True
        self.tmp.unlink(missing_ok=True)


def is_finished(tar_path: Path) -> bool:
    return tar_path.exists() and stats_path(tar_path).exists()


def remove_stale_temps(folder: Path, name: str) -> int:
    """Temp files of killed runs (``.<name>-000003.tar.tmp-<pid>``); safe under the run lock."""
    n = 0
    for p in folder.glob(f".{name}-*{TMP_MARK}*"):
        p.unlink(missing_ok=True)
        n += 1
    for p in folder.glob(f".dataset.json{TMP_MARK}*"):
        p.unlink(missing_ok=True)
    for p in folder.glob(f".README.md{TMP_MARK}*"):
        p.unlink(missing_ok=True)
    return n
