"""How much does synth cost on top of the model? Prints figures; asserts nothing.

In one process, with the same model, batch size and sample count:
  (a) generator only: latents + denoising loop, no encoding, no I/O
  (b) the loop a user would write by hand: diffusers loop -> PIL PNG -> webdataset.ShardWriter
  (c) synth's engine (what `synth run` executes), model load included
Goal: (c) >= (b) and (c) >= 0.9 x (a).

Then peak RSS of `synth run` subprocesses at 1k and 10k samples (toy generator), which should
stay flat: the engine streams batches and bounds the work in flight.

Usage: python bench/engine_overhead.py [--samples 512] [--steps 4] [--batch 64]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_model(path: Path) -> None:
    """The 1.1 M-parameter 32x32 UNet2DModel of REFERENCES.md, random weights."""
    import torch
    from diffusers import DDIMScheduler, DDPMPipeline, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    DDPMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000)).save_pretrained(path)


def manifest_text(model: Path, n: int, steps: int, batch: int) -> str:
    return textwrap.dedent(
        f"""
        [dataset]
        name = "bench"
        num_samples = {n}
        shard_size = {max(batch, n // 4)}
        [run]
        batch_size = {batch}
        [generator]
        name = "diffusers"
        model = "{model}"
        scheduler = "ddim"
        steps = {steps}
        """
    )


def generator_only(manifest_path: Path) -> tuple[float, int]:
    from synth.manifest import load_manifest
    from synth.pipeline import Pipeline

    m = load_manifest(manifest_path)
    p = Pipeline(m)
    p.setup()
    gen, n, b = p.generator, m.dataset.num_samples, m.run.batch_size
    t0 = time.perf_counter()
    for start in range(0, n, b):
        idx = list(range(start, min(start + b, n)))
        gen.decode(gen.sample_latents(idx, 0), [{}] * len(idx), idx, 0)
    return time.perf_counter() - t0, n


def hand_written(model: Path, n: int, steps: int, batch: int, out: Path) -> tuple[float, int]:
    """What a user writes without synth: sample, decode, PNG, ShardWriter. No resume, no metadata."""
    import numpy as np
    import torch
    import webdataset as wds
    from diffusers import DDIMScheduler, DDPMPipeline
    from PIL import Image

    pipe = DDPMPipeline.from_pretrained(model)
    unet = pipe.unet.eval()
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    g = torch.Generator().manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with wds.ShardWriter(str(out / "hand-%06d.tar"), maxcount=max(batch, n // 4), verbose=0) as sink:
        for start in range(0, n, batch):
            bs = min(batch, n - start)
            x = torch.randn((bs, 3, 32, 32), generator=g)
            sched.set_timesteps(steps)
            with torch.inference_mode():
                for t in sched.timesteps:
                    x = sched.step(unet(x, t).sample, t, x).prev_sample
            imgs = ((x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
            for i, img in enumerate(imgs):
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="PNG")
                sink.write({"__key__": f"s{start + i:08d}", "png": buf.getvalue(), "json": {"index": start + i}})
    return time.perf_counter() - t0, n


def hand_written_toy(manifest_path: Path, out: Path) -> tuple[float, int]:
    """The same hand loop around the toy generator: decode, PNG, ShardWriter, one thread."""
    import webdataset as wds

    from synth.manifest import load_manifest
    from synth.pipeline import Pipeline
    from synth.records import encode_image

    m = load_manifest(manifest_path)
    gen = Pipeline(m).generator
    n, b = m.dataset.num_samples, m.run.batch_size
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with wds.ShardWriter(str(out / "hand-%06d.tar"), maxcount=m.dataset.shard_size, verbose=0) as sink:
        for start in range(0, n, b):
            idx = list(range(start, min(start + b, n)))
            images = gen.decode(gen.sample_latents(idx, 0), [{}] * len(idx), idx, 0)
            for i, img in zip(idx, images):
                sink.write({"__key__": f"s{i:08d}", "png": encode_image(img, "png", 95), "json": {"index": i}})
    return time.perf_counter() - t0, n


def synth_engine(manifest_path: Path, out: Path) -> tuple[float, int]:
    from synth.engine import run
    from synth.manifest import load_manifest

    t0 = time.perf_counter()
    summary = run(load_manifest(manifest_path), output=out, overwrite=True)
    return time.perf_counter() - t0, summary.samples_written


def peak_rss_mb(manifest_path: Path, out: Path) -> tuple[float, float]:
    """Peak RSS (MB) and wall seconds of one `synth run` subprocess."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "synth", "run", "-q", "--overwrite", str(manifest_path), "--output", str(out)])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"synth run failed ({proc.returncode})")
    return usage.ru_maxrss / 1024.0, time.perf_counter() - t0


def report(label, repeats, a_fn, b_fn, c_fn) -> None:
    best = {"a": 0.0, "b": 0.0, "c": 0.0}
    for r in range(repeats):  # interleaved, best of N: this machine is noisy
        for name, fn in (("a", a_fn), ("b", lambda: b_fn(r)), ("c", lambda: c_fn(r))):
            secs, n = fn()
            best[name] = max(best[name], n / secs)
    a, b, c = best["a"], best["b"], best["c"]
    print(f"  (a) generator only      {a:8.1f} samples/s")
    print(f"  (b) hand-written loop   {b:8.1f} samples/s   ({b / a:.2f} x a)")
    print(f"  (c) synth engine        {c:8.1f} samples/s   ({c / a:.2f} x a, {c / b:.2f} x b)")
    print(f"  [{label}] (c)/(b) = {c / b:.2f} (goal >= 1), (c)/(a) = {c / a:.2f} (goal >= 0.9)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="best of N for each of a/b/c, interleaved")
    ap.add_argument("--rss", type=int, nargs="*", default=[1000, 10000], help="sample counts for the RSS check")
    args = ap.parse_args()

    import torch

    tmp = Path(tempfile.mkdtemp(prefix="synth-bench-"))
    model = tmp / "unet32"
    build_model(model)
    mpath = tmp / "bench.toml"
    mpath.write_text(manifest_text(model, args.samples, args.steps, args.batch))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), python {platform.python_version()}")
    print(f"model: UNet2DModel 32x32 (32,64,64), {sum(p.numel() for p in __import__('diffusers').UNet2DModel.from_pretrained(model / 'unet').parameters()) / 1e6:.2f} M params; "
          f"{args.samples} samples, DDIM {args.steps} steps, batch {args.batch}")

    generator_only(mpath)  # warm-up: first-call allocations and kernels
    report(
        "diffusers UNet (model-bound)",
        args.repeats,
        lambda: generator_only(mpath),
        lambda r: hand_written(model, args.samples, args.steps, args.batch, tmp / f"hand{r}"),
        lambda r: synth_engine(mpath, tmp / f"synth{r}"),
    )
    toy = tmp / "toy256.toml"
    toy.write_text(
        f'[dataset]\nname = "toy"\nnum_samples = {args.samples}\nshard_size = {args.samples // 4}\n'
        f'[run]\nbatch_size = {args.batch}\n[generator]\nname = "toy"\nsize = 256\n'
    )
    print(f"toy generator 256x256 (PNG encoding ~ as costly as the generator): {args.samples} samples, batch {args.batch}")
    report(
        "toy 256x256 (encode-heavy)",
        args.repeats,
        lambda: generator_only(toy),
        lambda r: hand_written_toy(toy, tmp / f"handtoy{r}"),
        lambda r: synth_engine(toy, tmp / f"synthtoy{r}"),
    )

    if args.rss:
        print("peak RSS of `synth run` (toy generator 64x64, batch 64, shards of 1000):")
        for n in args.rss:
            toy = tmp / f"toy{n}.toml"
            toy.write_text(
                f'[dataset]\nname = "toy"\nnum_samples = {n}\nshard_size = 1000\n[run]\nbatch_size = 64\n[generator]\nname = "toy"\nsize = 64\n'
            )
            rss, secs = peak_rss_mb(toy, tmp / f"toy{n}")
            print(f"  {n:6d} samples: {rss:7.1f} MB peak RSS, {secs:6.1f} s ({n / secs:.0f} samples/s incl. start-up)")


if __name__ == "__main__":
    main()
