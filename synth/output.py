"""The output folder: one run at a time, one manifest per folder, only our own files touched.

The folder may hold the user's own files. synth overwrites or deletes only files it wrote: its
shards and their stats (by the names its runs recorded), and ``dataset.json`` / ``README.md``
only while their content is what synth last wrote there (sha256 kept in the state file). Any
other file in the way is refused with one line unless ``--overwrite``. The folder is a Store
(synth.storage): a local folder or any fsspec URL.
"""

from __future__ import annotations

import hashlib
import json

from .errors import UsageError
from .storage import Store
from .writer import TMP_MARK, shard_name

STATE_FILE = ".synth-run.json"
REPORTS = "reports.json"
# Files synth writes beside the shards (their sha256 is recorded once written).
OWN_FILES = ("dataset.json", "README.md")


def _shard_glob(name: str) -> str:
    return f"{name}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"


def stats_name(tar_name: str) -> str:
    return tar_name[: -len(".tar")] + ".stats.json"


class OutputFolder:
    def __init__(self, store: Store, name: str):
        self.store = store
        self.name = name

    @property
    def path(self):
        """What to show the user: the folder or the URL."""
        return getattr(self.store, "path", self.store.url)

    def __enter__(self):
        self.store.lock()
        return self

    def __exit__(self, *exc):
        self.store.unlock()

    # -- the state file: which manifest, which name, which files are ours --------------------------
    def read_state(self) -> dict | None:
        if not self.store.exists(STATE_FILE):
            return None
        try:
            return json.loads(self.store.read_bytes(STATE_FILE))
        except (OSError, ValueError):
            return None

    def _write_state(self, state: dict) -> None:
        self.store.write_atomic(STATE_FILE, json.dumps(state, indent=1).encode())

    def write_state(self, manifest_hash: str, manifest_path: str, threads: int | None = None) -> None:
        old = self.read_state() or {}
        names = [n for n in old.get("names", [old.get("name")]) if n and n != self.name] + [self.name]
        self._write_state({
            **({"threads": threads} if threads else {}),  # the model library's threads the samples were made with
            "manifest_hash": manifest_hash,
            "manifest": manifest_path,
            "name": self.name,
            "names": names,  # every shard name runs into this folder used since the last --overwrite
            "written": old.get("written", {}),
            "extra": old.get("extra", []),
        })

    def write_own(self, files: dict[str, bytes]) -> None:
        """Write synth's own files (dataset.json, README.md), recording their sha256 first, so a
        kill between the two steps never makes our own file look foreign to the next run."""
        state = self.read_state() or {}
        written = state.get("written", {})
        for name, data in files.items():
            before = written.get(name, [])[-1:]  # what is there now, if ours
            written[name] = before + [hashlib.sha256(data).hexdigest()]
        state["written"] = written
        self._write_state(state)
        for name, data in files.items():
            self.store.write_atomic(name, data)

    def write_reports(self, reports: dict[str, dict]) -> None:
        """Stages' set-up reports: their files beside the shards (stage3-sigma_auto.png), the rest
        in reports.json (read into dataset.json); all recorded as ours."""
        state = self.read_state() or {}
        extra = set(state.get("extra", []))
        out = {}
        for where, rep in sorted(reports.items()):
            rep = dict(rep)
            files = rep.pop("files", {}) or {}
            prefix = where.replace("[", "").replace("]", "")
            rep["files"] = []
            for fname, data in sorted(files.items()):
                name = f"{prefix}-{fname}"
                extra.add(name)
                rep["files"].append(name)
            out[where] = (rep, files, prefix)
        state["extra"] = sorted(extra | {REPORTS})
        self._write_state(state)  # recorded as ours before they exist: a kill never leaves them foreign
        for where, (rep, files, prefix) in out.items():
            for fname, data in sorted(files.items()):
                self.store.write_atomic(f"{prefix}-{fname}", data)
        out = {where: rep for where, (rep, _, _) in out.items()}
        self.store.write_atomic(REPORTS, json.dumps(out, indent=1, sort_keys=True, default=str).encode())

    def record_extra(self, names: list[str]) -> None:
        """Files synth wrote beside the shards after the run (a report): ours to replace and
        to remove with --overwrite."""
        state = self.read_state() or {}
        state["extra"] = sorted(set(state.get("extra", [])) | set(names))
        self._write_state(state)

    def read_reports(self) -> dict | None:
        if not self.store.exists(REPORTS):
            return None
        try:
            return json.loads(self.store.read_bytes(REPORTS))
        except (OSError, ValueError):
            return None

    def is_ours(self, name: str) -> bool:
        state = self.read_state()
        if state is not None and "written" not in state:
            return True  # a folder from a synth that did not record hashes yet: its files are its own
        try:
            digest = hashlib.sha256(self.store.read_bytes(name)).hexdigest()
        except OSError:
            return False
        return digest in (state or {}).get("written", {}).get(name, [])

    def finished(self) -> bool:
        """Whether the run's end was reached: dataset.json and the card both written (they are
        written in that order, so a kill between them leaves a run to finish, not a finished one)."""
        return all(self.store.exists(name) for name in OWN_FILES)

    # -- shards -------------------------------------------------------------------------------
    def shard_files(self, name: str | None = None) -> list[str]:
        return self.store.glob(_shard_glob(name or self.name))

    def is_finished(self, index: int) -> bool:
        tar = shard_name(self.name, index)
        return self.store.exists(tar) and self.store.exists(stats_name(tar))

    def read_stats(self, index: int) -> dict:
        return json.loads(self.store.read_bytes(stats_name(shard_name(self.name, index))))

    def remove_stale_temps(self) -> None:
        """Temp files of killed runs (``.<name>-000003.tar.tmp-<pid>``); safe under the run lock."""
        for pattern in (f".{self.name}-*{TMP_MARK}*", f".dataset.json{TMP_MARK}*", f".README.md{TMP_MARK}*", f".{STATE_FILE}{TMP_MARK}*"):
            for n in self.store.glob(pattern):
                self.store.remove(n)

    # -- what is in the way --------------------------------------------------------------------
    def check_same_manifest(self, manifest_hash: str) -> None:
        """Refuse to mix two datasets in one folder, or to replace a file synth did not write."""
        for own in OWN_FILES:
            if self.store.exists(own) and not self.is_ours(own):
                raise UsageError(
                    f"output folder {self.path} holds a {own} that synth did not write (or that was edited since); "
                    f"synth would replace it: move it away, pass --output to write elsewhere, or --overwrite to replace it"
                )
        state = self.read_state()
        has_data = bool(self.shard_files()) or self.store.exists("dataset.json")
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

    def _recorded_shards(self) -> set[str]:
        """Every shard an earlier run recorded here: its dataset.json's list and the shard names
        its state file remembers (a run killed before dataset.json still left its name)."""
        out: set[str] = set()
        state = self.read_state() or {}
        for name in state.get("names", [state.get("name")]):
            if name:
                out.update(self.shard_files(name))
        try:
            info = json.loads(self.store.read_bytes("dataset.json"))
            for shard in info.get("shards", []):
                f = str(shard.get("file", "")).rsplit("/", 1)[-1]
                if f.endswith(".tar") and self.store.exists(f):
                    out.add(f)
        except (OSError, ValueError, AttributeError):
            pass
        return out

    def clear(self) -> int:
        """--overwrite: remove what synth wrote here (every recorded shard and its stats, the card,
        dataset.json, the state) and whatever stands under this run's own names; nothing else."""
        removed = 0
        for tar in sorted(self._recorded_shards() | set(self.shard_files())):
            self.store.remove(stats_name(tar))
            self.store.remove(tar)
            removed += 1
        from .storage import open_store

        open_store(f"{self.store.location}/.candidates").remove_all()  # a selecting run's scratch shards
        for extra in (self.read_state() or {}).get("extra", []):
            self.store.remove(str(extra).rsplit("/", 1)[-1])
        for extra in (*OWN_FILES, STATE_FILE):
            self.store.remove(extra)
        for n in self.store.glob(f"{self.name}-[0-9]*.stats.json"):
            self.store.remove(n)
        return removed
