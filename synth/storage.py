"""Where a run's files live: a local folder, or anything fsspec reaches (s3://, gs://, file://,
memory://, ...), behind one small interface.

Shards are always written to a local folder first (the writer needs a real file to fsync). For a
local output that folder is the output itself and a finished shard is renamed into place; for a
remote one it is a private staging folder and a finished shard is published: uploaded under a
temporary name, then moved to its final name (a rename where the store has one, copy-then-delete
where it has not, as on object stores). Its stats file is published first and the tar last, so a
final tar always has its stats, and an interrupted upload leaves only a temporary name behind.
Credentials are fsspec's business (its config, environment, instance roles): synth never reads or
logs them, and prints URLs without their query strings.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from .errors import RunError, UsageError
from .writer import TMP_MARK, fsync_dir, write_atomic


def is_url(location: str | Path) -> bool:
    return "://" in str(location)


def safe_url(url: str) -> str:
    """The URL to show: no user:password@ and no query string (signed URLs carry secrets there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{parts.path}"


class Store:
    """A run's output root. Names are relative (``d-000001.tar``, ``dataset.json``)."""

    url: str  # what to show: no credentials
    location: str  # what open_store() was given (another process opens the same store with it)
    staging: Path  # where shards are written before publish()

    def exists(self, name: str) -> bool: ...
    def read_bytes(self, name: str) -> bytes: ...
    def write_atomic(self, name: str, data: bytes) -> None: ...
    def glob(self, pattern: str) -> list[str]: ...
    def remove(self, name: str) -> None: ...
    def publish(self, name: str) -> None:
        """Move the finished staged file ``staging / name`` to its final name."""
    def open(self, name: str):
        """A binary file object for reading ``name``."""
    def lock(self) -> None: ...
    def unlock(self) -> None: ...
    def close(self) -> None: ...
    def remove_all(self) -> None:
        """Remove this store's folder and everything in it (a run's scratch area)."""

    def __str__(self) -> str:
        return self.url


class LocalStore(Store):
    """A folder on this machine: writes in place, fsynced, renamed; one run at a time (flock)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.url = self.location = str(self.path)
        self.staging = self.path
        self._lock_fh = None

    def lock(self) -> None:
        """Hold the folder's lock file (.synth.lock) for the run. The file exists only while a
        run holds it: unlock removes it, so no run, finished or failed, leaves it behind."""
        path = self.path / ".synth.lock"
        while True:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                fh = open(path, "a")
            except OSError as e:
                raise UsageError(f"output folder {self.path} is not writable: {e.strerror or e}") from None
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                fh.close()
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    raise RunError(f"another synth run is writing to {self.path}") from None
                raise
            try:  # the run before may have removed the file after we opened it: lock the one there now
                same = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fh = fh
                return
            fh.close()

    def unlock(self) -> None:
        if self._lock_fh is not None:
            (self.path / ".synth.lock").unlink(missing_ok=True)  # removed while still held
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def exists(self, name: str) -> bool:
        return (self.path / name).exists()

    def read_bytes(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def write_atomic(self, name: str, data: bytes) -> None:
        write_atomic(self.path / name, data)

    def glob(self, pattern: str) -> list[str]:
        return sorted(p.name for p in self.path.glob(pattern))

    def remove(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)

    def publish(self, name: str) -> None:
        pass  # the writer already renamed it into place in this very folder

    def open(self, name: str):
        return open(self.path / name, "rb")

    def close(self) -> None:
        self.unlock()

    def remove_all(self) -> None:
        self.unlock()
        shutil.rmtree(self.path, ignore_errors=True)


class FsspecStore(Store):
    """Any fsspec filesystem. No lock across machines: run one writer per output URL."""

    def __init__(self, url: str):
        try:
            import fsspec
        except ImportError:
            raise UsageError(f"output {safe_url(url)}: writing to a URL needs fsspec: pip install fsspec") from None
        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as e:  # an unknown protocol, or its package missing (s3fs, gcsfs)
            raise UsageError(f"output {safe_url(url)}: {e}".split("\n")[0]) from None
        self.root = root.rstrip("/")
        self.location = url  # as given, for other processes to open (never printed: it may hold secrets)
        self.url = safe_url(url)
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.staging = Path(tempfile.mkdtemp(prefix="synth-staging-"))

    def _full(self, name: str) -> str:
        return f"{self.root}/{name}"

    def lock(self) -> None:
        try:
            self.fs.makedirs(self.root, exist_ok=True)
        except OSError as e:
            raise UsageError(f"output {self.url} is not writable: {e}") from None

    def unlock(self) -> None:
        pass

    def exists(self, name: str) -> bool:
        return self.fs.exists(self._full(name))

    def read_bytes(self, name: str) -> bytes:
        return self.fs.cat_file(self._full(name))

    def _tmp_name(self, name: str) -> str:
        return f".{name}{TMP_MARK}{os.getpid()}"

    def write_atomic(self, name: str, data: bytes) -> None:
        tmp = self._full(self._tmp_name(name))
        self.fs.pipe_file(tmp, data)
        self._move(tmp, self._full(name))

    def _move(self, src: str, dst: str) -> None:
        try:
            self.fs.mv(src, dst)  # a rename where the store has one; fsspec copies then deletes elsewhere
        except NotImplementedError:
            self.fs.copy(src, dst)
            self.fs.rm(src)

    def glob(self, pattern: str) -> list[str]:
        try:
            names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))

    def remove(self, name: str) -> None:
        if self.fs.exists(self._full(name)):
            self.fs.rm(self._full(name))

    def publish(self, name: str) -> None:
        local = self.staging / name
        tmp = self._full(self._tmp_name(name))
        self.fs.put_file(str(local), tmp)
        self._move(tmp, self._full(name))
        local.unlink(missing_ok=True)

    def open(self, name: str):
        return self.fs.open(self._full(name), "rb")

    def close(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def remove_all(self) -> None:
        if self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)
        self.close()


def open_store(location: str | Path) -> Store:
    """A Store for a local path or a URL (file:// URLs are local folders)."""
    text = str(location)
    if is_url(text):
        if text.startswith("file://"):
            return LocalStore(Path(urlsplit(text).path))
        return FsspecStore(text)
    return LocalStore(Path(text))


__all__ = ["Store", "LocalStore", "FsspecStore", "open_store", "is_url", "safe_url", "fsync_dir"]
