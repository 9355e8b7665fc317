"""The Ray executor: shard tasks on actors that each hold the manifest's pipeline.

- The first actor sets the pipeline up (trains or loads a pixel head, calibrates thresholds) and
  its ``shared_state()`` is shipped to every other actor, so no shard depends on which actor
  made it and nothing is computed twice.
- Scheduling is one shard per idle actor. An actor that dies (its process killed, its node lost)
  is replaced and its shard made again from the start, by another actor, under the same name;
  a shard is published only when complete, so nothing is lost or duplicated. A shard whose
  actors die ``max_attempts`` times in a row fails the run.
- An error raised by a stage is deterministic: it fails the run at once with the stage and the
  samples named, never retried.
- Finished shards are published by the actors straight to the run's Store (a folder all actors
  see, or an object store); the driver only schedules, shows progress and writes dataset.json.
"""

from __future__ import annotations

import collections
import math
import os
import time
from typing import Any

from synth.errors import RunError, UsageError
from synth.protocols import Executor

MAX_ATTEMPTS = 3
# Environment a worker needs to behave as this process does (plugins allowed, caches, offline).
FORWARDED_ENV = ("SYNTH_LOAD_PLUGINS", "SYNTH_CACHE_DIR", "HF_HUB_OFFLINE", "HF_HOME", "PYTHONPATH", "TQDM_DISABLE")


class RayExecutor(Executor):
    """Shard tasks on Ray actors (a local Ray for the run, or --address to join a cluster)."""

    name = "ray"

    @classmethod
    def check_run(cls, run_config) -> list[str]:
        try:
            import ray  # noqa: F401
        except ImportError:
            return ["needs Ray, which is not installed: pip install 'synth[ray]'"]
        return []

    # -- cluster ------------------------------------------------------------------------------
    def _connect(self, ray) -> bool:
        """Join --address or start a local Ray; True when this run started it (and stops it)."""
        if ray.is_initialized():
            return False
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        common = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR", runtime_env={"env_vars": env})
        address = self.run_config.address
        try:
            if address:
                ray.init(address=address, **common)
            else:
                ray.init(num_cpus=os.cpu_count(), object_store_memory=256 * 2**20, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UsageError(f"ray: cannot {'join ' + address if address else 'start a local Ray'}: {e}".split("\n")[0]) from None
        return True

    def _actor_count(self, ray, tasks: int) -> int:
        cfg = self.run_config
        if cfg.actors:
            return min(cfg.actors, tasks)
        res = ray.cluster_resources()
        n = math.floor(res.get("CPU", 1) / cfg.cpus_per_worker)
        if cfg.gpus_per_worker > 0:
            n = min(n, math.floor(res.get("GPU", 0) / cfg.gpus_per_worker))
            if n == 0:
                raise UsageError(f"run.gpus_per_worker is {cfg.gpus_per_worker}, the Ray cluster has {res.get('GPU', 0)} GPUs")
        return max(1, min(n, tasks))

    # -- the run ------------------------------------------------------------------------------
    def run(self, job, progress) -> list[dict[str, Any]]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        from .worker import ShardWorker

        store = job.store
        if getattr(store, "protocol", None) == "memory":
            raise UsageError("ray: a memory:// output lives in one process; actors cannot reach it (write to a folder or an object store)")
        started = self._connect(ray)
        cfg = self.run_config
        Actor = ray.remote(ShardWorker)
        opts = dict(num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker, max_restarts=0, max_task_retries=0)
        m = job.manifest
        # an actor's torch threads: what it was given CPUs for, unless asked otherwise
        threads = job.threads or m.run.threads or max(1, int(cfg.cpus_per_worker))
        args = (str(m.path), m.text, store.location, job.name, threads)
        slots: list[dict[str, Any]] = []
        try:
            n = self._actor_count(ray, len(job.tasks))
            first = Actor.options(**opts).remote(*args, None)
            shared = self._get(ray, first.shared_state.remote(), "setting the pipeline up", RayTaskError, RayActorError)
            job.reports.update(ray.get(first.reports.remote()))
            slots = [{"actor": first, "report": _report(0)}]
            slots += [{"actor": Actor.options(**opts).remote(*args, shared), "report": _report(i)} for i in range(1, n)]
            queue = collections.deque(job.tasks)
            attempts: collections.Counter = collections.Counter()
            inflight: dict[Any, tuple[int, Any]] = {}
            idle = list(range(n))
            while queue or inflight:
                while queue and idle:
                    i = idle.pop(0)
                    task = queue.popleft()
                    inflight[slots[i]["actor"].make.remote(task.index, task.start, task.stop)] = (i, task)
                (ref,), _ = ray.wait(list(inflight), num_returns=1)
                i, task = inflight.pop(ref)
                report = slots[i]["report"]
                try:
                    out = ray.get(ref)
                except RayTaskError as e:  # a stage raised: deterministic, so the run fails now
                    raise _task_error(e) from None
                except RayActorError:
                    report["failures"] += 1
                    attempts[task.index] += 1
                    if attempts[task.index] >= MAX_ATTEMPTS:
                        raise RunError(f"ray: shard {task.index} was lost {attempts[task.index]} times (its actor died each time); stopping") from None
                    slots[i]["actor"] = Actor.options(**opts).remote(*args, shared)  # a fresh actor takes the slot
                    queue.appendleft(task)  # made again from the start: a shard is only published complete
                    idle.append(i)
                    continue
                report["shards"] += 1
                report["samples"] += out["stats"]["count"]
                report["seconds"] += out["seconds"]
                report["threads"] = out["threads"]
                progress.advance(task.size)
                progress.shard_done()
                idle.append(i)
        finally:
            for slot in slots:
                ray.kill(slot["actor"], no_restart=True)
            if started:
                ray.shutdown()
        for r in (s["report"] for s in slots):
            r["seconds"] = round(r["seconds"], 2)
        return [s["report"] for s in slots]

    @staticmethod
    def _get(ray, ref, what: str, RayTaskError, RayActorError):
        try:
            return ray.get(ref)
        except RayTaskError as e:
            raise _task_error(e) from None
        except RayActorError as e:
            raise RunError(f"ray: the first actor died while {what}: {str(e).splitlines()[0]}") from None


def _report(i: int) -> dict[str, Any]:
    return {"worker": f"ray actor {i}", "shards": 0, "samples": 0, "seconds": 0.0, "failures": 0, "threads": None}


def _task_error(e) -> Exception:
    """The stage's own error from inside the actor (a SynthError keeps its one line and exit code)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, (RunError, UsageError)):
        return cause
    if cause is not None:
        return RunError(f"ray: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}")
    return RunError(f"ray: {str(e).splitlines()[0]}")
