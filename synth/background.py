"""Overlap the model with image encoding and tar writing.

The model runs on the caller's thread. Each batch it produces is encoded by a small thread pool
(PNG/JPEG/WebP encoders and zlib release the GIL) and appended to its shard by one writer thread,
in submission order. At most ``max_inflight`` batches wait, so memory stays flat however many
samples a run makes.
"""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from .batch import Batch
from .writer import ShardFile


class BackgroundWriter:
    def __init__(self, encode_rows: Callable[[Batch, range], list[dict]], workers: int, max_inflight: int = 4):
        self.encode_rows = encode_rows
        self.workers = workers
        self.encoders = ThreadPoolExecutor(workers, thread_name_prefix="synth-encode")
        self.serial = ThreadPoolExecutor(1, thread_name_prefix="synth-write")
        self.max_inflight = max_inflight
        self.inflight: collections.deque[Future] = collections.deque()

    def submit(self, shard: ShardFile, batch: Batch) -> None:
        n = len(batch)
        if n == 0:
            return
        step = -(-n // self.workers)
        parts = [self.encoders.submit(self.encode_rows, batch, range(i, min(i + step, n))) for i in range(0, n, step)]
        self._track(self.serial.submit(_write_parts, shard, parts))

    def after_writes(self, fn, *args) -> Future:
        """Run ``fn(*args)`` on the writer thread once everything submitted before is written
        (e.g. commit a shard)."""
        fut = self.serial.submit(fn, *args)
        self._track(fut)
        return fut

    def _track(self, fut: Future) -> None:
        self.inflight.append(fut)
        while len(self.inflight) > self.max_inflight:
            self.inflight.popleft().result()  # re-raises a writer error on the model's thread

    def drain(self) -> None:
        while self.inflight:
            self.inflight.popleft().result()

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for fut in self.inflight:
                fut.cancel()
            self.inflight.clear()
        self.encoders.shutdown(wait=True, cancel_futures=cancel)
        self.serial.shutdown(wait=True, cancel_futures=cancel)


def _write_parts(shard: ShardFile, parts: list[Future]) -> None:
    try:
        for part in parts:
            for sample in part.result():
                shard.write(sample)
    except BaseException as e:
        shard.failed = e  # its commit, queued after this write, must not publish a partial shard
        raise
