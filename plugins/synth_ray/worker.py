"""What runs inside each Ray actor: the manifest's pipeline, set up once, making whole shards.

Plain Python (no Ray import): the executor wraps it with ``ray.remote``. Every shard goes through
``synth.engine.make_shards``, exactly as the local executor makes it, into the run's Store.
"""

from __future__ import annotations

import os
import time
from typing import Any


class ShardWorker:
    def __init__(self, manifest_path: str, manifest_text: str, location: str, name: str, threads: int | None, shared: dict[str, Any] | None):
        from synth.manifest import load_manifest
        from synth.pipeline import Pipeline
        from synth.storage import open_store

        self.manifest = load_manifest(manifest_path, text=manifest_text)
        self.pipeline = Pipeline(self.manifest, quiet=True, threads=threads)
        self.pipeline.setup(shared)  # adopts what the first actor computed (a trained head, a calibration)
        self.store = open_store(location)
        self.name = name

    def shared_state(self) -> dict[str, Any]:
        return self.pipeline.shared_state()

    def reports(self) -> dict[str, Any]:
        return self.pipeline.reports()

    def pid(self) -> int:
        return os.getpid()

    def make(self, index: int, start: int, stop: int) -> dict[str, Any]:
        from synth.engine import ShardTask, make_shards
        from synth.threads import current_threads

        t0 = time.perf_counter()
        made: list[dict] = []
        make_shards(self.pipeline, [ShardTask(index, start, stop)], self.store, self.name, self.manifest.run.workers, shard_done=made.append)
        return {"stats": made[0], "seconds": time.perf_counter() - t0, "pid": os.getpid(), "threads": current_threads()}
