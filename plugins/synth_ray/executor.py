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
from typing import Any

from pydantic import Field

from synth.errors import RunError, UsageError
from synth.protocols import Executor, PluginConfig, Resources

MAX_ATTEMPTS = 3
# Environment a worker needs to behave as this process does (plugins allowed, caches, offline).
FORWARDED_ENV = ("SYNTH_LOAD_PLUGINS", "SYNTH_CACHE_DIR", "HF_HUB_OFFLINE", "HF_HOME", "PYTHONPATH", "TQDM_DISABLE")


class RayConfig(PluginConfig):
    """[run.ray]: where and how the shard tasks run on Ray (or `synth run -X key=value`)."""

    address: str | None = Field(
        None, description="Cluster to join: 'auto' (the cluster this node belongs to), host:port, or ray://host:10001 (Ray client); none: a local Ray for the run"
    )
    actors: int | None = Field(None, ge=1, strict=True, description="Workers holding the pipeline (default: from the cluster's resources)")
    gpus_per_worker: float | None = Field(
        None,
        ge=0,
        description="GPUs each worker holds (fractions share a GPU); default: when the cluster has GPUs, what the pipeline's steps declare (1 for a model on the GPU, 0 when all run on the CPU), or 1 when a step does not say, so no two actors land on one GPU unasked; else 0",
    )
    cpus_per_worker: float | None = Field(
        None, gt=0, description="CPUs each worker holds (also its torch threads unless [run] threads says otherwise); default: the most a step declares, else 1"
    )
    memory_gb: float | None = Field(None, gt=0, description="Memory each worker reserves in Ray's scheduler (GiB); default: the sum the steps declare, else none reserved")
    connect_timeout: float = Field(30.0, gt=0, le=3600, description="Seconds to reach address before giving up, in one line")


class RayExecutor(Executor):
    """Shard tasks on Ray actors (a local Ray for the run, or [run.ray] address to join a cluster)."""

    name = "ray"
    Config = RayConfig

    @classmethod
    def check_run(cls, run_config, config: RayConfig) -> list[str]:
        try:
            import ray  # noqa: F401
        except ImportError:
            return ["needs Ray, which is not installed: pip install 'synth-data[ray]'"]
        if config.address and config.address.startswith("ray://"):
            try:
                import grpc  # noqa: F401  (what Ray's client speaks)
            except ImportError:
                return [f"address {config.address}: a ray:// address needs Ray's client, which is not installed: pip install 'ray[client]' (synth's ray extra has it)"]
        return []

    # -- cluster ------------------------------------------------------------------------------
    def _connect(self, ray) -> bool:
        """Join --address or start a local Ray; True when this run started it (and stops it)."""
        if ray.is_initialized():
            return False
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        common = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR", runtime_env={"env_vars": env})
        address = self.config.address
        try:
            if address:
                reachable(address, self.config.connect_timeout)
                with _native_stderr_held():  # Ray's C++ client logs each failed handshake there
                    ray.init(address=address, **common)
            else:
                ray.init(num_cpus=os.cpu_count(), object_store_memory=256 * 2**20, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UsageError(f"ray: cannot {'join ' + address if address else 'start a local Ray'}: {e}".split("\n")[0]) from None
        return True

    def _per_worker(self, needs: Resources, gpus: float) -> tuple[float, float, float | None]:
        """(CPUs, GPUs, memory GiB) each actor holds: [run.ray] where it says, else what the
        pipeline's steps declare (``needs``); GPUs only where the cluster has them."""
        cfg = self.config
        cpus = cfg.cpus_per_worker if cfg.cpus_per_worker is not None else max(1.0, needs.cpus or 1.0)
        if cfg.gpus_per_worker is not None:
            per_gpu = cfg.gpus_per_worker
        else:
            per_gpu = (needs.gpus if needs.gpus is not None else 1.0) if gpus >= 1 else 0.0
        memory = cfg.memory_gb if cfg.memory_gb is not None else needs.memory_gb
        return cpus, per_gpu, memory

    def _placement(self, resources: dict[str, float], tasks: int, needs: Resources = Resources()) -> tuple[int, float]:
        """(actors, GPUs per actor) for a cluster with these resources: one GPU each by default
        when it has GPUs and a step uses one (or does not say), never more actors than its GPUs
        hold (nor its CPUs, its memory, or the tasks)."""
        cfg = self.config
        gpus = resources.get("GPU", 0)
        cpus, per_gpu, memory = self._per_worker(needs, gpus)
        fit = math.floor(resources.get("CPU", 1) / cpus)
        if memory and resources.get("memory"):
            fit = min(fit, max(1, math.floor(resources["memory"] / (memory * 2**30))))
        if per_gpu > 0:
            fit = min(fit, math.floor(gpus / per_gpu))
            if fit == 0:
                raise UsageError(f"run.ray.gpus_per_worker is {per_gpu}, the Ray cluster has {gpus} GPUs")
        n = min(cfg.actors, fit) if cfg.actors else fit
        return max(1, min(n, tasks)), per_gpu

    # -- the run ------------------------------------------------------------------------------
    def run(self, job, progress) -> list[dict[str, Any]]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        from .worker import ShardWorker

        store = job.store
        if getattr(store, "protocol", None) == "memory":
            raise UsageError("ray: a memory:// output lives in one process; actors cannot reach it (write to a folder or an object store)")
        started = self._connect(ray)
        Actor = ray.remote(ShardWorker)
        m = job.manifest
        needs = m.resources()
        cpus, _, memory = self._per_worker(needs, 0)
        # an actor's torch threads: what it was given CPUs for, unless asked otherwise
        threads = job.threads or m.run.threads or max(1, int(cpus))
        args = (str(m.path), m.text, store.location, job.name, threads)
        slots: list[dict[str, Any]] = []
        try:
            n, per_gpu = self._placement(ray.cluster_resources(), len(job.tasks), needs)
            opts = dict(num_cpus=cpus, num_gpus=per_gpu, max_restarts=0, max_task_retries=0)
            if memory:
                opts["memory"] = int(memory * 2**30)
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


class _native_stderr_held:
    """Hold what native code writes to file descriptor 2 while joining a cluster: a port that
    answers but is not Ray makes Ray's C++ client log a warning per retry. Shown afterwards only
    if the join worked (then it is news); a failed join says so in synth's one line."""

    def __enter__(self):
        import sys
        import tempfile

        sys.stderr.flush()
        self.held = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        os.dup2(self.held.fileno(), 2)
        return self

    def __exit__(self, exc_type, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
        if exc_type is None:
            self.held.seek(0)
            os.write(2, self.held.read())
        self.held.close()


def reachable(address: str, timeout: float) -> None:
    """A cluster address must answer a TCP connection within ``timeout`` seconds, or the run
    stops in one line (ray.init itself would retry for minutes). 'auto' is looked up by Ray."""
    import socket

    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"ray: address {address!r} is not 'auto', host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise UsageError(f"ray: cannot join {address}: {why} (waited up to {timeout:g} s; [run.ray] connect_timeout)") from None


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
