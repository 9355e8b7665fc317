"""G^-1 measured: PSNR of decode(invert(x)) against x on real shapes-world test images, for plain
DDIM inversion and fixed-point inversion (1 and 2 extra UNet calls per step), at 10 / 25 / 50
steps, with the seconds per image the inversion takes and the UNet evaluations it costs. Decoding is DDIM (eta 0)
over the same steps, as the invert stage's round trip.

    python bench/inversion.py [--n 200] [--steps 10 25 50] [--model builtin:shapes-32] [--sd-n 8]

Then Stable Diffusion rows on a tiny random-weight SD 1.5 architecture (bench/gpu_sd.py's, 64 px;
no weights can be downloaded): its own images at guidance 1 and 7.5, inverted (fixed_point x2, 20
DDIM steps) and decoded plainly or with negative-prompt inversion (the prompt as its own
negative); PSNR against the images' VAE round trip, the best any latent can decode to through
this random VAE.

Last line, for scripts (the default is the invert stage's: fixed_point, 2 iterations, 10 steps):
`default <method> <steps>: mean <x> dB, worst <y> dB, <s> s/img; ddim-50: <s50> s/img`
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

METHODS = (("ddim", 0), ("fixed_point", 1), ("fixed_point", 2))
DEFAULT = ("fixed_point", 2, 10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin:shapes-32")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--sd-n", type=int, default=8, help="images per Stable Diffusion row (0: none)")
    args = ap.parse_args()

    import torch

    from label_efficiency import load_generator
    from synth_diffusers import evaluations
    from synth_operators import psnr
    from synth_shapes import render_many

    images, _ = render_many(0, range(args.n), 32, 0.5, "test")
    print(f"inversion round trip: {args.model}, {args.n} real shapes-world test images, DDIM decode (eta 0); "
          f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| method | steps | UNet evals | PSNR mean | PSNR worst | s/img |")
    print("| --- | --- | --- | --- | --- | --- |")
    results = {}
    for steps in args.steps:
        gen = load_generator(args.model, "ddim", steps, 0)
        for method, iterations in METHODS:
            spent, out = 0.0, []
            for s in range(0, args.n, args.batch):
                t0 = time.perf_counter()
                z = gen.invert(images[s : s + args.batch], [{}] * len(images[s : s + args.batch]), {"method": method, "iterations": max(iterations, 1)})  # ddim reads no iterations
                spent += time.perf_counter() - t0  # the inversion alone; the decode checks it
                out.append(gen.decode(z, [{}] * len(z), list(range(s, s + len(z))), 0))
            seconds = spent / args.n
            p = psnr(np.concatenate(out), images)
            results[(method, iterations, steps)] = (p.mean(), p.min(), seconds)
            name = method if method == "ddim" else f"{method} x{iterations}"
            print(f"| {name} | {steps} | {evaluations(steps, method, iterations)} | {p.mean():.1f} dB | {p.min():.1f} dB | {seconds:.3f} |", flush=True)
    if args.sd_n:
        sd_rows(args.sd_n)
    d = results.get(DEFAULT)
    ddim50 = results.get(("ddim", 0, 50))
    if d and ddim50:
        print(f"default {DEFAULT[0]} {DEFAULT[2]}: mean {d[0]:.1f} dB, worst {d[1]:.1f} dB, {d[2]:.3f} s/img; ddim-50: {ddim50[2]:.3f} s/img")


def sd_rows(n: int) -> None:
    import tempfile

    import torch

    import gpu_sd
    from synth.plugins import load_registry
    from synth.protocols import RunContext
    from synth_operators import psnr

    print("\n| SD-tiny 64 px | guidance | decoded | PSNR vs VAE round trip |")
    print("| --- | --- | --- | --- |")
    registry = load_registry()
    cls = registry.generator("diffusers", "bench")
    with tempfile.TemporaryDirectory() as tmp:
        pipe = gpu_sd.sd15(True, Path(tmp))
        # a random UNet's predictions are far from a trained one's at the noisiest of 1000 levels,
        # where a fixed point barely exists; 100 levels, as the tests' tiny SD uses
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, num_train_timesteps=100)
        for guidance in (1.0, 7.5):
            cfg = cls.Config(model="random-weights", scheduler="ddim", steps=20, guidance_scale=guidance, height=64, width=64,
                             templates=["a photo of a {cls}"], micro_batch=n, device="cpu", dtype="float32")
            gen = cls(cfg, RunContext(seed=0, manifest_dir=Path("."), classes=["cat", "dog"], registry=registry, quiet=True))
            gen.setup(pipeline=pipe)
            idx = list(range(n))
            conds = [gen.condition(i) for i in idx]
            images = gen.decode(gen.sample_latents(idx, 0), conds, idx, 0)
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
            with torch.inference_mode():
                lat = gen.family.encode_images(x) / pipe.vae.config.scaling_factor
                best = pipe.vae.decode(lat).sample
            best = ((best.clamp(-1, 1) + 1) * 127.5 + 0.5).clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
            for how in ("plain", "negative_prompt"):
                cc = [gen.inversion_condition(c, i, how) for c, i in zip(conds, idx)]
                back = gen.decode(gen.invert(images, cc, {"method": "fixed_point", "iterations": 2}), cc, idx, 0)
                print(f"| {n} images | {guidance:g} | {how} | {psnr(back, best).mean():.1f} dB |", flush=True)
    print()


if __name__ == "__main__":
    main()
