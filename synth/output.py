"""The output folder: one run at a time, one manifest per folder, only our own files touched.

The folder may hold the user's own files. synth overwrites or deletes only files it wrote: its
shards and their stats (by the names its runs recorded), and ``dataset.json`` / ``README.md``
only while their content is what synth last wrote there (sha256 kept in the state file). Any
other file in the way is refused with one line unless ``--overwrite``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
from pathlib import Path

from .errors import RunError, UsageError
from .writer import stats_path, write_atomic

STATE_FILE = ".synth-run.json"
LOCK_FILE = ".synth.lock"
# Files synth writes beside the shards (their sha256 is recorded once written).
OWN_FILES = ("dataset.json", "README.md")


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _shard_glob(name: str) -> str:
    return f"{name}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"


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

    # -- the state file: which manifest, which name, which files are ours --------------------------
    def read_state(self) -> dict | None:
        p = self.path / STATE_FILE
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    def write_state(self, manifest_hash: str, manifest_path: str) -> None:
        old = self.read_state() or {}
        names = [n for n in old.get("names", [old.get("name")]) if n and n != self.name] + [self.name]
        body = {
            "manifest_hash": manifest_hash,
            "manifest": manifest_path,
            "name": self.name,
            "names": names,  # every shard name runs into this folder used since the last --overwrite
            "written": old.get("written", {}),
        }
        write_atomic(self.path / STATE_FILE, json.dumps(body, indent=1).encode())

    def write_own(self, files: dict[str, bytes]) -> None:
        """Write synth's own files (dataset.json, README.md), recording their sha256 first, so a
        kill between the two steps never makes our own file look foreign to the next run."""
        state = self.read_state() or {}
        written = state.get("written", {})
        for name, data in files.items():
            before = written.get(name, [])[-1:]  # what is on disk now, if ours
            written[name] = before + [hashlib.sha256(data).hexdigest()]
        state["written"] = written
        write_atomic(self.path / STATE_FILE, json.dumps(state, indent=1).encode())
        for name, data in files.items():
            write_atomic(self.path / name, data)

    def is_ours(self, name: str) -> bool:
        state = self.read_state()
        if state is not None and "written" not in state:
            return True  # a folder from a synth that did not record hashes yet: its files are its own
        return _sha256(self.path / name) in (state or {}).get("written", {}).get(name, [])

    # -- what is in the way --------------------------------------------------------------------
    def shard_files(self, name: str | None = None) -> list[Path]:
        return sorted(self.path.glob(_shard_glob(name or self.name)))

    def check_same_manifest(self, manifest_hash: str) -> None:
        """Refuse to mix two datasets in one folder, or to replace a file synth did not write."""
        for own in OWN_FILES:
            if (self.path / own).exists() and not self.is_ours(own):
                raise UsageError(
                    f"output folder {self.path} holds a {own} that synth did not write (or that was edited since); "
                    f"synth would replace it: move it away, pass --output to write elsewhere, or --overwrite to replace it"
                )
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

    def _recorded_shards(self) -> set[Path]:
        """Every shard an earlier run recorded here: its dataset.json's list and the shard names
        its state file remembers (a run killed before dataset.json still left its name)."""
        out: set[Path] = set()
        state = self.read_state() or {}
        for name in state.get("names", [state.get("name")]):
            if name:
                out.update(self.shard_files(name))
        try:
            info = json.loads((self.path / "dataset.json").read_text())
            for shard in info.get("shards", []):
                f = Path(str(shard.get("file", ""))).name
                if f.endswith(".tar") and (self.path / f).is_file():
                    out.add(self.path / f)
        except (OSError, ValueError, AttributeError):
            pass
        return out

    def clear(self) -> int:
        """--overwrite: remove what synth wrote here (every recorded shard and its stats, the card,
        dataset.json, the state) and whatever stands under this run's own names; nothing else."""
        removed = 0
        for tar in sorted(self._recorded_shards() | set(self.shard_files())):
            stats_path(tar).unlink(missing_ok=True)
            tar.unlink(missing_ok=True)
            removed += 1
        for extra in (*OWN_FILES, STATE_FILE):
            (self.path / extra).unlink(missing_ok=True)
        for p in self.path.glob(f"{self.name}-[0-9]*.stats.json"):
            p.unlink()
        return removed
