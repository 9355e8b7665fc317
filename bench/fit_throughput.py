"""How many `synth fit` steps a manifest's [fit] runs per second on this machine, per batch size.

The real Trainer (same UNet, recipe, device, mixed precision and channels-last as the manifest
says) on a small read of the manifest's own images, so the figure includes everything a step
does (drawing the batch and the noise, the EMA update, the loss read-back). With --minutes, it
also says how many steps fit in that much training: plan `steps` so that a cosine schedule
anneals before `max_minutes` stops the run, rather than stopping it at a high learning rate.

    python bench/fit_throughput.py MANIFEST [--batch-sizes 128,256,512] [--steps 40] [--minutes 7]
        [--profile 10]

Last line, for scripts:
`best batch <b>: <r> steps/s, <s> samples/s; <n> steps in <m> min`
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def profile_steps(trainer, steps: int) -> dict:
    """Where a step's time goes: torch.profiler over `steps` steps; prints the top operators and
    returns the share of wall time the device was busy (low: launch- or host-bound, not compute)."""
    torch = trainer.torch
    acts = [torch.profiler.ProfilerActivity.CPU]
    cuda = trainer.device.type == "cuda"
    if cuda:
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts, acc_events=True) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    # torch renamed the cuda_* fields device_*; read whichever this version has
    key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    print(events.table(sort_by=key if cuda else "self_cpu_time_total", row_limit=15), file=sys.stderr, flush=True)
    out = {"profiled_ms_per_step": round(1000 * wall / steps, 1)}
    if cuda:
        # device-side events only (kernels, copies), as torch's own "Self CUDA time total" counts:
        # an operator's row repeats its kernels' time, and a user annotation spans other kernels
        cpu = torch.autograd.DeviceType.CPU
        busy = sum(getattr(e, key, 0) or 0 for e in events if e.device_type != cpu and not getattr(e, "is_user_annotation", False)) / 1e6
        out["device_busy_share"] = round(busy / wall, 3)
    return out


def measure(manifest: Path, batch_sizes: list[int], steps: int, warmup: int, profile: int = 0) -> list[dict]:
    from synth.manifest import load_manifest
    from synth_diffusers import Trainer, load_training_data, read_fit_config

    m = load_manifest(manifest)
    cfg = read_fit_config(m)
    # Enough images for any batch; a small read keeps the probe to seconds.
    few = dataclasses.replace(m, dataset=m.dataset.model_copy(update={"num_samples": min(m.dataset.num_samples, 2 * max(batch_sizes))}))
    data = load_training_data(few, lambda d, t: None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in batch_sizes:
            trainer = Trainer(m, cfg.model_copy(update={"batch_size": b}), Path(tmp), data)
            for _ in range(warmup):
                trainer.train_step()
            if trainer.device.type == "cuda":
                trainer.torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                trainer.train_step()
            if trainer.device.type == "cuda":
                trainer.torch.cuda.synchronize()
            rate = steps / (time.perf_counter() - t0)
            rows.append({"batch": b, "steps_per_s": round(rate, 2), "samples_per_s": round(rate * b, 1), "device": str(trainer.device)})
            if profile:
                rows[-1].update(profile_steps(trainer, profile))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            del trainer
    return rows


def best(rows: list[dict], keep: float) -> dict:
    """The largest batch whose samples/s is within `keep` of the fastest: larger batches give
    each step a better gradient, so take them while they cost little throughput."""
    top = max(r["samples_per_s"] for r in rows)
    return max((r for r in rows if r["samples_per_s"] >= keep * top), key=lambda r: r["batch"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--batch-sizes", default=None, help="comma-separated; default: the manifest's fit.batch_size")
    ap.add_argument("--steps", type=int, default=40, help="timed steps per batch size")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (allocation, kernel choice)")
    ap.add_argument("--minutes", type=float, default=None, help="plan the steps that fit in this much training")
    ap.add_argument("--profile", type=int, default=0, help="then profile this many steps per batch size (top operators, device busy share)")
    ap.add_argument("--keep", type=float, default=0.9, help="take the largest batch within this share of the best samples/s")
    args = ap.parse_args(argv)
    if args.batch_sizes:
        sizes = [int(x) for x in args.batch_sizes.split(",")]
    else:
        from synth.manifest import load_manifest
        from synth_diffusers import read_fit_config

        sizes = [read_fit_config(load_manifest(args.manifest)).batch_size]
    rows = measure(args.manifest, sizes, args.steps, args.warmup, args.profile)
    print(f"{'batch':>6} {'steps/s':>8} {'samples/s':>10}  device")
    for r in rows:
        print(f"{r['batch']:>6} {r['steps_per_s']:>8} {r['samples_per_s']:>10}  {r['device']}")
    pick = best(rows, args.keep)
    minutes = args.minutes or 0.0
    planned = int(pick["steps_per_s"] * minutes * 60)
    print(f"best batch {pick['batch']}: {pick['steps_per_s']} steps/s, {pick['samples_per_s']} samples/s; {planned} steps in {minutes:g} min")


if __name__ == "__main__":
    main()
