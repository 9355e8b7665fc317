"""The output folder: one run at a time, one manifest per folder, only our own files touched."""

from __future__ import annotations

import errno
import fcntl
import json
from pathlib import Path

from .errors import RunError, UsageError
from .writer import stats_path, write_atomic

STATE_FILE = ".synth-run.json"
LOCK_FILE = ".synth.lock"


class OutputFolder:
    def __init__(self, path: Path, name: str):
        self.path = path
        self.name = name
        self._lock_fh = None

    def open(self) -> OutputFolder:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / LOCK_FILE
            self._lock_fh = open(probe, "a")
        except OSError as e:
            raise UsageError(f"output folder {self.path} is not writable: {e.strerror or e}") from None
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise RunError(f"another synth run is writing to {self.path}") from None
            raise
        return self

    def close(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def read_state(self) -> dict | None:
        p = self.path / STATE_FILE
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    def write_state(self, manifest_hash: str, manifest_path: str) -> None:
        body = {"manifest_hash": manifest_hash, "manifest": manifest_path, "name": self.name}
        write_atomic(self.path / STATE_FILE, json.dumps(body, indent=1).encode())

    def shard_files(self) -> list[Path]:
        return sorted(self.path.glob(f"{self.name}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"))

    def check_same_manifest(self, manifest_hash: str) -> None:
        """Refuse to mix two datasets in one folder."""
        state = self.read_state()
        has_data = bool(self.shard_files()) or (self.path / "dataset.json").exists()
        if not has_data:
            return  # an earlier run that finished no shard left nothing to mix with
        if state is not None and state.get("manifest_hash") != manifest_hash:
            raise UsageError(
                f"output folder {self.path} holds a dataset made from a different manifest "
                f"({state.get('manifest', '?')}, hash {str(state.get('manifest_hash'))[:12]}); "
                f"pass --overwrite to replace it or --output to write elsewhere"
            )
        if state is None:
            raise UsageError(
                f"output folder {self.path} already holds shards not made by this manifest; "
                f"pass --overwrite to replace them or --output to write elsewhere"
            )

    def clear(self) -> int:
        """--overwrite: remove what synth wrote here (shards, stats, card, state), nothing else."""
        removed = 0
        for tar in self.shard_files():
            stats_path(tar).unlink(missing_ok=True)
            tar.unlink()
            removed += 1
        for extra in ("dataset.json", "README.md", STATE_FILE):
            (self.path / extra).unlink(missing_ok=True)
        for p in self.path.glob(f"{self.name}-[0-9]*.stats.json"):
            p.unlink()
        return removed
